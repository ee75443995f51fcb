"""The create bucket alone, on a fake clock: spacing, bursts, pauses, sharing."""

from __future__ import annotations

import pytest

from airflow_sora.ratelimit import SAFETY_MARGIN, TokenBucket, create_burst, kie_default_rate, shared_bucket
from tests.unit.clock import Clock


def test_reservations_are_spaced_at_the_rate() -> None:
    clock = Clock(100)
    bucket = TokenBucket(rate=2.0, capacity=1, clock=clock)
    assert [bucket.reserve() for _ in range(5)] == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_any_window_holds_at_most_the_limit() -> None:
    """With capacity 1, sends at the reserved times never put more than rate*W + 1 in a window of W."""
    clock = Clock(100)
    bucket = TokenBucket(rate=kie_default_rate(), capacity=1, clock=clock)
    send_times = [clock.now + bucket.reserve() for _ in range(200)]
    for start in send_times:
        assert sum(start <= t < start + 10.0 for t in send_times) <= 20


@pytest.mark.parametrize(("limit", "burst"), [(20, 1), (100, 1), (200, 3), (500, 7)])
def test_a_raised_limit_saves_up_a_few_creates_and_any_window_still_holds_its_limit(limit: int, burst: int) -> None:
    """Half the safety margin may go out at once (Kie's own 20 per 10 s: none); the other half stays spare."""
    assert create_burst(limit) == burst
    clock = Clock(100)
    bucket = TokenBucket(rate=limit / 10.0 * SAFETY_MARGIN, capacity=create_burst(limit), clock=clock)
    send_times = []
    for k in range(4 * limit):
        clock.now += 0.5 if k % 50 == 0 else 0.0  # pauses now and then: the bucket saves up, then bursts
        send_times.append(clock.now + bucket.reserve())
    for start in send_times:
        assert sum(start <= t < start + 10.0 for t in send_times) <= limit * (1 + SAFETY_MARGIN) / 2 + 1


def test_tokens_refill_up_to_capacity_only() -> None:
    clock = Clock(100)
    bucket = TokenBucket(rate=1.0, capacity=3, clock=clock)
    clock.now += 1000
    assert [bucket.reserve() for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]


def test_pause_delays_everyone() -> None:
    clock = Clock(100)
    bucket = TokenBucket(rate=10.0, capacity=1, clock=clock)
    bucket.reserve()
    bucket.pause(5.0)
    assert bucket.reserve() == 5.0
    clock.now += 6
    assert bucket.reserve() == 0.0


def test_buckets_are_shared_per_account_and_endpoint_and_keyed_by_hash() -> None:
    a = shared_bucket("kie", "http://x/", "key-1", 2.0)
    assert shared_bucket("kie", "http://x", "key-1", 2.0) is a
    assert shared_bucket("kie", "http://x", "key-2", 2.0) is not a
    from airflow_sora import ratelimit

    assert not any("key-1" in name for name in ratelimit._BUCKETS)


def test_invalid_settings() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0)
