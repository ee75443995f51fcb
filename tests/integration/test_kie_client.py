"""KieClient and AsyncKieClient against the sandbox over real sockets, with charges checked."""

from __future__ import annotations

import asyncio
import time

import pytest

from airflow_sora.sandbox import SandboxServer
from airflow_sora.services import (
    AsyncKieClient,
    AuthError,
    InsufficientCreditsError,
    InvalidVideoUrlError,
    KieClient,
    RateLimitedError,
    RetryPolicy,
    ServiceConfig,
    ServiceUnavailableError,
    SubmitOutcomeUnknownError,
    TaskNotFoundError,
    TaskState,
)
from tests.conftest import KIE_KEY, VIDEO_URLS, service_config

URL = VIDEO_URLS[0]


def wait_terminal(client: KieClient, task_id: str, timeout: float = 10.0) -> object:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        status = client.get_status(task_id)
        seen.append(status.state)
        if status.terminal:
            return status, seen
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish: {seen}")


def charged(sandbox: SandboxServer, url: str = URL) -> float:
    return sandbox.summary()["credits_by_video"].get(url, 0.0)


def test_full_lifecycle_sync(sandbox: SandboxServer, kie_config: ServiceConfig) -> None:
    with KieClient(kie_config) as client:
        before = client.credits().balance
        submission = client.submit(URL)
        status, seen = wait_terminal(client, submission.task_id)
        assert seen[0] is TaskState.NOT_VISIBLE  # "recordInfo is null" right after create
        assert TaskState.RUNNING in seen and status.state is TaskState.SUCCEEDED
        result = client.result(status, URL)
        fresh = client.refresh_link(result.clean_url)
        assert fresh != result.clean_url and "/files/" in fresh
        assert client.credits().balance == before - 10
    assert charged(sandbox) == 10
    assert sandbox.summary()["requests"]["createTask"] == 1


async def test_full_lifecycle_async(sandbox: SandboxServer, kie_config: ServiceConfig) -> None:
    async with AsyncKieClient(kie_config) as client:
        submission = await client.submit(URL)
        for _ in range(200):
            status = await client.get_status(submission.task_id)
            if status.terminal:
                break
            await asyncio.sleep(0.05)
        assert status.state is TaskState.SUCCEEDED
        assert client.result(status, URL).clean_url.startswith(sandbox.url)
        assert (await client.credits()).balance == 10_000 - 10
    assert charged(sandbox) == 10


def test_invalid_url_costs_nothing_and_sends_nothing(sandbox: SandboxServer, kie_config: ServiceConfig) -> None:
    with KieClient(kie_config) as client, pytest.raises(InvalidVideoUrlError, match="not a public Sora"):
        client.submit("https://example.com/video.mp4")
    assert sandbox.summary()["requests"] == {}


def test_failed_task(sandbox: SandboxServer, kie_config: ServiceConfig) -> None:
    sandbox.set_faults(fail_video_urls=[URL])
    with KieClient(kie_config) as client:
        status, _ = wait_terminal(client, client.submit(URL).task_id)
    assert status.state is TaskState.FAILED and status.fail_message == "Internal server error"


@pytest.mark.parametrize("style", ["body", "status"])
def test_transient_poll_errors_are_retried(sandbox: SandboxServer, kie_config: ServiceConfig, style: str) -> None:
    with KieClient(kie_config) as client:
        task_id = client.submit(URL).task_id
        time.sleep(0.2)
        sandbox.set_faults(error_style=style, endpoints=["recordInfo"], server_error={"count": 1},
                           maintenance={"count": 1}, non_json={"count": 1}, connection_reset={"count": 1},
                           rate_limit={"count": 1})
        status = client.get_status(task_id)
    assert status.state in (TaskState.RUNNING, TaskState.SUCCEEDED)
    assert sandbox.summary()["requests"]["recordInfo"] == 6  # five faults absorbed, sixth answered


@pytest.mark.parametrize("style", ["body", "status"])
def test_rate_limited_creates_are_retried_and_charged_once(sandbox: SandboxServer, kie_config: ServiceConfig,
                                                           style: str) -> None:
    sandbox.set_faults(error_style=style, rate_limit={"count": 3}, retry_after=0.05)
    with KieClient(kie_config) as client:
        assert client.submit(URL).task_id
    summary = sandbox.summary()
    assert summary["requests"]["createTask"] == 4
    assert summary["charges_by_video"] == {URL: 1}


def test_real_create_limit_is_absorbed_by_back_off(kie_config: ServiceConfig) -> None:
    from tests.conftest import fast_config

    with SandboxServer(fast_config(create_limit=3, create_window=0.5), accounts={KIE_KEY: 1000}) as server:
        config = service_config(server, KIE_KEY, retry=RetryPolicy(max_attempts=20, initial_delay=0.05,
                                                                   max_delay=0.3, budget_seconds=20))
        with KieClient(config) as client:
            ids = [client.submit(url).task_id for url in VIDEO_URLS[:7]]
        summary = server.summary()
    assert len(set(ids)) == 7
    assert summary["charges_by_video"] == {url: 1 for url in VIDEO_URLS[:7]}
    assert summary["requests"]["createTask"] > 7  # some were rejected with 429 and retried


