"""Kie callbacks end to end on real sockets: the sandbox sends them, the receiver (uvicorn, mounted at /sora as
the API server mounts it) checks and records them, the operator, trigger and worker loop wake on them.

Nothing is mocked: the charge log and the request counters are the sandbox's own, the inbox and the state
records are real files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from airflow.sdk import ObjectStoragePath

from airflow_sora.lifecycle import Phase
from airflow_sora.operators import SoraWatermarkRemoverOperator
from airflow_sora.plugins.inbox import CallbackInbox, state_store
from airflow_sora.plugins.receiver import MAX_BODY, create_app
from airflow_sora.plugins.settings import receiver_base
from airflow_sora.plugins.tokens import CallbackScope, callback_url
from airflow_sora.polling import PollSchedule
from airflow_sora.sandbox import SandboxServer
from airflow_sora.sandbox.kie_api import callback_request
from airflow_sora.services import KieClient, ServiceConfig
from airflow_sora.state import RunScope
from airflow_sora.triggers.kie import KieTaskTrigger
from tests.conftest import KIE_KEY, VIDEO_URLS, connection_env, fast_config
from tests.integration.harness import TaskInstanceStandIn, run_trigger, run_try

URL_SECRET = "cb-URL-SECRET-4c1d9e"
WEBHOOK_KEY = "cb-WEBHOOK-KEY-8b2f7a"


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Receiver:
    """The receiver app under uvicorn in a thread, mounted at /sora like the API server's plugin mount."""

    def __init__(self) -> None:
        import uvicorn
        from fastapi import FastAPI

        parent = FastAPI()
        parent.mount("/sora", create_app())
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(parent, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the receiver did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def signing_sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxServer]:
    """The sandbox signing its callbacks with the account's webhook key; kie_default knows both secrets."""
    with SandboxServer(fast_config(webhook_key=WEBHOOK_KEY, callback_retry_delay=0.2),
                       accounts={KIE_KEY: 10_000}) as server:
        monkeypatch.setenv("AIRFLOW_CONN_KIE_DEFAULT", connection_env(
            "kie", server.url, KIE_KEY, callback_secret=URL_SECRET, webhook_secret=WEBHOOK_KEY))
        yield server


def operator(output: str, urls: object, **kwargs: Any) -> SoraWatermarkRemoverOperator:
    kwargs.setdefault("poll_interval", 0.2)
    kwargs.setdefault("deferrable", True)
    kwargs.setdefault("callback_url", "auto")
    return SoraWatermarkRemoverOperator(task_id="remove", video_url=urls, output_path=output, **kwargs)


def polls(sandbox: SandboxServer) -> int:
    return int(sandbox.summary()["requests"].get("recordInfo", 0))


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its hash: "no state change" is this, unchanged."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# the whole path --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("deferrable", [True, False], ids=["trigger", "worker-loop"])
def test_a_batch_with_callbacks_polls_each_task_once_to_confirm(
        signing_sandbox: SandboxServer, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, deferrable: bool) -> None:
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", receiver.base)
    caplog.set_level(logging.DEBUG)
    urls = VIDEO_URLS[:6]
    output = f"file://{tmp_path}/clean/"
    result = run_try(operator(output, urls, deferrable=deferrable, callback_fallback_after=30), TaskInstanceStandIn())
    assert result.error is None, result.error
    assert result.value["counts"]["landed"] == 6
    assert polls(signing_sandbox) == 6  # one confirmation per task, no polling while waiting
    assert signing_sandbox.summary()["charges_by_video"] == dict.fromkeys(urls, 1)
    delivered = [c for c in signing_sandbox.state.callbacks_sent if c["outcome"] == 200]
    assert len(delivered) == 6
    if deferrable:
        kwargs = result.trigger.serialize()[1]  # type: ignore[union-attr]
        assert kwargs["inbox"].endswith("/_callbacks") and kwargs["poll_schedule"]["callback_silence"] == 30
    inbox = CallbackInbox.for_scope(CallbackScope("kie_default", output, "sora_test", TaskInstanceStandIn().run_id,
                                                  "remove"))
    assert len(inbox.heard()) == 6
    for secret in (URL_SECRET, WEBHOOK_KEY, KIE_KEY):  # nor in any file the run wrote
        assert secret not in caplog.text and secret not in json.dumps(result.value)
        assert all(secret not in p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file())


