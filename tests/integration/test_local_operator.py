"""SoraLocalWatermarkRemoverOperator on real clips with the real engine, landing locally and into moto's S3 server.

The clips are made by ``tests.local_clips``: marked ones (a mark of our own drawing jumping between three
places over moving photographs), a clean one, a text file named ``.mp4`` and a truncated mp4.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_sora.exceptions import SoraFailedError
from airflow_sora.operators import SoraLocalWatermarkRemoverOperator
from tests.conftest import s3_client, s3_keys
from tests.integration.harness import TaskInstanceStandIn
from tests.local_clips import copy_of, not_a_video, truncated_clip, with_c2pa

POST = "s_68e83bd7eee88191be79d2ba7158516f"
OTHER_POST = "s_6902318491e88191893d935b08d8c428"


def run(source: object, output: str, tmp_path: Path, **kwargs: Any) -> dict[str, Any]:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    op = SoraLocalWatermarkRemoverOperator(task_id="clean", source=source, output_path=output, work_dir=str(work),
                                           **kwargs)
    result: dict[str, Any] = op.execute({"ti": TaskInstanceStandIn(task_id="clean")})
    return result


def by_name(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["source"].rsplit("/", 1)[-1]: v for v in manifest["videos"]}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """What a folder of downloads looks like: two marked clips (one named by its post id, one in a subfolder),
    a clean clip, a text file and a truncated download posing as videos, a hidden file and a note."""
    folder = tmp_path / "downloads"
    copy_of("marked", folder / f"{POST}.source.mp4")
    copy_of("marked", folder / "trips" / "holiday.MP4", photo="coffee")
    copy_of("clean", folder / "clean.mp4")
    not_a_video(folder / "notes.mp4")
    truncated_clip(folder / "cut.mp4")
    copy_of("marked", folder / ".partial.mp4")
    (folder / "readme.txt").write_text("not a video and not named like one")
    return folder


def test_a_folder_lands_every_video_with_its_sidecar_and_names_the_bad_files(mixed_folder: Path,
                                                                             tmp_path: Path) -> None:
    out = tmp_path / "clean"
    manifest = run(f"{mixed_folder}/", f"file://{out}/", tmp_path, fail_on_error=False)

    assert manifest["service"] == "local"
    assert manifest["counts"] == {"landed": 2, "no_mark": 1, "skipped": 0, "failed": 2, "total": 5}
    files = by_name(manifest)
    assert set(files) == {f"{POST}.source.mp4", "holiday.MP4", "clean.mp4", "notes.mp4", "cut.mp4"}
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == sorted(
        [f"{POST}.mp4", f"{POST}.json", "holiday.mp4", "holiday.json", "clean.mp4", "clean.json"])
    for bad in ("notes.mp4", "cut.mp4"):
        line = files[bad]
        assert line["status"] == "failed" and not line["retryable"]
        assert f"{mixed_folder}/{bad}" in line["error"] and "not a video" in line["error"]
        assert "sora-local-" not in line["error"]  # the source as given, not the temporary copy

    for name, source in ((POST, mixed_folder / f"{POST}.source.mp4"),
                         ("holiday", mixed_folder / "trips" / "holiday.MP4")):
        video, sidecar = (out / f"{name}.mp4").read_bytes(), json.loads((out / f"{name}.json").read_text())
        assert video[4:8] == b"ftyp" and video != source.read_bytes()  # re-encoded without the mark
        assert sidecar["sha256"] == sha256(video) and sidecar["size"] == len(video)
        assert sidecar["post_id"] == name and sidecar["service"] == "local"
        assert sidecar["source_url"] == f"file://{source}"
        assert sidecar["watermarked_source"] == {"file": f"file://{source}", "sha256": sha256(source.read_bytes()),
                                                 "size": source.stat().st_size}
        assert sidecar["ai_generated"] is True and sidecar["generator"] == "OpenAI Sora"
        assert sidecar["engine"]["name"] and sidecar["engine"]["version"]
        assert sidecar["engine"]["settings"] == {"preset": "veryfast", "crf": 18, "threads": 0}
        mark = sidecar["mark"]
        assert mark["found"] is True and mark["marked_frames"] > 0 and 0 < mark["confidence"] <= 1
        assert mark["segments"] and {"start", "end", "x", "y", "width", "height"} <= set(mark["segments"][0])
        assert mark["positions"]["frames"] == mark["frames"] and mark["positions"]["places"]
        assert sidecar["airflow"]["task_id"] == "clean" and sidecar["airflow"]["try_number"] == 1
        assert files[f"{POST}.source.mp4" if name == POST else "holiday.MP4"]["sha256"] == sha256(video)
    assert files[f"{POST}.source.mp4"]["post_id"] == POST and files["holiday.MP4"]["post_id"] is None

    clean_sidecar = json.loads((out / "clean.json").read_text())
    assert (out / "clean.mp4").read_bytes() == (mixed_folder / "clean.mp4").read_bytes()  # landed unchanged
    assert files["clean.mp4"]["status"] == "no_mark" and clean_sidecar["mark"]["found"] is False
    assert clean_sidecar["ai_generated"] is True
    assert list((tmp_path / "work").iterdir()) == []  # every temporary file removed
    assert not list(out.rglob("*.part"))

    again = run(f"{mixed_folder}/", f"file://{out}/", tmp_path, fail_on_error=False)
    assert again["counts"] == {"landed": 0, "no_mark": 0, "skipped": 3, "failed": 2, "total": 5}
    assert all(v["frames"] is None for v in again["videos"] if v["status"] == "skipped")  # no engine work


def test_one_bad_file_fails_the_task_after_the_others_landed(tmp_path: Path) -> None:
    good = copy_of("marked", tmp_path / "in" / f"{POST}.mp4")
    bad = not_a_video(tmp_path / "in" / "broken.mp4")
    ti = TaskInstanceStandIn(task_id="clean")
    op = SoraLocalWatermarkRemoverOperator(task_id="clean", source=[str(bad), str(good)],
                                           output_path=f"file://{tmp_path}/out/")
    with pytest.raises(SoraFailedError, match="1 file"):
        op.execute({"ti": ti})
    manifest = ti.xcom["manifest"]
    assert manifest["counts"]["landed"] == 1 and manifest["counts"]["failed"] == 1
    assert (tmp_path / "out" / f"{POST}.mp4").exists() and (tmp_path / "out" / f"{POST}.json").exists()
    assert not (tmp_path / "out" / "broken.mp4").exists()


def test_if_no_mark_skip_lands_nothing(tmp_path: Path) -> None:
    clean = copy_of("clean", tmp_path / "in" / "clean.mp4")
    manifest = run(str(clean), f"file://{tmp_path}/out/", tmp_path, if_no_mark="skip")
    (line,) = manifest["videos"]
    assert line["status"] == "skipped" and line["mark_found"] is False and "no mark" in line["error"]
    assert not (tmp_path / "out").exists() or not [p for p in (tmp_path / "out").iterdir() if p.is_file()]


def test_if_exists_fail_and_overwrite(tmp_path: Path) -> None:
    clean = copy_of("clean", tmp_path / "in" / "clean.mp4")
    out = f"file://{tmp_path}/out/"
    first = run(str(clean), out, tmp_path)
    assert first["counts"]["no_mark"] == 1
    landed_at = json.loads((tmp_path / "out" / "clean.json").read_text())["landed_at"]

    refused = run(str(clean), out, tmp_path, if_exists="fail", fail_on_error=False)
    (line,) = refused["videos"]
    assert line["status"] == "failed" and "already landed" in line["error"] and line["frames"] is None

    replaced = run(str(clean), out, tmp_path, if_exists="overwrite")
    assert replaced["counts"]["no_mark"] == 1
    assert json.loads((tmp_path / "out" / "clean.json").read_text())["landed_at"] > landed_at


def test_bad_sources_are_named_and_the_rest_still_runs(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    copy_of("clean", tmp_path / "a" / f"{OTHER_POST}.mp4")
    copy_of("clean", tmp_path / "b" / f"{OTHER_POST}.source.mp4")  # lands under the same name
    sources = [str(tmp_path / "missing.mp4"), f"{tmp_path}/empty/", str(tmp_path / "a" / f"{OTHER_POST}.mp4"),
               str(tmp_path / "b" / f"{OTHER_POST}.source.mp4")]
    manifest = run(sources, f"file://{tmp_path}/out/", tmp_path, fail_on_error=False)
    errors = [v["error"] for v in manifest["videos"] if v["status"] == "failed"]
    assert manifest["counts"]["no_mark"] == 1 and manifest["counts"]["failed"] == 3
    assert any("missing.mp4: no such file or folder" in e for e in errors)
    assert any(f"{tmp_path}/empty" in e and "no file matching '*.mp4'" in e for e in errors)
    assert any(f"would land as {OTHER_POST}.mp4" in e for e in errors)


def test_a_source_that_names_nothing_fails_the_task(tmp_path: Path) -> None:
    with pytest.raises(SoraFailedError, match="failed"):
        run(str(tmp_path / "nowhere"), f"file://{tmp_path}/out/", tmp_path)
    with pytest.raises(SoraFailedError, match="source is empty"):
        run([], f"file://{tmp_path}/out/", tmp_path)


def test_invalid_settings_fail_when_the_dag_is_parsed() -> None:
    with pytest.raises(ValueError, match="preset"):
        SoraLocalWatermarkRemoverOperator(task_id="x", source="a.mp4", output_path="/tmp/o/", preset="fastest")
    with pytest.raises(ValueError, match="if_no_mark"):
        SoraLocalWatermarkRemoverOperator(task_id="x", source="a.mp4", output_path="/tmp/o/",
                                          if_no_mark="ignore")  # type: ignore[arg-type]


def test_content_credentials_land_beside_the_video(tmp_path: Path) -> None:
    clip = with_c2pa(copy_of("marked", tmp_path / "in" / f"{POST}.mp4"), b"c2pa-manifest-store-bytes")
    manifest = run(str(clip), f"file://{tmp_path}/out/", tmp_path)
    (line,) = manifest["videos"]
    assert line["status"] == "landed" and line["c2pa_uri"].endswith(f"{POST}.c2pa")
    assert (tmp_path / "out" / f"{POST}.c2pa").read_bytes() == b"c2pa-manifest-store-bytes"
    sidecar = json.loads((tmp_path / "out" / f"{POST}.json").read_text())
    assert sidecar["c2pa_manifest"] == f"{POST}.c2pa" and sidecar["mark"]["c2pa_kept"] is True


def test_from_s3_to_s3_through_moto(s3_server: str, s3_bucket: str, tmp_path: Path) -> None:
    s3 = s3_client(s3_server)
    uploads = {f"in/{POST}.mp4": copy_of("marked", tmp_path / "m.mp4").read_bytes(),
               "in/more/clean.mp4": copy_of("clean", tmp_path / "c.mp4").read_bytes(),
               "in/broken.mp4": not_a_video(tmp_path / "n.mp4").read_bytes()}
    for key, body in uploads.items():
        s3.put_object(Bucket=s3_bucket, Key=key, Body=body)
    out = f"s3://aws_default@{s3_bucket}/out/"
    manifest = run(f"s3://aws_default@{s3_bucket}/in/", out, tmp_path, fail_on_error=False)
    assert manifest["counts"] == {"landed": 1, "no_mark": 1, "skipped": 0, "failed": 1, "total": 3}
    keys = {k for k in s3_keys(s3_server, s3_bucket) if k.startswith("out/") and "/_state/" not in k}
    assert keys == {f"out/{POST}.mp4", f"out/{POST}.json", "out/clean.mp4", "out/clean.json"}
    video = bytes(s3.get_object(Bucket=s3_bucket, Key=f"out/{POST}.mp4")["Body"].read())
    sidecar = json.loads(s3.get_object(Bucket=s3_bucket, Key=f"out/{POST}.json")["Body"].read())
    assert sidecar["sha256"] == sha256(video) and sidecar["source_url"] == f"s3://{s3_bucket}/in/{POST}.mp4"
    assert sidecar["watermarked_source"]["sha256"] == sha256(uploads[f"in/{POST}.mp4"])
    broken = by_name(manifest)["broken.mp4"]
    assert f"s3://{s3_bucket}/in/broken.mp4" in broken["error"] and not broken["retryable"]
    assert list((tmp_path / "work").iterdir()) == []  # downloaded copies removed
    assert ObjectStoragePath(out).joinpath("clean.mp4").read_bytes() == uploads["in/more/clean.mp4"]


def test_lineage_names_the_sources_and_the_output_as_their_providers_do() -> None:
    pytest.importorskip("airflow.providers.openlineage", reason="the openlineage extra is not installed")
    from tests.integration.test_lineage import amazon_naming

    op = SoraLocalWatermarkRemoverOperator(task_id="clean", source=["s3://aws_default@b/in/a.mp4", "s3://b/more/"],
                                           output_path="s3://aws_default@b/clean/")
    lineage = op.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [amazon_naming("b", "in/a.mp4"),
                                                               amazon_naming("b", "more")]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [amazon_naming("b", "clean")]
    assert [o.uri for o in op.outlets] == ["s3://b/clean"]


def test_one_writer_at_a_time_another_run_landing_the_same_name_wins(tmp_path: Path) -> None:
    """Another run holds the name's landing lease and lands it while this one cleans: this one waits for the
    lease, finds that run's pair whole, and reports the file skipped instead of overwriting it."""
    import threading
    import time

    from airflow_sora.lease import LandingLease
    from airflow_sora.local_batch.land import FileLander

    source = copy_of("clean", tmp_path / "in" / f"{POST}.mp4")
    theirs = run(str(copy_of("clean", tmp_path / "theirs" / f"{POST}.mp4", seconds=2.0)),
                 f"file://{tmp_path}/their-out/", tmp_path)["videos"][0]
    output = ObjectStoragePath(f"file://{tmp_path}/out/")
    lease = LandingLease(FileLander(output, holder="other").lease_path(POST), "other-run")
    lease.acquire()
    released = threading.Event()

    def other_run_lands() -> None:
        time.sleep(3.0)  # long after this run listed the folder and started cleaning
        for ext in (".mp4", ".json"):
            (tmp_path / "out" / f"{POST}{ext}").write_bytes((tmp_path / "their-out" / f"{POST}{ext}").read_bytes())
        lease.release()
        released.set()

    other = threading.Thread(target=other_run_lands)
    other.start()
    manifest = run(str(source), str(output), tmp_path)
    other.join()
    (line,) = manifest["videos"]
    assert released.is_set() and line["status"] == "skipped" and "another run" in line["error"]
    assert line["sha256"] == theirs["sha256"]  # their pair stays whole
    assert sha256((tmp_path / "out" / f"{POST}.mp4").read_bytes()) == theirs["sha256"]
