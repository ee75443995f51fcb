"""A token bucket for paid creates, shared by everything one process submits through one account.

Kie accepts at most 20 new tasks per 10 s per account and rejects (does not queue) the rest. Sending at the
limit, instead of bursting into 429s and backing off, is what lets a batch finish near the theoretical best.
Reservations are first-come, first-served: each caller is told how long to wait, so many threads or coroutines
sharing one bucket are spaced out evenly. A 429 pauses the whole bucket for the ``Retry-After`` it carried.

The bucket is per process, but the limit is per account: several processes (mapped tasks, overlapping runs,
Celery workers) that each sent at the full limit would meet at 429s. So the bucket's rate is adaptive, in the
manner of the AWS SDKs' "adaptive" retry mode (``AdaptiveRate``): it starts at the account's full rate and
stays there while no create is refused, so a lone process runs at the limit; each 429 cuts it to this
process's share of what the account accepted, and while creates succeed it climbs back (CUBIC) toward, never
above, the configured rate. Processes sharing an account converge to their shares of its limit without
talking to each other. ``AIRFLOW_SORA_ADAPTIVE_PACING=0`` turns the adaptation off (every process at the full
rate, 429s only pause), for comparison.

Where a Redis connection is configured, every process also takes each create from one account-wide window
there (``AccountWindow``): the account's limit then holds by construction, whenever processes start, and the
adaptation only takes over while Redis is unavailable. Without Redis, the processes on one host take their
creates from one window in a locked file (``HostWindow``): they never meet at 429s among themselves, and the
adaptation stays on for processes on other hosts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable

from airflow_sora.account_window import AccountWindow, SharedWindow, account_digest, limiter_from_connection
from airflow_sora.host_window import HostWindow, host_window_enabled

log = logging.getLogger(__name__)

#: Kie's documented limit, with a small margin so network jitter does not push two sends into one window.
KIE_CREATES_PER_WINDOW = 20
KIE_WINDOW_SECONDS = 10.0
SAFETY_MARGIN = 0.97

#: Environment switch for the adaptation (on unless set to 0/false/no/off).
ADAPTIVE_ENV = "AIRFLOW_SORA_ADAPTIVE_PACING"


class AdaptiveRate:
    """The sending rate of one process on one account, from what the service answered. Pure logic, no I/O.

    - Starts at ``max_rate`` and stays there until a create is refused: a lone process is never slowed.
    - First refusal (at ``max_rate``): the account's window is full, and what this process got accepted in the
      last ``window`` seconds, divided by ``window``, is its share of the limit (the shares of all processes
      add up to the limit). The rate drops to ``share_margin`` times that share: processes that started
      together and each met one refusal now send, together, just under the limit.
    - Later refusals: the rate is cut by ``beta`` (multiplicative decrease), or to ``share_margin`` times the
      share if that is lower (a newcomer took part of this process's share: go straight there, instead of
      meeting one 429 per ``beta`` step), never below ``min_rate``.
    - After a refusal it says how long to hold off: until this process's oldest accepted create still in the
      window leaves it (at start-up they were all accepted together, and until then the window stays full),
      and at least one interval at the new rate.
    - While creates succeed the rate climbs back along a cubic (TCP CUBIC, as the AWS SDKs do): to the rate at
      which the refusal came, flat around it, then faster beyond it, gaining ``max_rate * (t / recovery)**3``
      after t seconds past it, to find capacity that others freed. Never above ``max_rate``. ``recovery``
      (3 windows) bounds how long a process whose peers finished takes to be back at the full rate: about
      half a minute, where runs start and end seconds apart (9 windows left a lone process one to two
      minutes below the limit; shorter means more 429s while processes share the account).
    """

    def __init__(self, max_rate: float, *, window: float = KIE_WINDOW_SECONDS, beta: float = 0.9,
                 share_margin: float = 0.95, min_rate: float | None = None, recovery: float | None = None) -> None:
        if max_rate <= 0 or window <= 0 or not 0 < beta < 1 or not 0 < share_margin <= 1:
            raise ValueError("max_rate and window must be > 0, beta in (0, 1) and share_margin in (0, 1]")
        self.max_rate = max_rate
        self.rate = max_rate
        self.window = window
        self.beta = beta
        self.share_margin = share_margin
        self.min_rate = min_rate if min_rate is not None else max_rate / 16
        self.recovery = recovery if recovery is not None else 3 * window
        self._scale = max_rate / self.recovery**3
        self._accepted: deque[float] = deque()  # this process's accepted creates in the last ``window`` s
        self._w_max = max_rate  # the rate the cubic returns to
        self._k = 0.0  # seconds after the hold at which it is back there
        self._resumed_at: float | None = None  # end of the last hold; None: at max_rate

    def measured_rate(self, now: float) -> float:
        """Creates this process got accepted in the last ``window`` seconds, per second."""
        while self._accepted and now - self._accepted[0] >= self.window:
            self._accepted.popleft()
        return len(self._accepted) / self.window

    def on_success(self, now: float) -> float:
        """A create was accepted; returns the new rate."""
        self._accepted.append(now)
        self.measured_rate(now)  # trim
        if self._resumed_at is not None:
            since = max(0.0, now - self._resumed_at)
            climbed = self._scale * (since - self._k) ** 3 + self._w_max
            self.rate = min(self.max_rate, max(self.rate, climbed))
            if self.rate >= self.max_rate:
                self._resumed_at = None
        return self.rate

    def on_throttle(self, now: float) -> tuple[float, float]:
        """A create was refused (429); returns the new rate and the time before which nobody should send."""
        share = self.measured_rate(now)
        if self._resumed_at is None and 0 < share < self.rate:
            self._w_max = share
            self.rate = max(self.min_rate, self.share_margin * share)
        else:
            self._w_max = self.rate
            cut = self.beta * self.rate
            if share > 0:
                cut = min(cut, self.share_margin * share)
            self.rate = max(self.min_rate, cut)
        self._k = (max(0.0, self._w_max - self.rate) / self._scale) ** (1 / 3)
        hold_until = now + 1 / self.rate
        if self._accepted:
            hold_until = max(hold_until, self._accepted[0] + self.window)
        self._resumed_at = hold_until  # the climb starts when sending resumes
        return self.rate, hold_until


class TokenBucket:
    """``rate`` tokens per second, at most ``capacity`` saved up. Thread-safe; usable from asyncio too.

    With ``adaptive`` (the default) ``rate`` moves between ``max_rate`` and a floor as the service accepts
    (``on_success``) or refuses (``on_throttle``) creates; see ``AdaptiveRate``. With an ``account`` window,
    each create also waits for room in it; while that window is in charge a 429 only pauses (someone outside
    it sent), and the adaptation resumes if it becomes unavailable.
    """

    def __init__(self, rate: float, capacity: float = 1.0, *, clock: Callable[[], float] = time.monotonic,
                 adaptive: bool = True, window: float = KIE_WINDOW_SECONDS,
                 account: SharedWindow | None = None) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("rate must be > 0 and capacity >= 1")
        self.rate = rate
        self.max_rate = rate
        self.capacity = capacity
        self.adaptive = AdaptiveRate(rate, window=window) if adaptive else None
        self.account = account
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = capacity
        self._updated = clock()
        self._paused_until = 0.0

    def _refill(self, now: float) -> None:
        if now > self._updated:  # after a throttle, tokens accrue only from the end of the hold
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
            self._updated = now

    def reserve(self) -> float:
        """Take one token now and return how many seconds the caller must wait before using it."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            self._tokens -= 1
            wait = max(0.0, self._updated - now) + (0.0 if self._tokens >= 0 else -self._tokens / self.rate)
            return max(wait, self._paused_until - now)

    def acquire(self, sleep: Callable[[float], None] = time.sleep) -> float:
        wait = self.reserve()
        if wait > 0:
            sleep(wait)
        if self.account is not None:
            wait += self.account.acquire(sleep)
        return wait

    async def aacquire(self) -> float:
        wait = self.reserve()
        if wait > 0:
            await asyncio.sleep(wait)
        if self.account is not None:
            wait += await self.account.aacquire()
        return wait

    def pause(self, seconds: float) -> None:
        """The service said "too many": nobody sends for ``seconds``."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def on_success(self) -> None:
        """A paid create was accepted: let the rate climb back toward ``max_rate``."""
        if self.adaptive is None:
            return
        with self._lock:
            now = self._clock()
            self._refill(now)  # tokens earned so far at the old rate
            self.rate = self.adaptive.on_success(now)

    def on_throttle(self, seconds: float | None = None) -> None:
        """A paid create was refused (429): pause for ``seconds`` (its Retry-After or back-off) and slow down."""
        shared = self.account
        adapt = self.adaptive is not None and (shared is None or not shared.in_charge or not shared.account_wide)
        with self._lock:
            now = self._clock()
            hold_until = now + (seconds or 0.0)
            if adapt and self.adaptive is not None:
                self._refill(now)
                self.rate, adaptive_hold = self.adaptive.on_throttle(now)
                hold_until = max(hold_until, adaptive_hold)
                # The hold stands for one interval at the new rate: at its end one create goes out, the next
                # ones follow one interval apart (nothing is earned during the hold, so no burst).
                self._tokens = min(self._tokens + 1.0, 1.0)
                self._updated = max(self._updated, hold_until)
            self._paused_until = max(self._paused_until, hold_until)


def adaptive_from_env() -> bool:
    return os.environ.get(ADAPTIVE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


_BUCKETS: dict[str, TokenBucket] = {}
_REGISTRY_LOCK = threading.Lock()


def shared_bucket(service: str, base_url: str, api_key: str, rate: float, capacity: float = 1.0, *,
                  window: float = KIE_WINDOW_SECONDS, redis_conn_id: str | None = None) -> TokenBucket:
    """The process-wide bucket for one account at one endpoint (keyed by a hash, never the key itself).

    With ``redis_conn_id`` its creates also go through the account-wide window in that Redis, which holds
    ``rate`` x ``window`` creates (rounded down) per ``window`` seconds for every process on the account.
    Without it they go through the same window shared by this host's processes (``HostWindow``), unless
    that is switched off.
    """
    account = account_digest(service, base_url, api_key)  # the same name the account-wide window uses
    on_host = not redis_conn_id and host_window_enabled()
    name = f"{account}|{rate:g}|{capacity:g}|{window:g}|{redis_conn_id or ''}|{on_host}"
    with _REGISTRY_LOCK:
        bucket = _BUCKETS.get(name)
        if bucket is None:
            shared: SharedWindow | None = None
            limit = max(1, int(rate * window + 1e-9))
            if on_host:
                shared = HostWindow(account, limit=limit, window=window)
            elif redis_conn_id:
                conn_id = redis_conn_id
                try:
                    shared = AccountWindow(lambda: limiter_from_connection(conn_id), account,
                                           limit=limit, window=max(1, round(window)),
                                           label=f"The account-wide rate limiter (Redis connection {conn_id!r})")
                except ImportError as exc:  # never fail a batch for the limiter
                    log.warning("rate_limiter_conn_id %r needs the redis extra (pip install "
                                "\"airflow-provider-sora[redis]\"): %s; creates are paced by this process alone",
                                conn_id, exc)
            bucket = _BUCKETS[name] = TokenBucket(rate, capacity, adaptive=adaptive_from_env(), window=window,
                                                  account=shared)
        return bucket


def kie_default_rate() -> float:
    return KIE_CREATES_PER_WINDOW / KIE_WINDOW_SECONDS * SAFETY_MARGIN


def create_burst(limit: float) -> float:
    """The creates a bucket may save up for an account allowed ``limit`` per window: half of what the safety
    margin keeps spare (``limit`` x 1.5 %), at least one.

    The bucket paces at 97 % of the limit, so any window also has room for a few creates at once. Saving up
    that many lets a create that went out late be followed by the next one on time, instead of pushing every
    later create back with it: under a running cap, creates come in trains at the full rate, and with nothing
    saved each late create cost the rest of its train its delay, every cycle. The other half of the margin
    still covers network jitter. At Kie's own 20 per 10 s this is one: no burst.
    """
    return max(1.0, float(int(limit * (1 - SAFETY_MARGIN) / 2 + 1e-9)))
