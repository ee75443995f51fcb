"""Both hooks read real Airflow connections (from the environment) and talk to the sandbox."""

from __future__ import annotations

import json

import pytest

from airflow_sora.hooks import KieHook, SaveSoraHook, ahook_for_connection, hook_for_connection
from airflow_sora.sandbox import SandboxServer
from airflow_sora.services import AuthError, KieClient, SaveSoraClient
from tests.conftest import KIE_KEY, SAVESORA_KEY, VIDEO_URLS, connection_env


def test_kie_hook_builds_a_client_from_the_connection(sandbox_connections: SandboxServer) -> None:
    hook = KieHook()
    config = hook.service_config()
    assert config.base_url == sandbox_connections.url
    assert config.api_key.get_secret_value() == KIE_KEY
    assert config.allow_private_result_hosts is True
    with hook.get_conn() as client:
        assert isinstance(client, KieClient)
        assert client.credits().balance == 10_000


def test_savesora_hook_defaults_to_a_long_read_timeout(sandbox_connections: SandboxServer) -> None:
    hook = SaveSoraHook()
    assert hook.service_config().read_timeout >= 120
    with hook.get_conn() as client:
        assert isinstance(client, SaveSoraClient)
        assert client.submit(VIDEO_URLS[0]).finished


@pytest.mark.parametrize(("hook_class", "balance"), [(KieHook, 10_000), (SaveSoraHook, 1_000)])
def test_test_connection_reports_the_balance(sandbox_connections: SandboxServer, hook_class: type,
                                             balance: int) -> None:
    ok, message = hook_class().test_connection()
    assert ok, message
    assert f"balance {balance} credits" in message


def test_test_connection_with_a_bad_key(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_KIE_BAD", connection_env("kie", sandbox.url, "bad-key-123"))
    ok, message = KieHook("kie_bad").test_connection()
    assert not ok and "access permissions" in message and "bad-key-123" not in message


async def test_async_access_reads_the_connection_with_the_async_api(sandbox_connections: SandboxServer) -> None:
    hook = await ahook_for_connection("savesora_default")
    assert isinstance(hook, SaveSoraHook)
    async with await hook.aget_conn() as client:
        assert (await client.credits()).balance == 1_000
    async with await KieHook().aget_conn() as kie:
        assert (await kie.credits()).balance == 10_000


def test_service_follows_the_connection_type(sandbox_connections: SandboxServer,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(hook_for_connection("kie_default"), KieHook)
    assert isinstance(hook_for_connection("savesora_default"), SaveSoraHook)
    monkeypatch.setenv("AIRFLOW_CONN_OTHER", json.dumps({"conn_type": "http", "host": "x"}))
    with pytest.raises(ValueError, match="use a 'kie' or 'savesora' connection"):
        hook_for_connection("other")


def test_missing_key_is_reported_before_any_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_NOKEY", json.dumps({"conn_type": "kie"}))
    with pytest.raises(AuthError, match="no API key"):
        KieHook("nokey").get_conn()


def test_extras_in_both_forms_and_uri_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_K1", json.dumps({
        "conn_type": "kie", "password": KIE_KEY,
        "extra": {"extra__kie__upload_method": "oss", "read_timeout": "45", "max_retries": 2}}))
    config = KieHook("k1").service_config()
    assert config.base_url == "https://api.kie.ai"  # the real service by default
    assert (config.upload_method, config.read_timeout, config.retry.max_attempts) == ("oss", 45.0, 3)
    monkeypatch.setenv("AIRFLOW_CONN_K2", f"kie://:{SAVESORA_KEY}@proxy.example.com:8443")
    assert KieHook("k2").service_config().base_url == "https://proxy.example.com:8443"
    monkeypatch.setenv("AIRFLOW_CONN_K3", json.dumps({"conn_type": "kie", "password": "k",
                                                      "extra": {"upload_method": "ftp"}}))
    with pytest.raises(ValueError, match="upload_method must be one of"):
        KieHook("k3").service_config()


def test_legacy_form_classmethods() -> None:
    for hook in (KieHook, SaveSoraHook):
        behaviour = hook.get_ui_field_behaviour()
        assert behaviour["relabeling"] == {"host": "Base URL", "password": "API key"}
        assert set(behaviour["hidden_fields"]) == {"login", "port", "schema"}
        assert behaviour["placeholders"]["host"].startswith("https://")
    try:
        import wtforms  # noqa: F401  (only installed with the legacy FAB UI)
    except ImportError:
        # Airflow's providers manager treats exactly this ImportError as "no legacy widgets here".
        with pytest.raises(ImportError) as info:
            KieHook.get_connection_form_widgets()
        assert info.value.name == "wtforms"
        return
    assert set(KieHook.get_connection_form_widgets()) == {"read_timeout", "allow_private_result_hosts",
                                                          "upload_method"}
    assert "upload_method" not in SaveSoraHook.get_connection_form_widgets()
