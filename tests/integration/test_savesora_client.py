"""SaveSoraClient and AsyncSaveSoraClient against the sandbox over real sockets, with charges checked."""

from __future__ import annotations

import httpx
import pytest

from airflow_sora.sandbox import SandboxServer
from airflow_sora.services import (
    AsyncSaveSoraClient,
    AuthError,
    InsufficientCreditsError,
    RateLimitedError,
    SaveSoraClient,
    ServiceConfig,
    ServiceUnavailableError,
    SubmitOutcomeUnknownError,
    TaskFailedError,
)
from tests.conftest import SAVESORA_KEY, VIDEO_URLS, service_config

URL = VIDEO_URLS[1]


def test_remove_sync(sandbox: SandboxServer, savesora_config: ServiceConfig) -> None:
    with SaveSoraClient(savesora_config) as client:
        submission = client.submit(URL)
        assert submission.finished and submission.task_id is None
        result = submission.result
        assert result.post_id == URL.rsplit("/", 1)[1]
        assert result.prompt and result.thumbnail_url and result.source_url
        assert result.remaining_credits == 999
        video = httpx.get(result.clean_url)
        assert video.status_code == 200 and video.content[4:8] == b"ftyp"
        assert client.credits().balance == 999
    assert sandbox.summary()["credits_by_video"] == {URL: 1}


async def test_remove_async(sandbox: SandboxServer, savesora_config: ServiceConfig) -> None:
    async with AsyncSaveSoraClient(savesora_config) as client:
        submission = await client.submit(URL)
        assert submission.result is not None and submission.result.clean_url.startswith(sandbox.url)
        assert (await client.credits()).balance == 999


@pytest.mark.parametrize("style", ["body", "status"])
def test_failed_removal_is_refunded(sandbox: SandboxServer, savesora_config: ServiceConfig, style: str) -> None:
    sandbox.set_faults(error_style=style, task_fail={"count": 1})
    with SaveSoraClient(savesora_config) as client, pytest.raises(TaskFailedError) as info:
        client.submit(URL)
    assert info.value.refunded
    charges = sandbox.charges()
    assert len(charges) == 1 and charges[0]["refunded"] is True
    assert sandbox.summary()["credits_by_video"] == {}


@pytest.mark.parametrize("style", ["body", "status"])
def test_5001_on_remove_surfaces_without_retry(sandbox: SandboxServer, savesora_config: ServiceConfig,
                                               style: str) -> None:
    sandbox.set_faults(error_style=style, endpoints=["download"], server_error={"count": 1})
    with SaveSoraClient(savesora_config) as client, pytest.raises(ServiceUnavailableError):
        client.submit(URL)
    assert sandbox.summary()["requests"]["download"] == 1


def test_credits_call_is_retried_on_5001(sandbox: SandboxServer, savesora_config: ServiceConfig) -> None:
    sandbox.set_faults(endpoints=["credits"], server_error={"count": 2})
    with SaveSoraClient(savesora_config) as client:
        assert client.credits().balance == 1000
    assert sandbox.summary()["requests"]["credits"] == 3


def test_rate_limited_remove_is_retried(sandbox: SandboxServer, savesora_config: ServiceConfig) -> None:
    sandbox.set_faults(endpoints=["download"], rate_limit={"count": 2}, error_style="status")
    with SaveSoraClient(savesora_config) as client:
        assert client.submit(URL).finished
    assert sandbox.summary()["charges_by_video"] == {URL: 1}


def test_lost_reply_is_possibly_charged(sandbox: SandboxServer, savesora_config: ServiceConfig) -> None:
    sandbox.set_faults(endpoints=["download"], lost_reply={"count": 1})
    with SaveSoraClient(savesora_config) as client, pytest.raises(SubmitOutcomeUnknownError):
        client.submit(URL)
    assert sandbox.summary()["charges_by_video"] == {URL: 1}


@pytest.mark.parametrize("style", ["body", "status"])
def test_auth_and_credit_errors(sandbox: SandboxServer, style: str) -> None:
    sandbox.set_faults(error_style=style)
    with SaveSoraClient(service_config(sandbox, "nope")) as client, pytest.raises(AuthError):
        client.submit(URL)
    sandbox.add_account("empty", credits=0)
    with SaveSoraClient(service_config(sandbox, "empty")) as client, \
            pytest.raises(InsufficientCreditsError) as info:
        client.submit(URL)
    assert (info.value.balance, info.value.required) == (0, 1)
    assert sandbox.summary()["credits_by_video"] == {}


def test_persistent_429(sandbox: SandboxServer) -> None:
    from airflow_sora.services import RetryPolicy

    sandbox.set_faults(rate_limit={"rate": 1.0})
    config = service_config(sandbox, SAVESORA_KEY, retry=RetryPolicy(max_attempts=2, initial_delay=0.01))
    with SaveSoraClient(config) as client, pytest.raises(RateLimitedError):
        client.submit(URL)
