"""SoraWatermarkRemoverOperator against the sandbox and object storage (local and moto S3 over HTTP)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_sora._compat import AirflowException, AirflowFailException, TaskDeferred
from airflow_sora.operators import SoraWatermarkRemoverOperator
from airflow_sora.sandbox import SandboxServer
from tests.conftest import VIDEO_URLS, s3_keys
from tests.integration.harness import TaskInstanceStandIn, run_try


def operator(output: str, urls: object, **kwargs: object) -> SoraWatermarkRemoverOperator:
    kwargs.setdefault("poll_interval", 0.1)
    kwargs.setdefault("deferrable", True)
    return SoraWatermarkRemoverOperator(task_id="remove", video_url=urls, output_path=output, **kwargs)


def local_output(tmp_path: Path) -> str:
    return f"file://{tmp_path}/clean/"


def post_id(url: str) -> str:
    return url.rsplit("/", 1)[1].split("?")[0]


def assert_landed(output: str, url: str, service: str) -> dict[str, object]:
    """The video and its sidecar are at the final keys, consistent with each other."""
    root = ObjectStoragePath(output)
    video = (root / f"{post_id(url)}.mp4").read_bytes()
    sidecar = json.loads((root / f"{post_id(url)}.json").read_text())
    assert video[4:8] == b"ftyp"
    assert sidecar["sha256"] == hashlib.sha256(video).hexdigest() and sidecar["size"] == len(video)
    assert sidecar["source_url"] == url and sidecar["post_id"] == post_id(url)
    assert sidecar["service"] == service and sidecar["ai_generated"] is True
    assert sidecar["generator"] == "OpenAI Sora"
    assert sidecar["airflow"]["dag_id"] == "sora_test"
    return sidecar


def charges_by_video(sandbox: SandboxServer) -> dict[str, int]:
    return sandbox.summary()["charges_by_video"]


class TestKie:
    def test_single_url_deferrable_lands_locally(self, sandbox_connections: SandboxServer, tmp_path: Path) -> None:
        output = local_output(tmp_path)
        ti = TaskInstanceStandIn()
        result = run_try(operator(output, VIDEO_URLS[0]), ti)
        assert result.error is None and result.deferred
        assert result.events[0]["status"] == "success"
        manifest = result.value
        assert manifest["counts"] == {"landed": 1, "skipped": 0, "failed": 0, "rejected": 0,
                                      "not_submitted": 0, "total": 1}
        (video,) = manifest["videos"]
        sidecar = assert_landed(output, VIDEO_URLS[0], "kie")
        assert video["sha256"] == sidecar["sha256"] and video["task_id"] == sidecar["task_id"]
        assert video["credits_charged"] == 10 and manifest["credits_charged"] == 10
        assert ti.xcom["kie_task_ids"] == [video["task_id"]]
        assert ti.xcom["_link_KieTaskLink"].endswith(video["task_id"])
        assert charges_by_video(sandbox_connections) == {VIDEO_URLS[0]: 1}
        assert not list(Path(tmp_path, "clean").glob(".*part"))

    def test_list_non_deferrable_lands_in_s3(self, sandbox_connections: SandboxServer, s3_server: str,
                                             s3_bucket: str) -> None:
        output = f"s3://aws_default@{s3_bucket}/clean/"
        urls = VIDEO_URLS[:5]
        result = run_try(operator(output, urls, deferrable=False))
        assert result.error is None and not result.deferred
        assert result.value["counts"]["landed"] == 5
        for url in urls:
            assert_landed(output, url, "kie")
        keys = s3_keys(s3_server, s3_bucket)
        finals = {k for k in keys if not k.startswith("clean/_state/")}
        assert finals == {f"clean/{post_id(u)}{ext}" for u in urls for ext in (".mp4", ".json")}
        assert all(size > 0 for size in keys.values())
        assert charges_by_video(sandbox_connections) == {u: 1 for u in urls}

    def test_duplicates_once_and_invalid_urls_rejected(self, sandbox_connections: SandboxServer,
                                                       tmp_path: Path) -> None:
        bad = "https://sora.chatgpt.com/p/not-a-post"
        urls = [VIDEO_URLS[0], bad, VIDEO_URLS[0], VIDEO_URLS[1]]
        result = run_try(operator(local_output(tmp_path), urls, fail_on_error=False))
        assert result.error is None
        counts = result.value["counts"]
        assert (counts["landed"], counts["rejected"], counts["total"]) == (2, 1, 3)
        rejected = [v for v in result.value["videos"] if v["status"] == "rejected"]
        assert rejected[0]["video_url"] == bad and "Expected https://sora.chatgpt.com/p/s_" in rejected[0]["error"]
        assert charges_by_video(sandbox_connections) == {VIDEO_URLS[0]: 1, VIDEO_URLS[1]: 1}

    def test_only_invalid_urls_fail_fast_before_any_call(self, sandbox_connections: SandboxServer,
                                                         tmp_path: Path) -> None:
        result = run_try(operator(local_output(tmp_path), ["http://example.com/x.mp4", "s_123"]))
        assert isinstance(result.error, AirflowFailException)
        assert "nothing was spent" in str(result.error) and "http://example.com/x.mp4" in str(result.error)
        assert sandbox_connections.summary()["requests"] == {}

    def test_failed_task_is_reported_per_video(self, sandbox_connections: SandboxServer, tmp_path: Path) -> None:
        sandbox_connections.set_faults(fail_video_urls=[VIDEO_URLS[1]])
        result = run_try(operator(local_output(tmp_path), VIDEO_URLS[:3], fail_on_error=False))
        assert result.error is None
        failed = [v for v in result.value["videos"] if v["status"] == "failed"]
        assert [v["video_url"] for v in failed] == [VIDEO_URLS[1]]
        assert "Internal server error" in failed[0]["error"] and failed[0]["credits_charged"] == 10
        strict = run_try(operator(local_output(tmp_path), VIDEO_URLS[:3]),
                         TaskInstanceStandIn(run_id="second"))
        assert isinstance(strict.error, AirflowFailException)
        assert charges_by_video(sandbox_connections)[VIDEO_URLS[1]] == 1  # the folder remembers the verdict
        again = run_try(operator(local_output(tmp_path), VIDEO_URLS[:3], retry_failed_after=0),
                        TaskInstanceStandIn(run_id="third"))
        assert isinstance(again.error, AirflowFailException)
        assert charges_by_video(sandbox_connections)[VIDEO_URLS[1]] == 2  # asked to retry it now

    def test_expired_result_link_is_refreshed(self, sandbox_connections: SandboxServer, tmp_path: Path) -> None:
        sandbox_connections.set_faults(expire_links={"count": 1})
        result = run_try(operator(local_output(tmp_path), VIDEO_URLS[0]))
        assert result.error is None and result.value["counts"]["landed"] == 1
        assert sandbox_connections.summary()["requests"]["download-url"] == 1
        assert_landed(local_output(tmp_path), VIDEO_URLS[0], "kie")

    @pytest.mark.parametrize("deferrable", [True, False])
    def test_deadline_keeps_task_ids_for_a_retry(self, sandbox_connections: SandboxServer, tmp_path: Path,
                                                 deferrable: bool) -> None:
        sandbox_connections.state.config.latency = 1.5
        op = operator(local_output(tmp_path), VIDEO_URLS[:2], timeout=0.3, deferrable=deferrable)
        first = run_try(op)
        assert isinstance(first.error, AirflowException) and not isinstance(first.error, AirflowFailException)
        assert "retry" in str(first.error)
        second = run_try(operator(local_output(tmp_path), VIDEO_URLS[:2], timeout=10, deferrable=deferrable),
                         TaskInstanceStandIn(try_number=2))
        assert second.error is None and second.value["counts"]["landed"] == 2
        assert charges_by_video(sandbox_connections) == {u: 1 for u in VIDEO_URLS[:2]}


class TestIfExists:
    def test_skip_costs_nothing(self, sandbox_connections: SandboxServer, tmp_path: Path) -> None:
        output = local_output(tmp_path)
        run_try(operator(output, VIDEO_URLS[:2]))
        again = run_try(operator(output, VIDEO_URLS[:3]), TaskInstanceStandIn(run_id="another_run"))
        assert again.error is None
        statuses = {v["video_url"]: v["status"] for v in again.value["videos"]}
        assert statuses == {VIDEO_URLS[0]: "skipped", VIDEO_URLS[1]: "skipped", VIDEO_URLS[2]: "landed"}
        assert charges_by_video(sandbox_connections) == {u: 1 for u in VIDEO_URLS[:3]}

    def test_overwrite_pays_and_replaces(self, sandbox_connections: SandboxServer, tmp_path: Path) -> None:
        output = local_output(tmp_path)
        run_try(operator(output, VIDEO_URLS[0]))
        first = json.loads((ObjectStoragePath(output) / f"{post_id(VIDEO_URLS[0])}.json").read_text())
        again = run_try(operator(output, VIDEO_URLS[0], if_exists="overwrite"), TaskInstanceStandIn(run_id="r2"))
        assert again.error is None and again.value["counts"]["landed"] == 1
        sidecar = assert_landed(output, VIDEO_URLS[0], "kie")
        assert sidecar["task_id"] != first["task_id"]
        assert charges_by_video(sandbox_connections) == {VIDEO_URLS[0]: 2}

    def test_fail_reports_the_existing_object(self, sandbox_connections: SandboxServer, tmp_path: Path) -> None:
        output = local_output(tmp_path)
        run_try(operator(output, VIDEO_URLS[0]))
        again = run_try(operator(output, VIDEO_URLS[0], if_exists="fail"), TaskInstanceStandIn(run_id="r2"))
        assert isinstance(again.error, AirflowFailException)
        assert charges_by_video(sandbox_connections) == {VIDEO_URLS[0]: 1}


class TestSaveSora:
    def test_list_with_source_kept(self, sandbox_connections: SandboxServer, tmp_path: Path) -> None:
        output = local_output(tmp_path)
        result = run_try(operator(output, VIDEO_URLS[:3], conn_id="savesora_default", keep_source=True))
        assert result.error is None and not result.deferred
        assert result.value["counts"]["landed"] == 3 and result.value["credits_charged"] == 3
        for url in VIDEO_URLS[:3]:
            sidecar = assert_landed(output, url, "savesora")
            assert sidecar["prompt"].startswith("Sandbox video")
            source = (ObjectStoragePath(output) / f"{post_id(url)}.source.mp4").read_bytes()
            assert sidecar["watermarked_source"]["sha256"] == hashlib.sha256(source).hexdigest()
        assert charges_by_video(sandbox_connections) == {u: 1 for u in VIDEO_URLS[:3]}

    def test_to_s3_with_a_refunded_failure(self, sandbox_connections: SandboxServer, s3_server: str,
                                           s3_bucket: str) -> None:
        sandbox_connections.set_faults(fail_video_urls=[VIDEO_URLS[0]])
        output = f"s3://aws_default@{s3_bucket}/ss/"
        result = run_try(operator(output, VIDEO_URLS[:2], conn_id="savesora_default", fail_on_error=False))
        assert result.error is None
        by_url = {v["video_url"]: v for v in result.value["videos"]}
        assert by_url[VIDEO_URLS[0]]["status"] == "failed" and by_url[VIDEO_URLS[0]]["credits_charged"] == 0
        assert "refunded" in by_url[VIDEO_URLS[0]]["error"]
        assert by_url[VIDEO_URLS[1]]["status"] == "landed"
        assert_landed(output, VIDEO_URLS[1], "savesora")

    def test_auth_error_fails_without_retry(self, sandbox: SandboxServer, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
        from tests.conftest import connection_env

        monkeypatch.setenv("AIRFLOW_CONN_SS_BAD", connection_env("savesora", sandbox.url, "wrong"))
        result = run_try(operator(local_output(tmp_path), VIDEO_URLS[:3], conn_id="ss_bad"))
        assert isinstance(result.error, AirflowFailException) and "invalid api_key" in str(result.error)
        assert sandbox.summary()["requests"]["download"] == 1  # stopped at the first permanent error


def test_never_more_than_max_active_submissions_running(sandbox_connections: SandboxServer, tmp_path: Path) -> None:
    sandbox_connections.state.config.latency = 0.4
    sandbox_connections.state.config.latency_jitter = 0.0
    result = run_try(operator(local_output(tmp_path), VIDEO_URLS[:6], max_active_submissions=2))
    assert result.error is None and result.value["counts"]["landed"] == 6
    assert result.value["worker_seconds"] > 0
    tasks = sorted(sandbox_connections.state.tasks.values(), key=lambda t: t.created)
    for task in tasks:
        running = [t for t in tasks if t.created <= task.created < t.created + t.latency]
        assert len(running) <= 2


def test_a_list_rendered_as_text_is_still_a_list(sandbox_connections: SandboxServer, tmp_path: Path) -> None:
    result = run_try(operator(local_output(tmp_path), str(VIDEO_URLS[:2])))
    assert result.error is None and result.value["counts"]["landed"] == 2


def test_a_deleted_output_is_landed_again_without_a_new_charge(sandbox_connections: SandboxServer,
                                                               tmp_path: Path) -> None:
    output = local_output(tmp_path)
    run_try(operator(output, VIDEO_URLS[0]))
    (tmp_path / "clean" / f"{post_id(VIDEO_URLS[0])}.mp4").unlink()
    again = run_try(operator(output, VIDEO_URLS[0]), TaskInstanceStandIn(try_number=2))
    assert again.error is None and again.value["counts"]["landed"] == 1
    assert_landed(output, VIDEO_URLS[0], "kie")
    assert charges_by_video(sandbox_connections) == {VIDEO_URLS[0]: 1}


def test_wait_before_defer_lands_a_quick_task_without_deferring(sandbox_connections: SandboxServer,
                                                                tmp_path: Path) -> None:
    output = local_output(tmp_path)
    result = run_try(operator(output, VIDEO_URLS[0], wait_before_defer=5.0))
    assert result.error is None and not result.deferred
    assert result.value["counts"]["landed"] == 1
    assert_landed(output, VIDEO_URLS[0], "kie")
    assert charges_by_video(sandbox_connections) == {VIDEO_URLS[0]: 1}


def test_wait_before_defer_hands_only_unfinished_tasks_to_the_trigger(sandbox_connections: SandboxServer,
                                                                      tmp_path: Path) -> None:
    output = local_output(tmp_path)
    sandbox_connections.state.config.latency_jitter = 0.0
    with pytest.raises(TaskDeferred):  # a first try submits one quick task and stops at the deferral
        operator(output, VIDEO_URLS[0]).execute({"ti": TaskInstanceStandIn()})
    time.sleep(sandbox_connections.state.config.latency + 0.2)  # let it finish before the next try looks
    sandbox_connections.state.config.latency = 1.5
    result = run_try(operator(output, VIDEO_URLS[:2], wait_before_defer=0.5), TaskInstanceStandIn(try_number=2))
    assert result.error is None and result.deferred
    task_ids = {t.video_url: t.task_id for t in sandbox_connections.state.tasks.values()}
    assert result.trigger is not None and result.trigger.task_ids == [task_ids[VIDEO_URLS[1]]]
    assert result.value["counts"]["landed"] == 2
    assert sandbox_connections.state.polls_by_task[task_ids[VIDEO_URLS[0]]] == 1  # finished: never polled again
    assert charges_by_video(sandbox_connections) == {VIDEO_URLS[0]: 1, VIDEO_URLS[1]: 1}
