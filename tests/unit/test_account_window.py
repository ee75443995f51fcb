"""The account-wide window's logic with a fake store: take a slot or wait for one, fall back when it fails."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import pytest
from limits import RateLimitItem
from limits.util import WindowStats

from airflow_sora import account_window
from airflow_sora.account_window import RETRY_AFTER, AccountWindow, account_digest
from airflow_sora.ratelimit import TokenBucket, kie_default_rate, shared_bucket
from tests.unit.clock import Clock

KEY = "kie-SECRET-unit-4c1d"


@dataclass
class FakeLimiter:
    """A moving-window limiter's two calls: grants ``free`` hits, then says the window frees ``reset_in``
    seconds from now; raises ``error`` if set."""

    free: int = 1_000
    reset_in: float = 2.0
    error: Exception | None = None
    hits: list[tuple[str, ...]] = field(default_factory=list)

    def hit(self, item: RateLimitItem, *identifiers: str) -> bool:
        if self.error:
            raise self.error
        self.hits.append(identifiers)
        if self.free <= 0:
            return False
        self.free -= 1
        return True

    def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        return WindowStats(time.time() + self.reset_in, 0)


def window(limiter: FakeLimiter, clock: Clock | None = None) -> AccountWindow:
    return AccountWindow(lambda: limiter, account_digest("kie", "http://x", KEY), limit=19, window=10,  # type: ignore[arg-type, return-value]
                         clock=clock or Clock(100))


def test_a_free_slot_is_taken_at_once() -> None:
    limiter = FakeLimiter()
    assert window(limiter).reserve() == 0.0
    assert len(limiter.hits) == 1


def test_a_full_window_says_when_a_slot_frees() -> None:
    wait = window(FakeLimiter(free=0, reset_in=2.0)).reserve()
    assert wait is not None and 1.9 < wait <= 2.0 + account_window.WAKE_SPREAD + 0.1


def test_acquire_waits_until_the_store_grants_a_slot() -> None:
    limiter = FakeLimiter(free=0, reset_in=1.5)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 2:
            limiter.free = 1  # a slot frees after the second wait

    assert window(limiter).acquire(sleep) == pytest.approx(sum(slept))
    assert len(slept) == 2 and len(limiter.hits) == 3


def test_an_unavailable_store_hands_pacing_back_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(100)
    limiter = FakeLimiter(error=ConnectionError(f"refused (key {KEY[:4]}...)"))
    shared = window(limiter, clock)
    with caplog.at_level(logging.WARNING, logger=account_window.__name__):
        assert shared.reserve() is None and not shared.in_charge
        clock.now += RETRY_AFTER / 2
        assert shared.reserve() is None  # not asked again yet
        clock.now += RETRY_AFTER
        assert shared.in_charge and shared.reserve() is None  # asked again, still down: no second warning
        limiter.error = None
        clock.now += RETRY_AFTER
        assert shared.reserve() == 0.0 and shared.in_charge
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and "unavailable" in warnings[0] and "answers again" in warnings[1]
    assert KEY not in caplog.text


def test_the_window_key_names_the_account_by_a_hash_only() -> None:
    shared = window(FakeLimiter())
    assert KEY not in shared.key and account_digest("kie", "http://x", KEY) in shared.key
    assert account_digest("kie", "http://x/", KEY) == account_digest("kie", "http://x", KEY)
    assert account_digest("kie", "http://y", KEY) != account_digest("kie", "http://x", KEY)


def test_while_the_window_is_in_charge_a_refusal_pauses_without_slowing() -> None:
    clock = Clock(100)
    bucket = TokenBucket(kie_default_rate(), clock=clock, account=window(FakeLimiter(), clock))
    bucket.reserve()
    bucket.on_throttle(2.0)
    assert bucket.rate == kie_default_rate()
    assert bucket.reserve() == pytest.approx(2.0)  # the Retry-After, not the adaptive hold


def test_when_the_window_is_down_the_bucket_adapts_as_without_it() -> None:
    clock = Clock(100)
    shared = window(FakeLimiter(error=ConnectionError("down")), clock)
    bucket = TokenBucket(kie_default_rate(), clock=clock, account=shared)
    assert bucket.acquire(lambda s: None) == 0.0  # the store failed: the create goes on local pacing
    bucket.on_throttle(0.5)
    assert bucket.rate < kie_default_rate()


def test_shared_bucket_holds_the_configured_rate_in_the_account_window() -> None:
    bucket = shared_bucket("kie", "http://unit-window", KEY, kie_default_rate(), redis_conn_id="sora_limiter")
    assert bucket.account is not None
    assert bucket.account.key.endswith("/19/10/second") and KEY not in bucket.account.key
    assert shared_bucket("kie", "http://unit-window", KEY, kie_default_rate()) is not bucket  # without: its own


def test_in_an_event_loop_the_store_is_asked_from_a_thread() -> None:
    import asyncio
    import threading

    asked_from: list[threading.Thread] = []
    limiter = FakeLimiter(free=0, reset_in=0.01)
    hit = limiter.hit

    def hit_once_freed(item: RateLimitItem, *identifiers: str) -> bool:
        asked_from.append(threading.current_thread())
        limiter.free = 1 if len(asked_from) == 2 else limiter.free
        return hit(item, *identifiers)

    limiter.hit = hit_once_freed  # type: ignore[method-assign]

    async def main() -> float:
        return await window(limiter).aacquire()

    assert asyncio.run(main()) > 0
    assert len(asked_from) == 2 and threading.main_thread() not in asked_from


def test_the_connection_names_the_redis_connection_and_its_window_follows_the_account_limit() -> None:
    from airflow.models.connection import Connection

    from airflow_sora.hooks.base import config_from_connection

    conn = Connection(conn_id="kie_unit", conn_type="kie", host="http://unit-conn", password=KEY,
                      extra={"create_limit": 4, "create_window": 2, "rate_limiter_conn_id": "sora_limiter"})
    config = config_from_connection(conn, conn_type="kie", default_base_url="https://api.kie.ai",
                                    default_read_timeout=30.0)
    assert config.rate_limiter_conn_id == "sora_limiter" and config.create_window == 2.0
    bucket = config.create_limiter("kie", kie_default_rate())
    assert bucket is not None and bucket.account is not None
    assert bucket.account.key.endswith("/3/2/second")  # 4 per 2 s with the 3% margin, rounded down


def test_without_the_redis_extra_the_process_paces_alone_with_a_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "limits", None)  # as if the extra were not installed
    with caplog.at_level(logging.WARNING):
        bucket = shared_bucket("kie", "http://unit-no-extra", KEY, kie_default_rate(), redis_conn_id="sora_limiter")
    assert bucket.account is None and bucket.adaptive is not None
    assert "redis extra" in caplog.text and KEY not in caplog.text