def test_server_error_on_create_surfaces_without_retry(sandbox: SandboxServer, kie_config: ServiceConfig) -> None:
    sandbox.set_faults(endpoints=["createTask"], server_error={"count": 1})
    with KieClient(kie_config) as client, pytest.raises(ServiceUnavailableError):
        client.submit(URL)
    assert sandbox.summary()["requests"]["createTask"] == 1
    assert charged(sandbox) == 0


def test_lost_reply_on_create_is_reported_as_possibly_charged(sandbox: SandboxServer,
                                                               kie_config: ServiceConfig) -> None:
    sandbox.set_faults(endpoints=["createTask"], lost_reply={"count": 1})
    with KieClient(kie_config) as client, pytest.raises(SubmitOutcomeUnknownError, match="may have processed"):
        client.submit(URL)
    assert sandbox.summary()["requests"]["createTask"] == 1  # not repeated
    assert charged(sandbox) == 10  # and indeed it was charged: that is why it must not be repeated


def test_read_timeout_on_create_is_not_repeated(sandbox: SandboxServer) -> None:
    sandbox.set_faults(endpoints=["createTask"], slow_reply={"count": 1}, slow_seconds=1.0)
    config = service_config(sandbox, KIE_KEY, read_timeout=0.3)
    with KieClient(config) as client, pytest.raises(SubmitOutcomeUnknownError):
        client.submit(URL)
    time.sleep(1.0)
    assert sandbox.summary()["requests"]["createTask"] == 1
    assert charged(sandbox) == 10


def test_read_timeout_on_poll_is_retried(sandbox: SandboxServer) -> None:
    config = service_config(sandbox, KIE_KEY, read_timeout=0.3)
    with KieClient(config) as client:
        task_id = client.submit(URL).task_id
        sandbox.set_faults(endpoints=["recordInfo"], slow_reply={"count": 1}, slow_seconds=0.6)
        assert client.get_status(task_id).task_id == task_id


def test_connection_refused_is_retried_then_reported(sandbox: SandboxServer) -> None:
    dead = ServiceConfig(base_url="http://127.0.0.1:9", api_key=kie_key(), connect_timeout=0.5,
                         retry=RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.02))
    with KieClient(dead) as client, pytest.raises(ServiceUnavailableError, match="could not connect") as info:
        client.submit(URL)
    assert info.value.reached is False


@pytest.mark.parametrize("style", ["body", "status"])
def test_bad_key_is_an_auth_error_without_retry(sandbox: SandboxServer, style: str) -> None:
    sandbox.set_faults(error_style=style)
    with KieClient(service_config(sandbox, "wrong-key")) as client, pytest.raises(AuthError):
        client.credits()
    assert sandbox.summary()["requests"]["credit"] == 1


def test_insufficient_credits(sandbox: SandboxServer) -> None:
    sandbox.add_account("poor-key", credits=5)
    with KieClient(service_config(sandbox, "poor-key")) as client, pytest.raises(InsufficientCreditsError):
        client.submit(URL)
    assert charged(sandbox) == 0


def test_unknown_task(sandbox: SandboxServer, kie_config: ServiceConfig) -> None:
    with KieClient(kie_config) as client, pytest.raises(TaskNotFoundError):
        client.get_status("task_does_not_exist")


def test_persistent_rate_limit_gives_up_within_budget(sandbox: SandboxServer) -> None:
    sandbox.set_faults(rate_limit={"rate": 1.0})
    config = service_config(sandbox, KIE_KEY, retry=RetryPolicy(max_attempts=3, initial_delay=0.01))
    with KieClient(config) as client, pytest.raises(RateLimitedError):
        client.submit(URL)
    assert sandbox.summary()["requests"]["createTask"] == 3
    assert charged(sandbox) == 0


async def test_async_retries_under_faults(sandbox: SandboxServer, kie_config: ServiceConfig) -> None:
    sandbox.set_faults(endpoints=["credit"], server_error={"count": 2}, error_style="status")
    async with AsyncKieClient(kie_config) as client:
        assert (await client.credits()).balance == 10_000
        sandbox.set_faults(endpoints=["createTask"], lost_reply={"count": 1})
        with pytest.raises(SubmitOutcomeUnknownError):
            await client.submit(URL)
    assert sandbox.summary()["requests"] == {"credit": 3, "createTask": 1}


def test_user_agent_is_sent(sandbox: SandboxServer, kie_config: ServiceConfig) -> None:
    import httpx

    seen: list[str] = []
    client = httpx.Client(event_hooks={"request": [lambda r: seen.append(r.headers["user-agent"])]})
    with KieClient(kie_config, http_client=client) as kie:
        kie.credits()
    assert seen and seen[0].startswith("airflow-provider-sora/")


def kie_key():  # type: ignore[no-untyped-def]
    from pydantic import SecretStr

    return SecretStr(KIE_KEY)
