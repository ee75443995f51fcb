"""KieTaskTrigger: serialisation, every terminal path, the deadline, and tolerance of transient errors."""

from __future__ import annotations

import time

import pytest

from airflow_sora.sandbox import SandboxServer
from airflow_sora.services import KieClient, ServiceConfig
from airflow_sora.triggers import KieTaskTrigger
from tests.conftest import KIE_KEY, VIDEO_URLS
from tests.integration.harness import run_trigger

FAST = {"first_poll_after": 0.05, "interval": 0.1, "after_30s": 0.1, "after_2min": 0.1}


def submit(config: ServiceConfig, urls: list[str]) -> list[str]:
    with KieClient(config) as client:
        return [client.submit(url).task_id or "" for url in urls]


def trigger(task_ids: list[str], **kwargs: object) -> KieTaskTrigger:
    kwargs.setdefault("deadline", time.time() + 20)
    kwargs.setdefault("poll_schedule", FAST)
    return KieTaskTrigger(task_ids=task_ids, **kwargs)  # type: ignore[arg-type]


def test_serialisation_round_trip_carries_no_secret() -> None:
    original = trigger(["t1", "t2", "t1"], conn_id="kie_prod", deadline=1_800_000_000.0, max_consecutive_errors=3)
    path, kwargs = original.serialize()
    assert path == "airflow_sora.triggers.kie.KieTaskTrigger"
    assert kwargs == {"task_ids": ["t1", "t2"], "conn_id": "kie_prod", "deadline": 1_800_000_000.0,
                      "poll_schedule": FAST, "max_consecutive_errors": 3, "max_in_flight": 10, "progress": {}}
    assert KieTaskTrigger(**kwargs).serialize() == (path, kwargs)
    assert KIE_KEY not in repr(kwargs)


def test_all_succeed(sandbox_connections: SandboxServer, kie_config: ServiceConfig) -> None:
    ids = submit(kie_config, VIDEO_URLS[:4])
    event = run_trigger(trigger(ids))
    assert event["status"] == "success"
    assert {tid: s["state"] for tid, s in event["tasks"].items()} == {tid: "succeeded" for tid in ids}
    assert all(s["result_urls"] for s in event["tasks"].values())


def test_finished_tasks_are_not_polled_again(sandbox_connections: SandboxServer, kie_config: ServiceConfig) -> None:
    sandbox_connections.state.config.latency = 0.2
    quick = submit(kie_config, VIDEO_URLS[:2])
    sandbox_connections.state.config.latency = 1.2
    slow = submit(kie_config, VIDEO_URLS[2:3])
    time.sleep(0.3)
    event = run_trigger(trigger(quick + slow))
    polls = sandbox_connections.state.polls_by_task
    assert event["status"] == "success"
    assert [polls[t] for t in quick] == [1, 1]  # finished at the first look: never asked again
    assert polls[slow[0]] >= 3  # while the slow one was polled round after round


def test_a_failed_task_is_terminal(sandbox_connections: SandboxServer, kie_config: ServiceConfig) -> None:
    sandbox_connections.set_faults(fail_video_urls=[VIDEO_URLS[1]])
    ids = submit(kie_config, VIDEO_URLS[:2])
    event = run_trigger(trigger(ids))
    assert event["status"] == "success"
    assert event["tasks"][ids[1]]["state"] == "failed"
    assert event["tasks"][ids[1]]["fail_message"] == "Internal server error"


def test_deadline(sandbox_connections: SandboxServer, kie_config: ServiceConfig) -> None:
    sandbox_connections.state.config.latency = 5
    ids = submit(kie_config, VIDEO_URLS[:2])
    started = time.monotonic()
    event = run_trigger(trigger(ids, deadline=time.time() + 0.6))
    assert event["status"] == "timeout" and "2 of 2" in event["message"]
    assert time.monotonic() - started < 3
    assert all(s["state"] in ("running", "not_visible") for s in event["tasks"].values())


def test_transient_errors_are_tolerated(sandbox_connections: SandboxServer, kie_config: ServiceConfig,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import connection_env

    monkeypatch.setenv("AIRFLOW_CONN_KIE_NORETRY", connection_env("kie", sandbox_connections.url, KIE_KEY,
                                                                  max_retries=0))
    ids = submit(kie_config, VIDEO_URLS[:1])
    sandbox_connections.set_faults(endpoints=["recordInfo"], server_error={"count": 2}, non_json={"count": 1})
    event = run_trigger(trigger(ids, conn_id="kie_noretry", max_consecutive_errors=3))
    assert event["status"] == "success"


def test_too_many_consecutive_transient_errors_end_the_wait(sandbox_connections: SandboxServer,
                                                            kie_config: ServiceConfig,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import connection_env

    monkeypatch.setenv("AIRFLOW_CONN_KIE_NORETRY", connection_env("kie", sandbox_connections.url, KIE_KEY,
                                                                  max_retries=0))
    ids = submit(kie_config, VIDEO_URLS[:1])
    sandbox_connections.set_faults(endpoints=["recordInfo"], maintenance={"rate": 1.0})
    event = run_trigger(trigger(ids, conn_id="kie_noretry", max_consecutive_errors=2))
    assert event["status"] == "error" and "3 consecutive poll rounds failed" in event["message"]


def test_a_permanent_error_ends_the_wait_clearly(sandbox_connections: SandboxServer,
                                                 kie_config: ServiceConfig) -> None:
    ids = submit(kie_config, VIDEO_URLS[:1])
    event = run_trigger(trigger([*ids, "task_unknown"]))
    assert event["status"] == "error" and "Task not found" in event["message"]


def test_a_missing_connection_key_is_an_error_event(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.setenv("AIRFLOW_CONN_KIE_NOKEY", json.dumps({"conn_type": "kie", "host": sandbox.url}))
    event = run_trigger(trigger(["t1"], conn_id="kie_nokey"))
    assert event["status"] == "error" and "no API key" in event["message"]


def test_the_trigger_writes_progress_lines_in_the_batch_terms(sandbox_connections: SandboxServer,
                                                              kie_config: ServiceConfig,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The counts from before deferral travel in the trigger's kwargs (serialised and rebuilt here)."""
    ids = submit(kie_config, VIDEO_URLS[:3])
    waiting = trigger(ids)
    waiting.progress = {"total": 5, "submitted": 3, "skipped": 2, "credits": 30.0}
    event = run_trigger(waiting)
    assert event["status"] == "success"
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if "Sora progress [waiting]" in line]
    assert lines and "3/5 submitted, 3 running" in lines[0] and "30 credits charged" in lines[0]
    assert "3/5 finished at the service" in lines[-1] and "2 skipped" in lines[-1]


def test_a_malformed_event_fails_the_resume_with_a_clear_message() -> None:
    from airflow_sora.exceptions import InvalidTriggerEventError
    from airflow_sora.triggers.kie import KieWaitEvent

    assert KieWaitEvent.from_payload({"status": "success", "message": "ok", "tasks": {}}).status == "success"
    for payload in ({"status": "done"}, {"message": "no status"}, "not a dict",
                    {"status": "success", "message": "x", "tasks": {"t": {"state": "nope"}}}):
        with pytest.raises(InvalidTriggerEventError, match="does not write"):
            KieWaitEvent.from_payload(payload)
