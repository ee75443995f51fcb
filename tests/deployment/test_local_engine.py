"""The local engine's mapped example DAG on the real deployment: Celery workers share the chunks of an S3 folder.

Clips made by ``tests.local_clips`` go into the deployment's moto S3 server; the run is triggered through the
REST API and read back from the bucket and the task instances: every file landed beside a sidecar whose sha256
is the landed object's, the marked ones cleaned and the clean one copied unchanged, one mapped task per chunk,
all successful; a second run of the same folder lands nothing again.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.deployment.conftest import BUCKET, Cluster
from tests.local_clips import copy_of

pytestmark = [pytest.mark.deployment, pytest.mark.slow, pytest.mark.timeout(900)]
DAG_ID = "sora_local_mapped"
MARKED = [f"s_{i:04x}{uuid.uuid4().hex[:28]}" for i in range(1, 6)] + ["beach day", "city-night"]
CLEAN = ["calm"]


def upload_clips(cluster: Cluster, prefix: str, tmp_path: Path) -> dict[str, bytes]:
    """Seven marked clips (five named by a post id, two by a plain stem, some in a subfolder), one clean."""
    s3 = cluster.s3.client()
    photos = ["astronaut", "coffee", "chelsea"]
    sources: dict[str, bytes] = {}
    for index, name in enumerate(MARKED):
        folder = "day2/" if index % 3 == 2 else ""
        sources[f"{prefix}/in/{folder}{name}.mp4"] = copy_of(
            "marked", tmp_path / f"{index}.mp4", photo=photos[index % 3]).read_bytes()
    for name in CLEAN:
        sources[f"{prefix}/in/{name}.mp4"] = copy_of("clean", tmp_path / f"{name}.mp4").read_bytes()
    for key, body in sources.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return sources


def run_dag(cluster: Cluster, conf: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    deployment = cluster.deployment
    deployment.wait_for_dag(DAG_ID)
    run_id = deployment.trigger(DAG_ID, conf)
    state = deployment.wait_for_run(DAG_ID, run_id, timeout=600)
    chunks = [t for t in deployment.task_instances(DAG_ID, run_id) if t["task_id"] == "clean_chunk"]
    assert state == "success", json.dumps(chunks, indent=1, default=str)[-3000:]
    cluster.runs.append((DAG_ID, run_id))
    return run_id, chunks


def test_mapped_local_engine_on_celery_workers(cluster: Cluster, tmp_path: Path) -> None:
    prefix = f"local-{uuid.uuid4().hex[:8]}"
    sources = upload_clips(cluster, prefix, tmp_path)
    conf = {"source": f"s3://aws_default@{BUCKET}/{prefix}/in/",
            "output_path": f"s3://aws_default@{BUCKET}/{prefix}/out/", "chunk_size": 2}
    run_id, chunks = run_dag(cluster, conf)

    assert sorted(t["map_index"] for t in chunks) == [0, 1, 2, 3]  # 8 files in chunks of 2
    assert all(t["state"] == "success" for t in chunks)
    objects = cluster.s3.objects(BUCKET)
    out = {k.removeprefix(f"{prefix}/out/"): size for k, size in objects.items()
           if k.startswith(f"{prefix}/out/") and "/_state/" not in k}
    names = [*MARKED, *CLEAN]
    assert set(out) == {f"{n}{ext}" for n in names for ext in (".mp4", ".json")}, sorted(out)
    by_name = {key.rsplit("/", 1)[-1].removesuffix(".mp4"): body for key, body in sources.items()}
    for name in names:
        video = cluster.s3.read(BUCKET, f"{prefix}/out/{name}.mp4")
        sidecar = json.loads(cluster.s3.read(BUCKET, f"{prefix}/out/{name}.json"))
        assert sidecar["sha256"] == hashlib.sha256(video).hexdigest() and sidecar["size"] == len(video)
        assert sidecar["service"] == "local" and sidecar["ai_generated"] is True
        assert sidecar["watermarked_source"]["sha256"] == hashlib.sha256(by_name[name]).hexdigest()
        assert sidecar["airflow"]["run_id"] == run_id and sidecar["airflow"]["task_id"] == "clean_chunk"
        assert sidecar["post_id"] == name
        if name in CLEAN:
            assert sidecar["mark"]["found"] is False and video == by_name[name]
        else:
            assert sidecar["mark"]["found"] is True and video != by_name[name]
            assert sidecar["mark"]["segments"] and sidecar["mark"]["marked_frames"] > 0
    manifests = [cluster.deployment.xcom(DAG_ID, run_id, "clean_chunk", map_index=t["map_index"]) for t in chunks]
    assert sum(m["counts"]["landed"] + m["counts"]["no_mark"] for m in manifests) == len(names)
    assert all(m["counts"]["failed"] == 0 and m["service"] == "local" for m in manifests)
    cluster.results.append({"case": "local engine, mapped", "files": len(names), "chunks": len(chunks),
                            "worker_seconds": [m["worker_seconds"] for m in manifests],
                            "hosts": sorted({str(t.get("hostname")) for t in chunks})})

    _again, repeated = run_dag(cluster, conf)  # the same folder again: everything is landed already
    again = [cluster.deployment.xcom(DAG_ID, _again, "clean_chunk", map_index=t["map_index"]) for t in repeated]
    assert sum(m["counts"]["skipped"] for m in again) == len(names)
    assert cluster.s3.objects(BUCKET).keys() >= objects.keys()
    assert all(cluster.s3.objects(BUCKET)[k] == objects[k] for k in objects if "/_state/" not in k)
