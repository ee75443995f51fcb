"""A worker killed at any point, then retried, pays once and lands once, with nothing partial at a final key.

The kill is a ``BaseException`` raised inside the real code path (as SIGKILL would stop it there); everything
else, the sandbox's charge log and the S3 server's listing, is real. Real SIGKILLs of Celery workers are in
the deployment suite.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from airflow_sora import landing, storage
from airflow_sora.batch.running import RunningTasks
from airflow_sora.operators import SoraWatermarkRemoverOperator
from airflow_sora.sandbox import SandboxServer
from airflow_sora.state import Phase, VideoRecord, VideoStateStore
from tests.conftest import VIDEO_URLS, s3_keys
from tests.integration.harness import TaskInstanceStandIn, run_try

URLS = VIDEO_URLS[:3]


class WorkerKilled(BaseException):
    """Stands for SIGKILL: not an Exception, so no handler in the operator can swallow it."""


def kill_on_save(monkeypatch: pytest.MonkeyPatch, phase: Phase, *, before: bool, nth: int = 1) -> None:
    original = VideoStateStore.save
    seen = [0]
    lock = threading.Lock()

    def save(self: VideoStateStore, record: VideoRecord) -> VideoRecord:
        if record.phase is phase:
            with lock:  # landing runs in threads: count each save exactly once
                seen[0] += 1
                count = seen[0]
            if count == nth and before:
                raise WorkerKilled(f"killed before recording {phase.value}")
            saved = original(self, record)
            if count == nth:
                raise WorkerKilled(f"killed after recording {phase.value}")
            return saved
        return original(self, record)

    monkeypatch.setattr(VideoStateStore, "save", save)


def kill_mid_download(monkeypatch: pytest.MonkeyPatch) -> None:
    original = storage.Publication.write
    written = [0]

    def write(self: storage.Publication, data: bytes) -> None:
        original(self, data)
        if not str(self.target).endswith(".mp4"):
            return
        written[0] += 1
        if written[0] == 2:  # the second chunk of the first video
            raise WorkerKilled("killed mid-download")

    monkeypatch.setattr(storage.Publication, "write", write)


def kill_on_sidecar(monkeypatch: pytest.MonkeyPatch, *, before: bool, nth: int = 1) -> None:
    """The sidecar is the durable record of a landing: kill around its publication."""
    original = landing.write_atomic
    seen = [0]
    lock = threading.Lock()

    def write_atomic(target: Any, data: bytes) -> None:
        if not str(target).endswith(".json") or "/_state/" in str(target):
            return original(target, data)
        with lock:
            seen[0] += 1
            count = seen[0]
        if count == nth and before:
            raise WorkerKilled("killed after the video landed, before its sidecar")
        original(target, data)
        if count == nth:
            raise WorkerKilled("killed right after the sidecar landed")

    monkeypatch.setattr(landing, "write_atomic", write_atomic)


KILLS: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
    "after_id_recorded": lambda mp: kill_on_save(mp, Phase.SUBMITTED, before=False, nth=2),
    "mid_download": kill_mid_download,
    "after_video_before_sidecar": lambda mp: kill_on_sidecar(mp, before=True, nth=2),
    "after_sidecar_landed": lambda mp: kill_on_sidecar(mp, before=False, nth=2),
}


def operator(output: str, **kwargs: Any) -> SoraWatermarkRemoverOperator:
    return SoraWatermarkRemoverOperator(task_id="remove", video_url=URLS, output_path=output,
                                        poll_interval=0.1, deferrable=True, **kwargs)


def final_keys(s3_server: str, bucket: str) -> dict[str, int]:
    return {k: v for k, v in s3_keys(s3_server, bucket).items() if "/_state/" not in k}


@pytest.mark.parametrize("kill", list(KILLS))
def test_killed_then_retried_pays_once_and_lands_once(kill: str, sandbox_connections: SandboxServer,
                                                      s3_server: str, s3_bucket: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox_connections.state.config.result_size = 3 * 1024 * 1024  # several chunks per download
    output = f"s3://aws_default@{s3_bucket}/out/"
    with monkeypatch.context() as patch:
        KILLS[kill](patch)
        with pytest.raises(WorkerKilled):
            run_try(operator(output), TaskInstanceStandIn(try_number=1))
    after_kill = final_keys(s3_server, s3_bucket)
    assert all(size > 0 for size in after_kill.values())
    # Other videos may land while one is interrupted, but never partially: full size or absent.
    assert all(size == 3 * 1024 * 1024 for key, size in after_kill.items() if key.endswith(".mp4"))
    if kill == "mid_download":
        assert len([k for k in after_kill if k.endswith(".mp4")]) < 3  # the interrupted one is invisible
    retry = run_try(operator(output), TaskInstanceStandIn(try_number=2))
    assert retry.error is None, retry.error
    assert retry.value["counts"]["landed"] == 3
    assert sandbox_connections.summary()["charges_by_video"] == {u: 1 for u in URLS}
    keys = final_keys(s3_server, s3_bucket)
    ids = [u.rsplit("/", 1)[1] for u in URLS]
    assert set(keys) == {f"out/{i}{ext}" for i in ids for ext in (".mp4", ".json")}
    assert all(keys[f"out/{i}.mp4"] == 3 * 1024 * 1024 for i in ids)


def test_killed_between_create_and_recording_the_id(sandbox_connections: SandboxServer, tmp_path: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    output = f"file://{tmp_path}/out/"
    with monkeypatch.context() as patch:
        kill_on_save(patch, Phase.SUBMITTED, before=True, nth=1)
        with pytest.raises(WorkerKilled):
            run_try(operator(output))
    assert sandbox_connections.summary()["charges_by_video"][URLS[0]] == 1  # created, id lost

    retry = run_try(operator(output, fail_on_error=False), TaskInstanceStandIn(try_number=2))
    by_url = {v["video_url"]: v for v in retry.value["videos"]}
    assert by_url[URLS[0]]["status"] == "failed" and "may have been charged" in by_url[URLS[0]]["error"]
    assert [by_url[u]["status"] for u in URLS[1:]] == ["landed", "landed"]
    assert sandbox_connections.summary()["charges_by_video"] == {u: 1 for u in URLS}  # not paid twice

    explicit = run_try(operator(output, on_unknown_submit="resubmit"), TaskInstanceStandIn(try_number=3))
    assert explicit.error is None and explicit.value["counts"]["landed"] == 3
    assert sandbox_connections.summary()["charges_by_video"][URLS[0]] == 2  # the setting asked for it


def kill_while_a_create_waits_for_its_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under the running cap a create made ready ahead waits for its place; kill it there."""
    original = RunningTasks.take_place

    def take_place(self: RunningTasks, post_id: str, cap: int) -> bool:
        if len(self) >= cap:
            raise WorkerKilled("killed while a create waited for its place")
        return original(self, post_id, cap)

    monkeypatch.setattr(RunningTasks, "take_place", take_place)


