"""Shared fixtures: an isolated Airflow home, the sandbox over real sockets, connections pointing at it."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Airflow reads its home at import time: give the whole test session its own, never the user's.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="sora-test-airflow-"))
os.environ.setdefault("AIRFLOW_HOME", str(_AIRFLOW_HOME))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
# The host's window of creates (on by default without Redis): the session's own directory, never the user's;
# each test then gets one of its own (``own_host_window``), so tests on one sandbox do not pace each other.
os.environ.setdefault("AIRFLOW_SORA_HOST_WINDOW_DIR", tempfile.mkdtemp(prefix="sora-test-windows-"))

from pydantic import SecretStr  # noqa: E402

from airflow_sora.sandbox import SandboxConfig, SandboxServer  # noqa: E402
from airflow_sora.services import RetryPolicy, ServiceConfig  # noqa: E402

# Recognisable keys: the secret scans search every log and error for them.
KIE_KEY = "kie-SECRET-7f3a9c1e5b"
SAVESORA_KEY = "savesora-SECRET-2d8e4f6a1c"
FAST_RETRY = RetryPolicy(max_attempts=6, initial_delay=0.02, max_delay=0.2, budget_seconds=20)

# Behaviour tests create at full speed; pacing has its own tests (test_rate_limit.py).
UNPACED = 10_000.0

VIDEO_URLS = [f"https://sora.chatgpt.com/p/s_{i:032x}" for i in range(1, 41)]


def fast_config(**overrides: object) -> SandboxConfig:
    values: dict[str, object] = {"latency": 0.4, "latency_jitter": 0.1, "invisible_for": 0.1,
                                 "savesora_latency": 0.01, "seed": 7}
    values.update(overrides)
    return SandboxConfig(**values)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def own_host_window(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's creates take their slots from a window of its own, as separate hosts would."""
    directory = tmp_path_factory.mktemp("host-window")
    directory.chmod(0o700)
    monkeypatch.setenv("AIRFLOW_SORA_HOST_WINDOW_DIR", str(directory))


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(fast_config(), accounts={KIE_KEY: 10_000, SAVESORA_KEY: 1_000}) as server:
        yield server


def service_config(sandbox: SandboxServer, key: str, **overrides: object) -> ServiceConfig:
    values: dict[str, object] = {"base_url": sandbox.url, "api_key": SecretStr(key), "read_timeout": 10.0,
                                 "connect_timeout": 2.0, "allow_private_result_hosts": True,
                                 "retry": FAST_RETRY, "create_rate": UNPACED}
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
                       "extra": {"allow_private_result_hosts": True, "create_limit": UNPACED, "create_window": 1,
                                 **extra}})


@pytest.fixture
def sandbox_connections(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> SandboxServer:
    """``kie_default`` and ``savesora_default`` pointing at the sandbox, through environment variables."""
    monkeypatch.setenv("AIRFLOW_CONN_KIE_DEFAULT", connection_env("kie", sandbox.url, KIE_KEY))
    monkeypatch.setenv("AIRFLOW_CONN_SAVESORA_DEFAULT", connection_env("savesora", sandbox.url, SAVESORA_KEY))
    return sandbox


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 server over real HTTP; ``aws_default`` points at it."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"endpoint_url": url, "region_name": "us-east-1"},
    })
    # Airflow caches one filesystem per connection id for the process: a test that only built an
    # ``s3://aws_default@...`` path earlier must not leave one pointing at the real AWS endpoint.
    from airflow.sdk.io import store

    from airflow_sora.storage import _s3_client

    for alias in [a for a in store._STORE_CACHE if a.startswith(("s3-", "s3a-", "s3n-"))]:
        del store._STORE_CACHE[alias]
    _s3_client.cache_clear()
    yield url
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: str) -> str:
    """A fresh, empty bucket per test."""
    import uuid

    name = f"clean-{uuid.uuid4().hex[:12]}"
    s3_client(s3_server).create_bucket(Bucket=name)
    return name


def s3_client(s3_server: str) -> Any:
    """A boto3 client of its own for the test server: checks what landed independently of the provider."""
    import boto3

    return boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def s3_keys(s3_server: str, bucket: str) -> dict[str, int]:
    """Every object in the bucket with its size."""
    pages = s3_client(s3_server).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}