def test_with_the_running_cap_binding_the_look_for_room_polls_only_what_the_inbox_heard(
        signing_sandbox: SandboxServer, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """30 videos, at most 10 running: the submitter waits on the inbox for room, so every task, whether the
    submitter or the waiting side retired it, costs one status call, and the cap still holds."""
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", receiver.base)
    signing_sandbox.state.config.latency, signing_sandbox.state.config.latency_jitter = 1.0, 0.0
    urls = VIDEO_URLS[:30]
    result = run_try(operator(f"file://{tmp_path}/clean/", urls, max_active_submissions=10,
                              callback_fallback_after=30))
    assert result.error is None and result.value["counts"]["landed"] == 30
    tasks = sorted(signing_sandbox.state.tasks.values(), key=lambda t: t.created)
    assert len(tasks) == 30 and signing_sandbox.summary()["charges_by_video"] == dict.fromkeys(urls, 1)
    for task in tasks:
        assert len([t for t in tasks if t.created <= task.created < t.created + t.latency]) <= 10
    assert dict(signing_sandbox.state.polls_by_task) == {t.task_id: 1 for t in tasks}


def test_the_trigger_wakes_on_a_callback_without_polling(signing_sandbox: SandboxServer, receiver: Receiver,
                                                         tmp_path: Path) -> None:
    """Tasks that take 3 s: the trigger lists its inbox every 0.2 s and polls each task exactly once, right
    after its callback, never before."""
    signing_sandbox.state.config.latency = 3.0
    output = f"file://{tmp_path}/clean/"
    scope = CallbackScope("kie_default", output, "sora_test", "run_1", "remove")
    url = callback_url(receiver_base(receiver.base), URL_SECRET, scope)
    store = state_store(scope)
    ids = [_submitted(signing_sandbox, store, video, url) for video in VIDEO_URLS[:3]]
    started = time.monotonic()
    event = run_trigger(KieTaskTrigger(
        task_ids=ids, deadline=time.time() + 60, inbox=CallbackInbox.for_state(store).uri,
        poll_schedule=PollSchedule(first_poll_after=0.2, interval=0.2, callback_silence=30).as_dict()))
    assert event["status"] == "success" and set(event["tasks"]) == set(ids)
    assert 2.5 < time.monotonic() - started < 10
    assert dict(signing_sandbox.state.polls_by_task) == dict.fromkeys(ids, 1)


@pytest.mark.parametrize("cap", [100, 2], ids=["cap-free", "cap-binding"])
def test_with_the_receiver_down_the_batch_completes_by_polling(signing_sandbox: SandboxServer, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch, cap: int) -> None:
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    urls = VIDEO_URLS[:4]
    result = run_try(operator(f"file://{tmp_path}/clean/", urls, callback_fallback_after=1.0,
                              max_active_submissions=cap))
    assert result.error is None and result.value["counts"]["landed"] == 4
    assert signing_sandbox.summary()["charges_by_video"] == dict.fromkeys(urls, 1)
    sent = signing_sandbox.state.callbacks_sent
    assert sent and all(c["outcome"] == "ConnectError" for c in sent)


def test_a_user_given_url_passes_through(signing_sandbox: SandboxServer, tmp_path: Path) -> None:
    mine = "https://hooks.example.com/kie?team=video"
    op = operator(f"file://{tmp_path}/clean/", VIDEO_URLS[0], callback_url=mine, poll_interval=0.1)
    run_try(op)  # the sandbox's callback to example.com fails; polling lands the video
    (task,) = signing_sandbox.state.tasks.values()
    assert task.callback_url == mine and op._inbox is None


def test_auto_without_a_url_secret_fails_before_any_charge(sandbox: SandboxServer, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_KIE_DEFAULT", connection_env("kie", sandbox.url, KIE_KEY))
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.example.com")
    result = run_try(operator(f"file://{tmp_path}/clean/", VIDEO_URLS[0]))
    assert result.error is not None and "callback_secret" in str(result.error)
    assert sandbox.charges() == []


# the receiver's checks, one request at a time -------------------------------------------------------------
def _submitted(sandbox: SandboxServer, store: Any, video: str, url: str | None) -> str:
    """A real paid task and the state record a run writes right after its create (phase submitted)."""
    from airflow_sora.videos import parse_video_list

    config = ServiceConfig(base_url=sandbox.url, api_key=__import__("pydantic").SecretStr(KIE_KEY),
                           allow_private_result_hosts=True, create_rate=10_000.0)
    with KieClient(config) as client:
        task_id = client.submit(video, callback_url=url).task_id
    ref = parse_video_list([video]).videos[0]
    store.save(store.new_record(ref).model_copy(update={"phase": Phase.SUBMITTED, "task_id": task_id}))
    assert task_id is not None
    return task_id


class Setup:
    def __init__(self, sandbox: SandboxServer, receiver: Receiver, tmp_path: Path) -> None:
        self.sandbox, self.tmp = sandbox, tmp_path
        self.output = f"file://{tmp_path}/clean/"
        self.scope = CallbackScope("kie_default", self.output, "sora_test", "run_1", "remove")
        self.url = callback_url(receiver_base(receiver.base), URL_SECRET, self.scope)
        self.store = state_store(self.scope)
        self.task_id = _submitted(sandbox, self.store, VIDEO_URLS[0], None)  # no callback of its own
        self.task = sandbox.state.tasks[self.task_id]
        time.sleep(0.6)  # finished

    def send(self, url: str | None = None, *, body: Any = None, headers: dict[str, str] | None = None,
             signed: bool = True, now: float | None = None, content: bytes | None = None) -> httpx.Response:
        payload, signed_headers = callback_request(self.sandbox._httpd, self.task, signed=signed, now=now)
        if content is None:
            content = json.dumps(payload if body is None else body).encode()
        return httpx.post(url or self.url, content=content, timeout=5,
                          headers={**signed_headers, **(headers or {})})

    def heard(self) -> set[str]:
        return CallbackInbox.for_state(self.store).heard()


@pytest.fixture
def setup(signing_sandbox: SandboxServer, receiver: Receiver, tmp_path: Path) -> Setup:
    return Setup(signing_sandbox, receiver, tmp_path)


def _with(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {**dict(parse_qsl(parts.query)), **changes}
    return parts._replace(query="&".join(f"{k}={httpx.QueryParams({k: v})[k]}" for k, v in query.items())).geturl()


def test_a_signed_callback_is_recorded_once(setup: Setup) -> None:
    before = setup.sandbox.charges()
    first = setup.send()
    assert first.status_code == 200 and first.json()["msg"] == "recorded"
    assert first.elapsed.total_seconds() < 1.0  # Kie waits about 15 s; the receiver answers within one
    files = tree(setup.tmp)
    again = setup.send()  # Kie retrying, or a replay within the window: a 200 that changes nothing
    assert again.status_code == 200 and again.json()["msg"].startswith("duplicate")
    assert tree(setup.tmp) == files and setup.heard() == {setup.task_id}
    assert setup.sandbox.charges() == before and polls(setup.sandbox) == 0


@pytest.mark.parametrize(("how", "status"), [
    ("forged token", 403), ("no token", 403), ("another run", 403), ("another folder", 403),
    ("unknown connection", 403), ("unsigned", 401), ("stale", 401), ("future", 401), ("wrong signature", 401),
    ("not json", 400), ("no task id", 400), ("too large", 413), ("too large, no length", 413),
])
def test_refused_callbacks_change_nothing(setup: Setup, how: str, status: int,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    before, files = setup.sandbox.charges(), tree(setup.tmp)
    if how == "forged token":
        response = setup.send(_with(setup.url, k="A" * 43))
    elif how == "no token":
        response = setup.send(setup.url.split("&k=")[0])
    elif how == "another run":
        response = setup.send(_with(setup.url, r="run_2"))
    elif how == "another folder":
        response = setup.send(_with(setup.url, o=f"file://{setup.tmp}/elsewhere/"))
    elif how == "unknown connection":
        response = setup.send(_with(setup.url, c="kie_nowhere"))
    elif how == "unsigned":
        response = setup.send(signed=False)
    elif how == "stale":
        response = setup.send(now=time.time() - 400)  # well outside the 300 s window, whatever the load
    elif how == "future":
        response = setup.send(now=time.time() + 400)
    elif how == "wrong signature":
        response = setup.send(headers={"X-Webhook-Signature": "c2lnbmF0dXJl"})
    elif how == "not json":
        response = setup.send(content=b"{'code': 200")
    elif how == "no task id":
        response = setup.send(body={"code": 200, "data": {"state": "success"}})
    elif how == "too large":
        response = setup.send(content=b" " * (MAX_BODY + 1))
    else:
        def chunks() -> Iterator[bytes]:
            for _ in range(80):
                yield b" " * 1024

        response = httpx.post(setup.url, content=chunks(), timeout=5)
    assert response.status_code == status, response.text
    assert tree(setup.tmp) == files and setup.heard() == set()
    assert setup.sandbox.charges() == before and polls(setup.sandbox) == 0
    for secret in (URL_SECRET, WEBHOOK_KEY, KIE_KEY):
        assert secret not in caplog.text and secret not in response.text


def test_a_task_of_another_run_or_folder_is_refused(setup: Setup) -> None:
    """Run B, into another folder, paid for the same video: its callback, sent to run A's URL, is refused."""
    other = CallbackScope("kie_default", f"file://{setup.tmp}/other/", "sora_test", "run_2", "remove")
    other_task = _submitted(setup.sandbox, state_store(other), VIDEO_URLS[0], None)
    time.sleep(0.6)
    payload, headers = callback_request(setup.sandbox._httpd, setup.sandbox.state.tasks[other_task])
    files = tree(setup.tmp)
    response = httpx.post(setup.url, json=payload, headers=headers, timeout=5)
    assert response.status_code == 403 and setup.heard() == set() and tree(setup.tmp) == files


def test_unknown_and_late_callbacks_are_acknowledged_and_ignored(setup: Setup) -> None:
    unknown = setup.send(body={"code": 200, "data": {"taskId": "task_nobody_knows", "state": "success"}},
                         headers={})
    assert unknown.status_code == 401  # signed for another task id: the signature does not hold
    payload, _ = callback_request(setup.sandbox._httpd, setup.task)
    payload["data"]["param"] = json.dumps({"input": {"video_url": VIDEO_URLS[5]}})  # a post this run never had
    assert setup.send(body=payload).json()["msg"].startswith("unknown")
    record = setup.store.load(__import__("airflow_sora.videos", fromlist=["x"]).parse_video_list(
        [VIDEO_URLS[0]]).videos[0])
    assert record is not None
    setup.store.save(record.model_copy(update={"phase": Phase.LANDED}))
    files = tree(setup.tmp)
    late = setup.send()
    assert late.status_code == 200 and late.json()["msg"].startswith("late")
    assert setup.heard() == set() and tree(setup.tmp) == files


def test_the_sandbox_retries_and_duplicates_callbacks_and_the_receiver_stays_idempotent(
        signing_sandbox: SandboxServer, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", receiver.base)
    signing_sandbox.set_faults(callback_duplicate={"rate": 1.0})
    urls = VIDEO_URLS[:3]
    result = run_try(operator(f"file://{tmp_path}/clean/", urls))
    assert result.error is None and result.value["counts"]["landed"] == 3
    sent = [c for c in signing_sandbox.state.callbacks_sent if c["outcome"] == 200]
    assert len(sent) == 6 and polls(signing_sandbox) == 3
    assert signing_sandbox.summary()["charges_by_video"] == dict.fromkeys(urls, 1)


def test_store_paths_match_the_operators(tmp_path: Path) -> None:
    """The receiver finds the state the operator writes: the same folder, from the URL's names alone."""
    from airflow_sora.state import VideoStateStore

    output = f"file://{tmp_path}/clean/"
    scope = CallbackScope("kie_default", output, "d", "manual__2026-01-01T00:00:00+00:00", "t", 3)
    ours = VideoStateStore(ObjectStoragePath(output), RunScope("d", "t", "manual__2026-01-01T00:00:00+00:00", 3),
                           service="kie")
    assert str(state_store(scope).root) == str(ours.root)


def test_the_sensor_polls_only_once_a_callback_is_heard(signing_sandbox: SandboxServer, receiver: Receiver,
                                                        tmp_path: Path) -> None:
    from airflow.sdk import PokeReturnValue

    from airflow_sora.sensors import KieTaskSensor

    signing_sandbox.state.config.latency = 1.5
    scope = CallbackScope("kie_default", f"file://{tmp_path}/clean/", "sora_test", "run_1", "remove")
    store = state_store(scope)
    task_id = _submitted(signing_sandbox, store, VIDEO_URLS[0],
                         callback_url(receiver_base(receiver.base), URL_SECRET, scope))
    sensor = KieTaskSensor(task_id="wait", kie_task_id=task_id, deferrable=False, poke_interval=0.1,
                           callback_inbox=CallbackInbox.for_state(store).uri)
    assert sensor.poke({}) is False and polls(signing_sandbox) == 0  # nothing heard: nothing asked
    deadline = time.monotonic() + 10
    while not isinstance(done := sensor.poke({}), PokeReturnValue):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert done.is_done and polls(signing_sandbox) == 1


def test_the_plugin_is_registered_by_the_provider_and_mounts_nothing_unless_asked() -> None:
    import importlib

    from airflow_sora import get_provider_info
    from airflow_sora.plugins.kie_callbacks import fastapi_app

    (entry,) = get_provider_info()["plugins"]
    module, _, name = entry["plugin-class"].rpartition(".")
    plugin = getattr(importlib.import_module(module), name)
    assert plugin.name == entry["name"] and plugin.fastapi_apps == []  # not enabled, not the API server
    mounted = fastapi_app()
    assert mounted["url_prefix"] == "/sora" and any(
        getattr(route, "path", "") == "/kie/callback" for route in mounted["app"].routes)
