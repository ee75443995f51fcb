"""A token bucket for paid creates, shared by everything one process submits through one account.

Kie accepts at most 20 new tasks per 10 s per account and rejects (does not queue) the rest. Sending at the
limit, instead of bursting into 429s and backing off, is what lets a batch finish near the theoretical best.
Reservations are first-come, first-served: each caller is told how long to wait, so many threads or coroutines
sharing one bucket are spaced out evenly. A 429 pauses the whole bucket for the ``Retry-After`` it carried.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable

#: Kie's documented limit, with a small margin so network jitter does not push two sends into one window.
KIE_CREATES_PER_WINDOW = 20
KIE_WINDOW_SECONDS = 10.0
SAFETY_MARGIN = 0.97


class TokenBucket:
    """``rate`` tokens per second, at most ``capacity`` saved up. Thread-safe; usable from asyncio too."""

    def __init__(self, rate: float, capacity: float = 1.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("rate must be > 0 and capacity >= 1")
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = capacity
        self._updated = clock()
        self._paused_until = 0.0

    def reserve(self) -> float:
        """Take one token now and return how many seconds the caller must wait before using it."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self._tokens -= 1
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
            return max(wait, self._paused_until - now)

    def acquire(self, sleep: Callable[[float], None] = time.sleep) -> float:
        wait = self.reserve()
        if wait > 0:
            sleep(wait)
        return wait

    async def aacquire(self) -> float:
        wait = self.reserve()
        if wait > 0:
            await asyncio.sleep(wait)
        return wait

    def pause(self, seconds: float) -> None:
        """The service said "too many": nobody sends for ``seconds``."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)


_BUCKETS: dict[str, TokenBucket] = {}
_REGISTRY_LOCK = threading.Lock()


def shared_bucket(service: str, base_url: str, api_key: str, rate: float, capacity: float = 1.0) -> TokenBucket:
    """The process-wide bucket for one account at one endpoint (keyed by a hash, never the key itself)."""
    account = hashlib.sha256(api_key.encode()).hexdigest()[:16]
    name = f"{service}|{base_url.rstrip('/')}|{account}|{rate:g}|{capacity:g}"
    with _REGISTRY_LOCK:
        bucket = _BUCKETS.get(name)
        if bucket is None:
            bucket = _BUCKETS[name] = TokenBucket(rate, capacity)
        return bucket


def kie_default_rate() -> float:
    return KIE_CREATES_PER_WINDOW / KIE_WINDOW_SECONDS * SAFETY_MARGIN
