"""Shared fixtures: an isolated Airflow home, the sandbox over real sockets, connections pointing at it."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Airflow reads its home at import time: give the whole test session its own, never the user's.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="sora-test-airflow-"))
os.environ.setdefault("AIRFLOW_HOME", str(_AIRFLOW_HOME))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")

from pydantic import SecretStr  # noqa: E402

from airflow_sora.sandbox import SandboxConfig, SandboxServer  # noqa: E402
from airflow_sora.services import RetryPolicy, ServiceConfig  # noqa: E402

# Recognisable keys: the secret scans search every log and error for them.
KIE_KEY = "kie-SECRET-7f3a9c1e5b"
SAVESORA_KEY = "savesora-SECRET-2d8e4f6a1c"
FAST_RETRY = RetryPolicy(max_attempts=6, initial_delay=0.02, max_delay=0.2, budget_seconds=20)

VIDEO_URLS = [f"https://sora.chatgpt.com/p/s_{i:032x}" for i in range(1, 41)]


def fast_config(**overrides: object) -> SandboxConfig:
    values: dict[str, object] = {"latency": 0.4, "latency_jitter": 0.1, "invisible_for": 0.1,
                                 "savesora_latency": 0.01, "seed": 7}
    values.update(overrides)
    return SandboxConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(fast_config(), accounts={KIE_KEY: 10_000, SAVESORA_KEY: 1_000}) as server:
        yield server


def service_config(sandbox: SandboxServer, key: str, **overrides: object) -> ServiceConfig:
    values: dict[str, object] = {"base_url": sandbox.url, "api_key": SecretStr(key), "read_timeout": 10.0,
                                 "connect_timeout": 2.0, "allow_private_result_hosts": True,
                                 "retry": FAST_RETRY}
    values.update(overrides)
    return ServiceConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
def kie_config(sandbox: SandboxServer) -> ServiceConfig:
    return service_config(sandbox, KIE_KEY)


@pytest.fixture
def savesora_config(sandbox: SandboxServer) -> ServiceConfig:
    return service_config(sandbox, SAVESORA_KEY)


def connection_env(conn_type: str, base_url: str, key: str, **extra: object) -> str:
    """An ``AIRFLOW_CONN_*`` value (JSON form) for a connection at ``base_url``."""
    return json.dumps({"conn_type": conn_type, "host": base_url, "password": key,
                       "extra": {"allow_private_result_hosts": True, **extra}})


@pytest.fixture
def sandbox_connections(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> SandboxServer:
    """``kie_default`` and ``savesora_default`` pointing at the sandbox, through environment variables."""
    monkeypatch.setenv("AIRFLOW_CONN_KIE_DEFAULT", connection_env("kie", sandbox.url, KIE_KEY))
    monkeypatch.setenv("AIRFLOW_CONN_SAVESORA_DEFAULT", connection_env("savesora", sandbox.url, SAVESORA_KEY))
    return sandbox
