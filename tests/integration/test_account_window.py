"""The account-wide window on the real Redis, with the sandbox enforcing the account's limit over real sockets.

Three "processes" (each its own bucket and its own Redis client, as separate workers have) send at the full
configured rate at once: through the window the account sees no 429, without it they meet at 429s. The
Redis connection is an Airflow connection read through the redis provider's hook; each test uses a random
account and deletes its keys afterwards.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Iterator

import pytest

from airflow_sora.account_window import AccountWindow, account_digest, limiter_from_connection
from airflow_sora.ratelimit import TokenBucket
from airflow_sora.sandbox import SandboxServer
from airflow_sora.services import KieClient
from airflow_sora.services.transport import RetryPolicy
from tests.conftest import VIDEO_URLS, fast_config, service_config

redis = pytest.importorskip("redis", reason="the redis extra is not installed")
pytest.importorskip("limits", reason="the redis extra is not installed")

REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 13
CONN_ID = "sora_limiter_test"
LIMIT, WINDOW = 12, 4  # the sandbox's account limit; the window keeps one in hand for jitter (a busy CI host: 0.7 s)
RATE = LIMIT / WINDOW * 0.97
PATIENT = RetryPolicy(max_attempts=40, initial_delay=0.05, max_delay=0.5, budget_seconds=60)


@pytest.fixture
def redis_conn(monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {REDIS_HOST}:{REDIS_PORT} ({type(exc).__name__})")
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(
        {"conn_type": "redis", "host": REDIS_HOST, "port": REDIS_PORT, "extra": {"db": REDIS_DB}}))
    before = set(client.keys("*"))
    yield client
    created = set(client.keys("*")) - before
    if created:
        client.delete(*created)


def send_from_processes(server: SandboxServer, key: str, shared: bool, processes: int = 3,
                        each: int = 6) -> None:
    """``processes`` senders with buckets of their own at the full configured rate, all starting at once."""
    config = service_config(server, key, create_rate=RATE, retry=PATIENT)
    account = account_digest("kie", config.base_url, key)
    start = threading.Barrier(processes)

    def sender(index: int) -> None:
        window = AccountWindow(lambda: limiter_from_connection(CONN_ID), account, limit=LIMIT - 1,
                               window=WINDOW) if shared else None
        with KieClient(config) as client:
            client.transport.limiter = TokenBucket(RATE, account=window, window=WINDOW)
            client.credits()  # the connection is open before the first create: its set-up cannot delay one
            start.wait()
            for url in VIDEO_URLS[index * each:(index + 1) * each]:
                client.submit(url)

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(processes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.mark.parametrize("shared", [True, False], ids=["redis-window", "own-buckets"])
def test_processes_sharing_the_redis_window_keep_the_account_under_its_limit(
        redis_conn: redis.Redis, shared: bool) -> None:
    key = f"kie-SECRET-{secrets.token_hex(6)}"
    with SandboxServer(fast_config(create_limit=LIMIT, create_window=float(WINDOW)), accounts={key: 10_000}) as server:
        send_from_processes(server, key, shared)
        summary = server.summary()
    refused = summary["requests"]["createTask"] - 18
    assert len(summary["charges_by_video"]) == 18 and set(summary["charges_by_video"].values()) == {1}
    if shared:
        assert refused == 0, f"{refused} creates refused with the account-wide window"
        keys = [k.decode() for k in redis_conn.keys("*")]
        assert any(account_digest("kie", server.url, key) in k for k in keys)
        assert not any(key in k or key[-12:] in k for k in keys)  # the account is named by its hash only
    else:
        assert refused > 0  # each at the full rate: the account's limit refuses some (they are retried free)


def test_an_unreachable_redis_falls_back_to_local_pacing_with_one_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SORA_LIMITER_DOWN", json.dumps(
        {"conn_type": "redis", "host": "127.0.0.1", "port": 1}))  # nothing listens on port 1
    key = f"kie-SECRET-{secrets.token_hex(6)}"
    with SandboxServer(fast_config(create_limit=20, create_window=4.0), accounts={key: 10_000}) as server:
        config = service_config(server, key, create_rate=20 / 4.0 * 0.97, rate_limiter_conn_id="sora_limiter_down")
        with caplog.at_level(logging.WARNING), KieClient(config) as client:
            for url in VIDEO_URLS[:4]:
                client.submit(url)
        charges = server.summary()["charges_by_video"]
    assert len(charges) == 4  # the batch went on
    warnings = [r for r in caplog.records if "rate limiter" in r.getMessage()]
    assert len(warnings) == 1 and "sora_limiter_down" in warnings[0].getMessage()
    assert key not in caplog.text
