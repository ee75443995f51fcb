"""HTTP transport with bounded retries, shared by every service client (sync and async).

Clients describe each call as an ``Operation``: what to send and how to parse the reply. Parsing, error
mapping and the retry decision are identical for both transports; only the send differs.

Retry rules:
- 429 is always retried (the request was rejected, not queued), honouring ``Retry-After``.
- A connection that never opened (refused, connect timeout) is always retried: nothing reached the service.
- 455, 5xx, read timeouts and broken replies are retried only for idempotent operations. A paid create that
  got no answer surfaces as ``SubmitOutcomeUnknownError``: it may have been charged.
- Everything else (auth, credits, invalid input, protocol errors) is never retried.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx

from airflow_sora import metrics
from airflow_sora.ratelimit import TokenBucket
from airflow_sora.services.envelope import Reply
from airflow_sora.services.errors import (
    RateLimitedError,
    ServiceError,
    ServiceProtocolError,
    ServiceUnavailableError,
    SubmitOutcomeUnknownError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


def user_agent() -> str:
    from airflow_sora import __version__

    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    return f"airflow-provider-sora/{__version__} (httpx/{httpx.__version__}; python/{python})"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off with jitter inside a bounded budget of attempts and seconds."""

    max_attempts: int = 6
    initial_delay: float = 0.5
    max_delay: float = 30.0
    multiplier: float = 2.0
    budget_seconds: float = 120.0

    def backoff(self, retry_number: int, rng: random.Random) -> float:
        """Delay before retry ``retry_number`` (1-based): half fixed, half random ("equal jitter")."""
        ceiling = min(self.max_delay, self.initial_delay * self.multiplier ** (retry_number - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


NO_RETRY = RetryPolicy(max_attempts=1)


@dataclass(frozen=True)
class Operation(Generic[T]):
    """One API call: request description plus the parser that turns its reply into a typed result."""

    name: str
    method: str
    path: str
    parse: Callable[[Reply], T]
    json: Any = field(default=None, repr=False)  # may hold a key (SaveSora): never logged
    params: Mapping[str, str] | None = None
    idempotent: bool = True
    paid: bool = False  # paced by the shared create bucket


class RetryTracker:
    """Decides, error by error, whether to retry one operation and after how long."""

    def __init__(self, op: Operation[Any], policy: RetryPolicy, *, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.op = op
        self.policy = policy
        self.attempts = 0
        self._rng = rng or random.Random()
        self._clock = clock
        self._started = clock()

    def should_retry(self, error: ServiceError) -> bool:
        if isinstance(error, RateLimitedError):
            return True
        if isinstance(error, ServiceUnavailableError):
            return self.op.idempotent or not error.reached
        return False

    def next_delay(self, error: ServiceError) -> float:
        """Seconds to wait before the next attempt; re-raises ``error`` when retrying is not allowed."""
        self.attempts += 1
        if not self.should_retry(error) or self.attempts >= self.policy.max_attempts:
            raise error
        delay = self.policy.backoff(self.attempts, self._rng)
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, retry_after)
        if self._clock() - self._started + delay > self.policy.budget_seconds:
            raise error
        log.warning("%s: %s; retry %d/%d in %.1f s", self.op.name, error, self.attempts,
                    self.policy.max_attempts - 1, delay)
        return delay


def map_transport_error(exc: httpx.HTTPError, op: Operation[Any], service: str) -> ServiceError:
    """Turn an httpx error into our error. Only connect-phase failures prove the request never arrived."""
    kind = type(exc).__name__
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return ServiceUnavailableError(f"{op.name}: could not connect ({kind})", service=service,
                                       reached=False)
    if op.idempotent:
        return ServiceUnavailableError(f"{op.name}: no usable reply ({kind})", service=service, reached=True)
    return SubmitOutcomeUnknownError(
        f"{op.name}: the request was sent but no reply arrived ({kind}); the service may have processed "
        "and charged it",
        service=service,
    )


def _pause_on_rate_limit(limiter: TokenBucket | None, op: Operation[Any], error: ServiceError,
                         delay: float) -> None:
    """A 429 on a paid create slows every sender sharing the bucket, not just this one."""
    if limiter is not None and op.paid and isinstance(error, RateLimitedError):
        limiter.on_throttle(delay)


def error_kind(error: ServiceError) -> str:
    """The ``sora.errors.<kind>`` a failed call counts under."""
    if isinstance(error, RateLimitedError):
        return "rate_limited"
    if isinstance(error, ServiceUnavailableError):
        return "unavailable"
    if isinstance(error, SubmitOutcomeUnknownError):
        return "no_reply"
    if isinstance(error, ServiceProtocolError):
        return "protocol"
    return "transient" if error.retryable else "permanent"


def count_error(service: str, op: Operation[Any], error: ServiceError) -> None:
    """Every failed call is counted; a 429 on a paid create also as a create the rate limit rejected."""
    metrics.incr(f"errors.{error_kind(error)}", service=service)
    if op.paid and isinstance(error, RateLimitedError):
        metrics.incr("creates.rate_limited", service=service)


def _to_reply(response: httpx.Response) -> Reply:
    return Reply(status_code=response.status_code, headers=dict(response.headers), content=response.content)


@dataclass(frozen=True)
class TransportSettings:
    base_url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.read_timeout, connect=self.connect_timeout)

    def all_headers(self) -> dict[str, str]:
        return {"User-Agent": user_agent(), "Accept": "application/json", **self.headers}


class SyncTransport:
    """Blocking transport for workers."""

    def __init__(self, settings: TransportSettings, service: str, *, client: httpx.Client | None = None,
                 sleep: Callable[[float], None] = time.sleep, limiter: TokenBucket | None = None) -> None:
        self.settings = settings
        self.service = service
        self.limiter = limiter
        self._owns_client = client is None
        self._client = client or httpx.Client(timeout=settings.timeout())
        self._sleep = sleep

    def call(self, op: Operation[T], *, retry: RetryPolicy | None = None) -> T:
        tracker = RetryTracker(op, retry or self.settings.retry)
        while True:
            if op.paid and self.limiter is not None:
                self.limiter.acquire(self._sleep)
            try:
                result = op.parse(self._send(op))
                if op.paid and self.limiter is not None:
                    self.limiter.on_success()
                return result
            except ServiceError as error:
                count_error(self.service, op, error)  # before next_delay, which re-raises what it won't retry
                delay = tracker.next_delay(error)
                _pause_on_rate_limit(self.limiter, op, error, delay)
            self._sleep(delay)

    def _send(self, op: Operation[Any]) -> Reply:
        try:
            response = self._client.request(
                op.method, self.settings.base_url.rstrip("/") + op.path, json=op.json, params=op.params,
                headers=self.settings.all_headers(), timeout=self.settings.timeout(),
            )
        except httpx.HTTPError as exc:
            raise map_transport_error(exc, op, self.service) from None
        return _to_reply(response)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


class AsyncTransport:
    """Non-blocking transport for the triggerer's event loop; one client serves many concurrent polls."""

    def __init__(self, settings: TransportSettings, service: str, *,
                 client: httpx.AsyncClient | None = None, limiter: TokenBucket | None = None) -> None:
        self.settings = settings
        self.service = service
        self.limiter = limiter
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=settings.timeout())

    async def call(self, op: Operation[T], *, retry: RetryPolicy | None = None) -> T:
        tracker = RetryTracker(op, retry or self.settings.retry)
        while True:
            if op.paid and self.limiter is not None:
                await self.limiter.aacquire()
            try:
                result = op.parse(await self._send(op))
                if op.paid and self.limiter is not None:
                    self.limiter.on_success()
                return result
            except ServiceError as error:
                count_error(self.service, op, error)  # before next_delay, which re-raises what it won't retry
                delay = tracker.next_delay(error)
                _pause_on_rate_limit(self.limiter, op, error, delay)
            await asyncio.sleep(delay)

    async def _send(self, op: Operation[Any]) -> Reply:
        try:
            response = await self._client.request(
                op.method, self.settings.base_url.rstrip("/") + op.path, json=op.json, params=op.params,
                headers=self.settings.all_headers(), timeout=self.settings.timeout(),
            )
        except httpx.HTTPError as exc:
            raise map_transport_error(exc, op, self.service) from None
        return _to_reply(response)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
