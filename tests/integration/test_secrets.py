"""API keys never reach logs or exception text, for either service, even on error and retry paths."""

from __future__ import annotations

import logging
import traceback

import pytest

from airflow_sora.hooks import KieHook, SaveSoraHook
from airflow_sora.sandbox import SandboxServer
from airflow_sora.services import KieClient, SaveSoraClient, ServiceError
from tests.conftest import FAST_RETRY, KIE_KEY, SAVESORA_KEY, VIDEO_URLS, service_config


def exercise(client: KieClient | SaveSoraClient, sandbox: SandboxServer, errors: list[str]) -> None:
    """Success, retries under every transient fault, and permanent failures, collecting error texts."""
    client.credits()
    client.submit(VIDEO_URLS[0])
    for faults in ({"server_error": {"count": 2}, "error_style": "status"},
                   {"non_json": {"count": 1}, "connection_reset": {"count": 1}},
                   {"lost_reply": {"count": 1}}, {"rate_limit": {"rate": 1.0}}, {"task_fail": {"count": 1}}):
        sandbox.set_faults(**faults)
        for call in (client.credits, lambda: client.submit(VIDEO_URLS[1])):
            try:
                call()
            except ServiceError as error:
                errors += [str(error), repr(error), "".join(traceback.format_exception(error))]
        sandbox.set_faults(server_error={"count": 0}, non_json={"count": 0}, connection_reset={"count": 0},
                           lost_reply={"count": 0}, rate_limit={"rate": 0.0}, task_fail={"count": 0})


@pytest.mark.parametrize(("client_class", "key"), [(KieClient, KIE_KEY), (SaveSoraClient, SAVESORA_KEY)])
def test_keys_never_logged_or_raised(sandbox: SandboxServer, caplog: pytest.LogCaptureFixture,
                                     client_class: type, key: str) -> None:
    caplog.set_level(logging.DEBUG)  # httpx, httpcore, the sandbox and our own loggers, at their chattiest
    errors: list[str] = []
    config = service_config(sandbox, key)
    with client_class(config) as client:
        exercise(client, sandbox, errors)
        errors += [repr(client), repr(config), str(config)]
    with client_class(service_config(sandbox, key + "-wrong")) as bad:
        with pytest.raises(ServiceError) as info:
            bad.credits()
        errors += [str(info.value), "".join(traceback.format_exception(info.value))]
    assert len(caplog.records) > 10 and errors  # the scan looked at something
    assert key not in caplog.text
    for text in errors:
        assert key not in text


def test_hooks_do_not_leak_keys(sandbox_connections: SandboxServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    results = [KieHook().test_connection(), SaveSoraHook().test_connection()]
    sandbox_connections.set_faults(server_error={"rate": 1.0}, error_style="status")
    results += [KieHook(retry=FAST_RETRY).test_connection(), SaveSoraHook(retry=FAST_RETRY).test_connection()]
    assert [ok for ok, _ in results] == [True, True, False, False]
    for secret in (KIE_KEY, SAVESORA_KEY):
        assert secret not in caplog.text
        assert all(secret not in message for _, message in results)
