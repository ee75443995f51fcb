"""The local engine's example DAGs under ``airflow dags test``: real clips, the real engine, moto's S3 server over
HTTP and the sandbox's SaveSora handing out a real marked clip as every original."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_sora.sandbox import SandboxServer
from tests.conftest import VIDEO_URLS, s3_client, s3_keys
from tests.e2e.conftest import AirflowCli
from tests.local_clips import copy_of

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
POSTS = ["s_68e83bd7eee88191be79d2ba7158516f", "s_6902318491e88191893d935b08d8c428",
         "s_68dc40f1f5a481919a01594fef247dd4"]
PROGRESS = re.compile(r"Sora local progress \[(?P<stage>\w+)\]: (?P<done>\d+)/(?P<total>\d+) files done")


def expect_success(run: object) -> str:
    text = run.stdout + run.stderr  # type: ignore[attr-defined]
    assert run.returncode == 0, text[-4000:]  # type: ignore[attr-defined]
    return str(text)


def test_mapped_dag_cleans_an_s3_folder_in_chunks(airflow_home: AirflowCli, s3_server: str, s3_bucket: str,
                                                  tmp_path: Path) -> None:
    s3 = s3_client(s3_server)
    sources = {f"in/{POSTS[0]}.mp4": copy_of("marked", tmp_path / "a.mp4").read_bytes(),
               f"in/{POSTS[1]}.mp4": copy_of("marked", tmp_path / "b.mp4", photo="coffee").read_bytes(),
               "in/day/clean.mp4": copy_of("clean", tmp_path / "c.mp4").read_bytes()}
    for key, body in sources.items():
        s3.put_object(Bucket=s3_bucket, Key=key, Body=body)
    run = airflow_home.dags_test(
        "sora_local_mapped",
        {"source": f"s3://aws_default@{s3_bucket}/in/", "output_path": f"s3://aws_default@{s3_bucket}/out/",
         "chunk_size": 2},
        extra_env={"AIRFLOW_CONN_AWS_DEFAULT": os.environ["AIRFLOW_CONN_AWS_DEFAULT"]})
    text = expect_success(run)
    keys = {k for k in s3_keys(s3_server, s3_bucket) if k.startswith("out/") and "/_state/" not in k}
    assert keys == {f"out/{name}{ext}" for name in (*POSTS[:2], "clean") for ext in (".mp4", ".json")}
    for name in (*POSTS[:2], "clean"):
        sidecar = json.loads(s3.get_object(Bucket=s3_bucket, Key=f"out/{name}.json")["Body"].read())
        assert sidecar["service"] == "local" and sidecar["ai_generated"] is True
        assert sidecar["mark"]["found"] is (name != "clean")
        assert sidecar["airflow"]["task_id"] == "clean_chunk" and sidecar["airflow"]["map_index"] in (0, 1)
    assert {json.loads(s3.get_object(Bucket=s3_bucket, Key=f"out/{n}.json")["Body"].read())["airflow"]["map_index"]
            for n in (*POSTS[:2], "clean")} == {0, 1}  # two chunks, two mapped tasks
    lines = list(PROGRESS.finditer(text))
    assert lines and {m["total"] for m in lines} <= {"1", "2"}
    assert "Sora local watermark removal finished successfully" in text


@pytest.fixture
def marked_originals(e2e_sandbox: SandboxServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The sandbox serves a real marked clip as every result, so SaveSora's originals are videos to clean."""
    clip = copy_of("marked", tmp_path_factory.mktemp("media") / "marked.mp4")
    e2e_sandbox.state.config.media_file = str(clip)
    try:
        yield clip
    finally:
        e2e_sandbox.state.config.media_file = ""


def test_originals_from_savesora_are_cleaned_locally(airflow_home: AirflowCli, dag_env: dict[str, str],
                                                     e2e_sandbox: SandboxServer, marked_originals: Path,
                                                     tmp_path: Path) -> None:
    urls = VIDEO_URLS[30:32]
    originals, out = tmp_path / "originals", tmp_path / "local"
    run = airflow_home.dags_test("sora_local_from_originals",
                                 {"video_urls": urls, "originals_path": f"file://{originals}/",
                                  "output_path": f"file://{out}/"}, extra_env=dag_env)
    expect_success(run)
    posts = {u.rsplit("/", 1)[1] for u in urls}
    assert {p.name for p in originals.glob("s_*.mp4")} == {f"{p}{s}.mp4" for p in posts for s in ("", ".source")}
    assert {p.name for p in out.iterdir() if p.is_file()} == {f"{p}{ext}" for p in posts for ext in (".mp4", ".json")}
    for post in posts:
        sidecar = json.loads((out / f"{post}.json").read_text())
        assert sidecar["post_id"] == post and sidecar["mark"]["found"] is True
        assert sidecar["source_url"] == f"file://{originals}/{post}.source.mp4"
        assert sidecar["watermarked_source"]["size"] == marked_originals.stat().st_size
    assert e2e_sandbox.summary()["credits_by_video"] == {u: 1.0 for u in urls}


def test_a_folder_of_downloads_without_fetching(airflow_home: AirflowCli, dag_env: dict[str, str],
                                                e2e_sandbox: SandboxServer, tmp_path: Path) -> None:
    downloads, out = tmp_path / "downloads", tmp_path / "local"
    copy_of("clean", downloads / "my clip.mp4")
    run = airflow_home.dags_test("sora_local_from_originals",
                                 {"video_urls": [], "originals_path": f"file://{downloads}/", "pattern": "*.mp4",
                                  "output_path": f"file://{out}/"}, extra_env=dag_env)
    expect_success(run)
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["my clip.json", "my clip.mp4"]
    assert (out / "my clip.mp4").read_bytes() == (downloads / "my clip.mp4").read_bytes()  # no mark: unchanged
    assert not e2e_sandbox.summary()["charges_by_video"]  # the fetch was skipped: nothing paid
