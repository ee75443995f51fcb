"""Typed errors shared by every service client.

Each error says whether trying again can help (``retryable``), so the client's retry loop, the
operator and the trigger decide from the type alone. Messages never carry request bodies or keys.
"""

from __future__ import annotations

from typing import ClassVar


class ServiceError(Exception):
    """Base of every error raised by a service client."""

    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, service: str | None = None, code: int | str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.service = service
        self.code = code

    def __str__(self) -> str:
        prefix = f"[{self.service}] " if self.service else ""
        suffix = f" (code {self.code})" if self.code is not None else ""
        return f"{prefix}{self.message}{suffix}"


class AuthError(ServiceError):
    """The API key is missing, invalid, revoked, or the account is banned. Fix the connection."""


class InsufficientCreditsError(ServiceError):
    """The account cannot pay for the call. Top up before retrying."""

    def __init__(
        self,
        message: str,
        *,
        service: str | None = None,
        code: int | str | None = None,
        balance: float | None = None,
        required: float | None = None,
    ) -> None:
        super().__init__(message, service=service, code=code)
        self.balance = balance
        self.required = required


class QuotaExceededError(ServiceError):
    """A key-level usage cap was hit (Kie 433). Permanent until the cap resets or is raised."""


class InvalidVideoUrlError(ServiceError, ValueError):
    """The video URL is not a public Sora link the services accept."""

    def __init__(self, message: str, *, url: str | None = None, service: str | None = None,
                 code: int | str | None = None) -> None:
        super().__init__(message, service=service, code=code)
        self.url = url


class RequestRejectedError(ServiceError):
    """The service refused the request as malformed or unsupported (400, 404, 422, 505...)."""


class TaskNotFoundError(RequestRejectedError):
    """The service does not know this task id."""


class RateLimitedError(ServiceError):
    """The request was rejected (not queued) for exceeding the rate limit."""

    retryable = True

    def __init__(self, message: str, *, service: str | None = None, code: int | str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, service=service, code=code)
        self.retry_after = retry_after


class ServiceUnavailableError(ServiceError):
    """Maintenance, server errors or a broken connection: worth retrying later.

    ``reached`` tells whether the request may have been processed. ``False`` means it provably never
    got there (connection refused, connect timeout), which makes even a paid create safe to repeat.
    """

    retryable = True

    def __init__(self, message: str, *, service: str | None = None, code: int | str | None = None,
                 reached: bool = True) -> None:
        super().__init__(message, service=service, code=code)
        self.reached = reached


class SubmitOutcomeUnknownError(ServiceError):
    """A paid create was sent but no answer came back: it may have been charged.

    Never retried silently: the caller decides (see the operator's ``on_unknown_submit``).
    """


class TaskFailedError(ServiceError):
    """The service accepted the work but failed it. ``refunded`` is True where the spec says so."""

    def __init__(self, message: str, *, service: str | None = None, code: int | str | None = None,
                 refunded: bool = False) -> None:
        super().__init__(message, service=service, code=code)
        self.refunded = refunded


class ServiceProtocolError(ServiceError):
    """A reply we cannot understand (not JSON, wrong shape). Not retried: it will not get better."""


# Landing errors are not service errors; they live in ``airflow_sora.exceptions`` and stay importable here.
from airflow_sora.exceptions import (  # noqa: E402
    ResultDownloadError as ResultDownloadError,
)
from airflow_sora.exceptions import (  # noqa: E402
    ResultLinkExpiredError as ResultLinkExpiredError,
)
from airflow_sora.exceptions import (  # noqa: E402
    UnsafeResultUrlError as UnsafeResultUrlError,
)