def test_killed_while_a_create_waits_for_its_place_leaves_nothing_that_looks_paid(
        sandbox_connections: SandboxServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A create waiting for its place has not been sent: the retry pays for it as usual, instead of reporting
    it as one that may have been charged."""
    output = f"file://{tmp_path}/out/"
    with monkeypatch.context() as patch:
        kill_while_a_create_waits_for_its_place(patch)
        with pytest.raises(WorkerKilled):
            run_try(operator(output, max_active_submissions=1))
    assert sandbox_connections.summary()["charges_by_video"] == {URLS[0]: 1}  # only the first went out

    retry = run_try(operator(output, fail_on_error=False), TaskInstanceStandIn(try_number=2))
    assert retry.value["counts"]["landed"] == 3, retry.value["videos"]
    assert sandbox_connections.summary()["charges_by_video"] == {u: 1 for u in URLS}


def test_lost_create_reply_is_not_repeated(sandbox_connections: SandboxServer, tmp_path: Any) -> None:
    sandbox_connections.set_faults(endpoints=["createTask"], lost_reply={"count": 1})
    result = run_try(operator(f"file://{tmp_path}/out/", fail_on_error=False))
    statuses = [v["status"] for v in result.value["videos"]]
    assert statuses == ["failed", "landed", "landed"]
    assert sandbox_connections.summary()["charges_by_video"] == {u: 1 for u in URLS}


def test_transient_create_errors_raise_for_an_airflow_retry(sandbox_connections: SandboxServer,
                                                            tmp_path: Any) -> None:
    from airflow_sora._compat import AirflowException, AirflowFailException

    sandbox_connections.set_faults(endpoints=["createTask"], server_error={"rate": 1.0})
    output = f"file://{tmp_path}/out/"
    first = run_try(operator(output))
    assert isinstance(first.error, AirflowException) and not isinstance(first.error, AirflowFailException)
    assert sandbox_connections.summary()["requests"]["createTask"] == 9  # three passes over three videos
    sandbox_connections.set_faults(server_error={"rate": 0.0})
    retry = run_try(operator(output), TaskInstanceStandIn(try_number=2))
    assert retry.error is None and retry.value["counts"]["landed"] == 3
    assert sandbox_connections.summary()["charges_by_video"] == {u: 1 for u in URLS}


def test_a_transient_create_error_is_resubmitted_within_the_try(sandbox_connections: SandboxServer,
                                                                tmp_path: Any) -> None:
    sandbox_connections.set_faults(endpoints=["createTask"], server_error={"count": 1}, maintenance={"count": 1})
    result = run_try(operator(f"file://{tmp_path}/out/"))
    assert result.error is None and result.value["counts"]["landed"] == 3
    assert sandbox_connections.summary()["requests"]["createTask"] == 5
    assert sandbox_connections.summary()["charges_by_video"] == {u: 1 for u in URLS}


def test_truncated_download_retried_without_a_new_charge(sandbox_connections: SandboxServer, s3_server: str,
                                                         s3_bucket: str) -> None:
    from airflow_sora._compat import AirflowException

    sandbox_connections.state.config.result_size = 2 * 1024 * 1024
    sandbox_connections.set_faults(truncate_download={"count": 1})
    output = f"s3://aws_default@{s3_bucket}/out/"
    first = run_try(operator(output))
    assert isinstance(first.error, AirflowException) and "retry" in str(first.error)
    assert len([k for k in final_keys(s3_server, s3_bucket) if k.endswith(".mp4")]) == 2
    retry = run_try(operator(output), TaskInstanceStandIn(try_number=2))
    assert retry.error is None and retry.value["counts"]["landed"] == 3
    assert sandbox_connections.summary()["charges_by_video"] == {u: 1 for u in URLS}
