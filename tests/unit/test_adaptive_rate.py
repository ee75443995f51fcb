"""The adaptive create rate as pure logic on a fake clock: cut on refusals, climb back, never above the limit."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator

import pytest

from airflow_sora.ratelimit import ADAPTIVE_ENV, AdaptiveRate, TokenBucket, kie_default_rate, shared_bucket
from tests.unit.clock import Clock

MAX = kie_default_rate()  # 1.94 creates/s: Kie's 20 per 10 s with the margin


def test_a_lone_process_that_is_never_refused_stays_at_the_full_rate() -> None:
    clock = Clock(100)
    bucket = TokenBucket(MAX, clock=clock)
    sent = []
    for _ in range(500):
        clock.now += bucket.reserve()
        sent.append(clock.now)
        bucket.on_success()
    assert bucket.rate == MAX
    assert sent[-1] - sent[0] == pytest.approx(499 / MAX)


def test_the_first_refusal_cuts_to_this_process_share_of_the_window() -> None:
    rate = AdaptiveRate(MAX, window=10.0)
    for t in (0.0, 0.5, 1.0, 1.5, 2.0):  # 5 of the account's 20 in the window: a quarter of the limit
        rate.on_success(t)
    new, hold_until = rate.on_throttle(2.6)
    assert new == pytest.approx(0.95 * 5 / 10.0)
    assert hold_until == pytest.approx(10.0)  # the window stays full until this process's first create leaves it


def test_later_refusals_cut_multiplicatively_down_to_a_floor() -> None:
    rate = AdaptiveRate(MAX, window=10.0)
    for t in (0.0, 0.5, 1.0, 1.5, 2.0):
        rate.on_success(t)
    first, _ = rate.on_throttle(2.6)
    second, _ = rate.on_throttle(12.0)
    assert second == pytest.approx(0.9 * first)
    for i in range(200):
        rate.on_throttle(1.0 + i)
    assert rate.rate == pytest.approx(rate.min_rate) and rate.min_rate == pytest.approx(MAX / 16)


def test_a_refusal_holds_at_least_one_interval_at_the_new_rate() -> None:
    rate = AdaptiveRate(MAX, window=10.0)
    new, hold_until = rate.on_throttle(5.0)  # nothing accepted yet: no share to go by
    assert new == pytest.approx(0.9 * MAX)
    assert hold_until == pytest.approx(5.0 + 1 / new)


def test_while_creates_succeed_the_rate_climbs_back_and_never_above_the_maximum() -> None:
    rate = AdaptiveRate(MAX, window=10.0)
    for t in (0.0, 0.5, 1.0, 1.5, 2.0):
        rate.on_success(t)
    _, resume = rate.on_throttle(2.6)
    rates = []
    t = resume
    while t < resume + 300:
        rates.append(rate.on_success(t))
        t += 1 / rate.rate
    assert rates == sorted(rates)  # only up while nothing is refused
    assert rates[0] < 0.5 < max(rates)  # back to the share it was refused at, then beyond
    assert max(rates) == MAX and rate.rate == MAX  # all the way back, and no further
    plateau = [r for r in rates if 0.45 < r < 0.55]
    assert len(plateau) >= 5  # gently: it lingers near the rate at which it was refused


def test_a_process_whose_peers_left_is_back_at_the_full_rate_within_half_a_minute() -> None:
    rate = AdaptiveRate(MAX, window=10.0)
    for t in (0.0, 1.0):  # a tenth of the account's window: seven peers had the rest
        rate.on_success(t)
    low, resume = rate.on_throttle(2.6)
    assert low == pytest.approx(0.95 * 0.2)
    t = resume
    while rate.rate < MAX:  # the peers are gone: every create is accepted
        rate.on_success(t)
        t += 1 / rate.rate
    assert t - resume <= 4 * 10.0  # three windows (and the plateau), not the minutes a 9-window climb took


def test_bucket_hold_paces_the_creates_after_it_at_the_new_rate() -> None:
    clock = Clock(100)
    bucket = TokenBucket(MAX, clock=clock)
    bucket.reserve()
    bucket.on_throttle(0.1)  # refused before anything was accepted: no share to go by, cut by beta
    first = bucket.reserve()
    second = bucket.reserve()
    assert bucket.rate == pytest.approx(0.9 * MAX)
    assert first == pytest.approx(1 / bucket.rate)  # held one interval at the new rate (more than the 0.1 s)
    assert second - first == pytest.approx(1 / bucket.rate)  # and no burst after the hold


def test_without_adaptation_a_refusal_only_pauses() -> None:
    clock = Clock(100)
    bucket = TokenBucket(2.0, clock=clock, adaptive=False)
    bucket.reserve()
    bucket.on_throttle(5.0)
    assert bucket.reserve() == 5.0 and bucket.rate == 2.0
    bucket.on_success()
    assert bucket.rate == 2.0


def test_the_environment_switch_turns_adaptation_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ADAPTIVE_ENV, "0")
    assert shared_bucket("kie", "http://adaptive-off", "key-1", 2.0).adaptive is None
    monkeypatch.delenv(ADAPTIVE_ENV)
    assert shared_bucket("kie", "http://adaptive-on", "key-1", 2.0).adaptive is not None


# several processes on one account, simulated ---------------------------------------------------------------
def simulate(processes: int, creates_each: int, adaptive: bool,
             starts: list[float] | None = None) -> tuple[int, int, float]:
    """Processes with buckets of their own against a 20-per-10-s sliding window; (sent, refused, end time).

    Each process sends its creates one after another as its bucket allows; a refusal is retried after the
    transport's first back-off (0.5 s here), as ``SyncTransport`` does. ``starts``: when each process starts
    (default: 0.05 s apart).
    """
    clock = Clock(100)
    window: deque[float] = deque()
    sent = refused = 0

    def process(index: int) -> Iterator[float]:
        bucket = TokenBucket(MAX, clock=clock, adaptive=adaptive)
        yield starts[index] if starts else 0.05 * index  # started a moment apart
        for _ in range(creates_each):
            while True:
                wait = bucket.reserve()
                if wait:
                    yield wait
                nonlocal sent, refused
                sent += 1
                while window and clock.now - window[0] >= 10.0:
                    window.popleft()
                if len(window) < 20:
                    window.append(clock.now)
                    bucket.on_success()
                    break
                refused += 1
                bucket.on_throttle(0.5)
                yield 0.5

    start = clock.now
    queue = [(start, i) for i in range(processes)]
    runs = {i: process(i) for i in range(processes)}
    end = start
    while queue:
        clock.now, i = heapq.heappop(queue)
        end = max(end, clock.now)
        step = next(runs[i], None)
        if step is not None:
            heapq.heappush(queue, (clock.now + step, i))
    return sent, refused, end - start


def test_processes_sharing_an_account_converge_to_their_shares() -> None:
    sent, refused, elapsed = simulate(4, 30, adaptive=True)
    assert refused / sent <= 0.12  # the three-window climb probes sooner than a slower one would
    assert elapsed <= 1.15 * (119 / 2.0)  # together still near the account's limit
    sent_fixed, refused_fixed, _ = simulate(4, 30, adaptive=False)
    assert refused_fixed / sent_fixed >= 0.3  # every process at the full limit: a 429 storm


def test_a_lone_simulated_process_is_never_refused() -> None:
    sent, refused, elapsed = simulate(1, 200, adaptive=True)
    assert sent == 200
    assert refused == 0 and elapsed == pytest.approx(199 / MAX)


def test_processes_starting_seconds_apart_keep_the_account_busy() -> None:
    starts = [0.0, 9.8, 14.9, 23.6]  # bench/pacing.py's 5-10 s stagger
    sent, refused, elapsed = simulate(4, 30, adaptive=True, starts=starts)
    assert refused / sent <= 0.12
    assert elapsed <= 1.4 * (119 / 2.0)  # the last process alone climbs back in seconds, not minutes
