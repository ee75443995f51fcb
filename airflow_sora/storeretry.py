"""Store faults cost time, never money: transient errors are retried, a store that stays down fails the try.

S3 calls go through a boto3 client in botocore's ``standard`` retry mode: it knows S3's throttling codes
(``SlowDown``), retries 5xx replies and dropped connections with exponential backoff and full jitter (a random
delay up to 1, 2, 4... s, at most 20 s), and its retry quota (a token bucket per client) stops many threads
from hammering a store that is down, so the try fails in bounded time instead of hanging. ``adaptive`` mode
adds a client-side rate limiter that botocore calls experimental and that would slow every landing thread of
the process after one throttled call; ``legacy`` has neither the quota nor one retry rule for every service.
A connection that configures its own ``retries`` (``config_kwargs`` in its extras) keeps them.

Other stores (local, fsspec), and what botocore does not retry (a reply body cut short), go through
``retrying`` with the same shape: the same number of attempts, the same backoff. When attempts run out the
error becomes a ``StoreUnavailableError`` naming the store and the operation: a retryable ``LandingError``,
so Airflow retries the try, which resumes what was paid for from the state records.
"""

from __future__ import annotations

import errno
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from airflow_sora.exceptions import LandingError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Error codes S3 (and S3-compatible stores) answer when asked to slow down or when they failed inside.
THROTTLING_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                              "TooManyRequestsException", "RequestThrottled", "BandwidthLimitExceeded"})
TRANSIENT_CODES = frozenset({"InternalError", "ServiceUnavailable", "RequestTimeout", "RequestTimeoutException",
                             "PriorRequestNotComplete", "OperationAborted"})
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
TRANSIENT_ERRNOS = frozenset({errno.ECONNRESET, errno.ECONNABORTED, errno.ECONNREFUSED, errno.ETIMEDOUT,
                              errno.EPIPE, errno.EAGAIN, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN})
#: Exceptions of the HTTP stacks under boto3 and fsspec that mean the connection, not the request, failed.
TRANSIENT_CLASS_NAMES = frozenset({
    "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
    "ResponseStreamingError", "IncompleteReadError", "HTTPClientError", "ProtocolError", "IncompleteRead",
    "RemoteDisconnected", "ClientConnectionError", "ServerDisconnectedError", "ClientPayloadError",
})


class StoreUnavailableError(LandingError):
    """A store kept failing one operation after every retry; the try fails and Airflow's retry resumes it."""

    retryable = True


@dataclass(frozen=True)
class StoreRetryPolicy:
    """Attempts per operation and the backoff between them: ``random() * min(base * 2**n, cap)`` (full jitter,
    so threads that failed together do not come back together)."""

    attempts: int = 6
    base: float = 1.0
    cap: float = 20.0

    def delay(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        return rand() * min(self.base * 2 ** (failures - 1), self.cap)

    def botocore_retries(self) -> dict[str, Any]:
        """The same policy as botocore's ``retries`` setting (its standard mode uses base 1 s and cap 20 s)."""
        return {"mode": "standard", "total_max_attempts": self.attempts}  # ``max_attempts`` would add one


POLICY = StoreRetryPolicy()


def error_code(error: BaseException) -> str:
    """The store's error code of a botocore ``ClientError`` (empty for anything else)."""
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status else None
    for name in ("status", "code", "status_code"):  # aiohttp, gcsfs, httpx
        value = getattr(error, name, None)
        if isinstance(value, int) and 100 <= value < 600:
            return value
    return None


def is_transient(error: BaseException) -> bool:
    """Throttling, a 5xx, a dropped or timed-out connection: worth another attempt. A missing object, a
    refused permission or a full disk are not (retrying cannot change the answer)."""
    if isinstance(error, StoreUnavailableError):
        return False  # its attempts were spent already
    if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if error_code(error) in THROTTLING_CODES | TRANSIENT_CODES:
        return True
    if (status := _status(error)) is not None:
        return status in TRANSIENT_STATUS
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    if isinstance(error, OSError) and error.errno in TRANSIENT_ERRNOS:
        return True
    return any(cls.__name__ in TRANSIENT_CLASS_NAMES for cls in type(error).__mro__)


def describe(error: BaseException) -> str:
    """What went wrong, short: ``SlowDown (HTTP 503)``, or the exception's type and message."""
    code, status = error_code(error), _status(error)
    if code:
        return f"{code} (HTTP {status})" if status else code
    text = str(error).splitlines()[0][:200] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def unavailable(store: str, operation: str, error: BaseException, attempts: int) -> StoreUnavailableError:
    return StoreUnavailableError(
        f"{store}: {operation} still failing after {attempts} attempt(s) ({describe(error)}); the try fails so "
        "Airflow retries it, and the retry resumes what was already paid for without paying again")


def retrying(call: Callable[[], T], *, store: str, operation: str, policy: StoreRetryPolicy | None = None,
             outlast: bool = False, sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()``, again after each transient error, up to ``policy.attempts`` times.

    ``outlast``: twice the attempts, and a ``StoreUnavailableError`` (a call whose own client gave up, e.g.
    botocore after its retry quota ran out) retried too: for the few writes worth more patience, such as the
    record of a paid create (lost, a retry cannot land the video it paid for).
    """
    policy = policy or POLICY
    if outlast:
        policy = replace(policy, attempts=2 * policy.attempts)
    for attempt in range(1, policy.attempts + 1):
        try:
            return call()
        except Exception as error:
            again = is_transient(error) or (outlast and isinstance(error, StoreUnavailableError))
            if not again:
                raise
            if attempt == policy.attempts:
                if isinstance(error, StoreUnavailableError):
                    raise
                raise unavailable(store, operation, error, attempt) from error
            delay = policy.delay(attempt)
            log.info("%s: %s failed (%s); attempt %d of %d in %.1f s", store, operation, describe(error),
                     attempt + 1, policy.attempts, delay)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
