"""State records this try must not act on stop that video with a clear message and cost nothing; URL variants
of one post are one video."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_sora.operators import SoraWatermarkRemoverOperator
from airflow_sora.sandbox import SandboxServer
from tests.conftest import VIDEO_URLS
from tests.integration.harness import TaskInstanceStandIn, run_try

URLS = VIDEO_URLS[:2]


def operator(output: str, urls: object = URLS, **kwargs: object) -> SoraWatermarkRemoverOperator:
    kwargs.setdefault("poll_interval", 0.1)
    kwargs.setdefault("fail_on_error", False)
    return SoraWatermarkRemoverOperator(task_id="remove", video_url=urls, output_path=output, **kwargs)


def state_file(root: Path, url: str) -> Path:
    ti = TaskInstanceStandIn()
    run = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in ti.run_id)
    return root / "_state" / ti.dag_id / run / ti.task_id / f"{url.rsplit('/', 1)[1]}.json"


def record(url: str, **changes: object) -> dict[str, object]:
    base: dict[str, object] = {"schema_version": 2, "video_url": url, "post_id": url.rsplit("/", 1)[1],
                               "service": "kie", "conn_id": "kie_default", "phase": "submitted",
                               "scope": {}, "creates": 1, "task_id": "task-from-elsewhere"}
    return base | changes


@pytest.mark.parametrize(("written", "message"), [
    (b"{not json", "cannot be read"),
    (json.dumps(record(URLS[0], phase="no-such-phase")).encode(), "cannot be read"),
    (json.dumps(record(URLS[0], schema_version=99)).encode(), "newer than this provider understands"),
    (json.dumps(record(URLS[0], service="savesora")).encode(), "was written through savesora"),
    (json.dumps(record(URLS[0], conn_id="kie_other_account")).encode(), "connection 'kie_other_account'"),
    (json.dumps(record(URLS[1], post_id=URLS[1].rsplit("/", 1)[1])).encode(), "belongs to post"),
], ids=["corrupt", "unknown-phase", "newer-schema", "other-service", "other-connection", "other-video"])
def test_unusable_record_fails_that_video_only_and_charges_nothing(
        written: bytes, message: str, sandbox_connections: SandboxServer, tmp_path: Path) -> None:
    path = state_file(tmp_path / "clean", URLS[0])
    path.parent.mkdir(parents=True)
    path.write_bytes(written)
    result = run_try(operator(f"file://{tmp_path}/clean/", deferrable=False))
    assert result.error is None, result.error
    first, second = result.value["videos"]
    assert first["status"] == "failed" and message in first["error"] and str(path) in first["error"]
    assert "Delete" in first["error"] or "Use" in first["error"] or "upgrade" in first["error"]
    assert second["status"] == "landed"
    assert sandbox_connections.summary()["charges_by_video"] == {URLS[1]: 1}  # nothing sent for the first
    assert path.read_bytes() == written  # never overwritten: the user decides


def test_url_variants_of_one_post_are_one_video(sandbox_connections: SandboxServer, tmp_path: Path) -> None:
    post = URLS[0]
    variants = [post, post + "?psh=abc", post + "#x", post + "?utm_source=share&psh=zz"]
    result = run_try(operator(f"file://{tmp_path}/clean/", variants, deferrable=True))
    assert result.error is None, result.error
    assert result.value["counts"] == {"landed": 1, "skipped": 0, "failed": 0, "rejected": 0,
                                      "not_submitted": 0, "total": 1}
    (video,) = result.value["videos"]
    assert video["video_url"] == post and video["variants"] == variants[1:]
    assert sandbox_connections.summary()["charges_by_video"] == {post: 1}
    sidecar = json.loads((tmp_path / "clean" / f"{post.rsplit('/', 1)[1]}.json").read_text())
    assert sidecar["source_url"] == post and sidecar["source_url_variants"] == variants[1:]


def test_a_resume_without_the_saved_ledger_reads_the_records_and_pays_nothing_more(
        sandbox_connections: SandboxServer, tmp_path: Path) -> None:
    """A task deferred by an older release resumes from the durable records alone."""
    from airflow_sora._compat import TaskDeferred
    from airflow_sora.operators.remove import SNAPSHOT_KEY
    from tests.integration.harness import run_trigger

    op = operator(f"file://{tmp_path}/clean/", deferrable=True)
    ti = TaskInstanceStandIn()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"ti": ti})
    ti.xcom.pop(SNAPSHOT_KEY)
    event = run_trigger(deferred.value.trigger)  # type: ignore[arg-type]
    manifest = op.execute_complete({"ti": ti}, event)
    assert manifest["counts"]["landed"] == len(URLS)
    assert sandbox_connections.summary()["charges_by_video"] == {u: 1 for u in URLS}
