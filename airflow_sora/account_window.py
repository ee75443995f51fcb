"""One window of paid creates for the whole account, kept in Redis and shared by every process that sends.

A per-process bucket cannot know what other processes on the same account send; processes that start seconds
apart meet at 429s and have to find their shares by trial. Where the deployment runs Redis (Celery deployments
do), every process instead takes each create from one moving window in Redis: ``limits``' moving-window
limiter, whose check-and-take is one atomic Lua script, so the account never sees more than ``limit`` creates
in any ``window`` seconds, however many processes there are and whenever they started.

The window is keyed by a SHA-256 of service, endpoint and key (never the key in clear). If Redis cannot be
reached, sending goes on under the local adaptive bucket after one warning, and Redis is asked again after
``RETRY_AFTER`` seconds: the limiter never fails a batch.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from limits.strategies import MovingWindowRateLimiter

log = logging.getLogger(__name__)

#: Seconds before a Redis that failed is asked again (meanwhile the local adaptive bucket paces).
RETRY_AFTER = 30.0
#: Waiters for the same freed slot wake up spread over this many seconds, so they do not all race for it.
WAKE_SPREAD = 0.05
#: The shortest wait a full window reports (its oldest create leaves it just now).
MIN_WAIT = 0.001
#: Connect and read timeouts for the Redis client, so an unreachable Redis costs seconds, not a hung batch.
REDIS_TIMEOUT = 2.0
NAMESPACE = "airflow-sora-creates"


def account_digest(service: str, base_url: str, api_key: str) -> str:
    """The account's name in shared stores: a hash of service, endpoint and key, never the key itself."""
    return hashlib.sha256(f"{service}|{base_url.rstrip('/')}|{api_key}".encode()).hexdigest()


def limiter_from_connection(conn_id: str) -> MovingWindowRateLimiter:
    """A moving-window limiter on the Redis that the Airflow connection ``conn_id`` names (redis provider)."""
    from airflow.providers.redis.hooks.redis import RedisHook
    from limits.storage import RedisStorage
    from limits.strategies import MovingWindowRateLimiter

    client = RedisHook(redis_conn_id=conn_id).get_conn()
    pool = client.connection_pool
    for option in ("socket_timeout", "socket_connect_timeout"):
        if pool.connection_kwargs.get(option) is None:
            pool.connection_kwargs[option] = REDIS_TIMEOUT
    return MovingWindowRateLimiter(RedisStorage("redis://", connection_pool=pool))


class SharedWindow(ABC):
    """At most ``limit`` creates in any ``window`` seconds for one account, across the processes sharing a store.

    ``reserve`` takes a slot (0.0), says how long until one frees (> 0), or says the store is unavailable
    (None: pace locally). Thread-safe. A store that fails hands pacing back to the process's adaptive bucket
    with one warning and is asked again after ``RETRY_AFTER`` seconds. ``account_wide``: every process on
    the account shares the store (a 429 then means something outside it sent, and only pauses); otherwise
    only some do, and a 429 still slows this process as it would without the window.
    """

    account_wide: ClassVar[bool] = True

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, label: str = "") -> None:
        self._clock = clock
        self._label = label or "the shared rate limiter"
        self._lock = threading.Lock()
        self._down_until: float | None = None  # set while the store is unavailable

    @abstractmethod
    def _take(self) -> float:
        """Take a slot (0.0) or say in how many seconds one frees (> 0); raises if the store fails."""

    def _forget_store(self) -> None:  # noqa: B027 - most stores keep nothing open
        """Drop what was opened, so the store is reached afresh when asked again."""

    @property
    def in_charge(self) -> bool:
        """False while the store is unavailable and the local bucket paces alone."""
        return self._down_until is None or self._clock() >= self._down_until

    def reserve(self) -> float | None:
        if not self.in_charge:
            return None
        try:
            wait = self._take()
        except Exception as exc:  # any failure of the store: pace locally, never fail the batch
            self._unavailable(exc)
            return None
        self._recovered()
        return 0.0 if wait == 0.0 else wait + random.uniform(0.0, WAKE_SPREAD)

    def acquire(self, sleep: Callable[[float], None] = time.sleep) -> float:
        """Wait until the account has room for one more create; returns the seconds waited."""
        waited = 0.0
        while (wait := self.reserve()):
            sleep(wait)
            waited += wait
        return waited

    async def aacquire(self, run: Callable[[Callable[[], Any]], Awaitable[Any]] = asyncio.to_thread) -> float:
        """``acquire`` for an event loop: the store is asked from a thread, never from the loop."""
        waited = 0.0
        while (wait := await run(self.reserve)):
            await asyncio.sleep(wait)
            waited += wait
        return waited

    def _unavailable(self, exc: BaseException) -> None:
        with self._lock:
            first = self._down_until is None
            self._down_until = self._clock() + RETRY_AFTER
            self._forget_store()
        if first:
            log.warning("%s is unavailable (%s: %s); creates are paced by this process alone until it answers "
                        "again (retried every %.0f s)", self._label, type(exc).__name__, exc, RETRY_AFTER)

    def _recovered(self) -> None:
        if self._down_until is not None:
            with self._lock:
                self._down_until = None
            log.warning("%s answers again; creates are paced %s", self._label,
                        "account-wide" if self.account_wide else "across this host's processes again")


class AccountWindow(SharedWindow):
    """The account's window in Redis, for every process on the account (see the module notes).

    ``connect`` is called lazily on first use, so building a client (also in the triggerer's event loop) never
    touches the network.
    """

    def __init__(self, connect: Callable[[], MovingWindowRateLimiter], account: str, limit: int, window: int, *,
                 clock: Callable[[], float] = time.monotonic, label: str = "") -> None:
        from limits import RateLimitItemPerSecond

        if limit < 1 or window < 1:
            raise ValueError("limit and window must be >= 1")
        super().__init__(clock=clock, label=label)
        self._connect = connect
        self._item = RateLimitItemPerSecond(limit, window, namespace=NAMESPACE)
        self._account = account
        self._limiter: MovingWindowRateLimiter | None = None

    @property
    def key(self) -> str:
        """The window's key in the store (without the storage's own prefix)."""
        return str(self._item.key_for(self._account))

    def _take(self) -> float:
        with self._lock:
            if self._limiter is None:
                self._limiter = self._connect()
            limiter = self._limiter
        if limiter.hit(self._item, self._account):
            return 0.0
        return max(MIN_WAIT, limiter.get_window_stats(self._item, self._account).reset_time - time.time())

    def _forget_store(self) -> None:
        self._limiter = None
