"""The retry decision, alone: which errors are retried, for which operations, within which budget."""

from __future__ import annotations

import random

import httpx
import pytest

from airflow_sora.services import (
    AuthError,
    RateLimitedError,
    RetryPolicy,
    ServiceProtocolError,
    ServiceUnavailableError,
    SubmitOutcomeUnknownError,
)
from airflow_sora.services.transport import Operation, RetryTracker, map_transport_error

READ = Operation("poll", "GET", "/x", lambda r: r, idempotent=True)
CREATE = Operation("create", "POST", "/x", lambda r: r, idempotent=False)
POLICY = RetryPolicy(max_attempts=4, initial_delay=1.0, max_delay=8.0, budget_seconds=100)


def tracker(op: Operation, policy: RetryPolicy = POLICY, now: list[float] | None = None) -> RetryTracker:
    clock = now or [0.0]
    return RetryTracker(op, policy, rng=random.Random(1), clock=lambda: clock[0])


def test_backoff_grows_exponentially_with_jitter_and_cap() -> None:
    rng = random.Random(3)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0)]:
        delays = [POLICY.backoff(attempt, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not fixed


@pytest.mark.parametrize("op", [READ, CREATE])
def test_rate_limit_is_retried_for_every_operation_honouring_retry_after(op: Operation) -> None:
    t = tracker(op)
    assert t.next_delay(RateLimitedError("429", retry_after=7.0)) == 7.0
    assert 1.0 <= t.next_delay(RateLimitedError("429")) <= 2.0


def test_unavailable_is_retried_for_reads_only() -> None:
    assert tracker(READ).next_delay(ServiceUnavailableError("500")) > 0
    error = ServiceUnavailableError("500")
    with pytest.raises(ServiceUnavailableError) as info:
        tracker(CREATE).next_delay(error)
    assert info.value is error


def test_a_connection_that_never_opened_is_retried_even_for_creates() -> None:
    assert tracker(CREATE).next_delay(ServiceUnavailableError("refused", reached=False)) > 0


@pytest.mark.parametrize("error", [AuthError("no"), ServiceProtocolError("?"), SubmitOutcomeUnknownError("?")])
def test_permanent_errors_are_never_retried(error: Exception) -> None:
    with pytest.raises(type(error)):
        tracker(READ).next_delay(error)  # type: ignore[arg-type]


def test_attempts_are_bounded() -> None:
    t = tracker(READ)
    for _ in range(POLICY.max_attempts - 1):
        t.next_delay(ServiceUnavailableError("500"))
    with pytest.raises(ServiceUnavailableError):
        t.next_delay(ServiceUnavailableError("500"))


def test_time_budget_is_bounded() -> None:
    now = [0.0]
    t = tracker(READ, RetryPolicy(max_attempts=100, initial_delay=1, max_delay=1, budget_seconds=10), now)
    t.next_delay(ServiceUnavailableError("500"))
    now[0] = 9.7
    with pytest.raises(ServiceUnavailableError):
        t.next_delay(ServiceUnavailableError("500"))
    with pytest.raises(RateLimitedError):  # a Retry-After beyond the budget is not waited for
        tracker(READ, RetryPolicy(budget_seconds=5)).next_delay(RateLimitedError("x", retry_after=60))


@pytest.mark.parametrize("exc", [httpx.ConnectError("refused"), httpx.ConnectTimeout("slow")])
def test_connect_failures_prove_nothing_arrived(exc: httpx.HTTPError) -> None:
    error = map_transport_error(exc, CREATE, "kie")
    assert isinstance(error, ServiceUnavailableError) and error.reached is False


@pytest.mark.parametrize("exc", [httpx.ReadTimeout("t"), httpx.RemoteProtocolError("x"), httpx.ReadError("r")])
def test_lost_replies_to_creates_surface_as_unknown_outcome(exc: httpx.HTTPError) -> None:
    assert isinstance(map_transport_error(exc, CREATE, "kie"), SubmitOutcomeUnknownError)
    read_error = map_transport_error(exc, READ, "kie")
    assert isinstance(read_error, ServiceUnavailableError) and read_error.reached is True
