"""What the provider raises, in one place.

At the Airflow boundary the operator raises one of three things, and each tells Airflow what to do next:
``SoraAccountError`` (the account cannot pay: no retry would help), ``SoraPendingError`` (some videos can
still finish on a retry at no new cost: Airflow retries), ``SoraFailedError`` (videos failed or were rejected:
no retry). Landing errors are about storage and downloads, not about a service's answers, so they are not
``ServiceError``s.
"""

from __future__ import annotations

from typing import ClassVar

from airflow_sora._compat import AirflowException, AirflowFailException


class SoraAccountError(AirflowFailException):
    """Bad key, exhausted credits or quota: retrying would spend retries, never money, and cannot help."""


class SoraPendingError(AirflowException):
    """Videos that a later try of this task can still finish at no new cost (their task ids are kept)."""


class SoraFailedError(AirflowFailException):
    """Videos failed, were rejected or were not submitted (the budget), and ``fail_on_error`` is set; or no
    URL in the list was valid."""


class InvalidTriggerEventError(AirflowFailException):
    """The event a trigger resumed the task with is not one this provider writes."""


class LandingError(Exception):
    """Landing a result failed (download, verification, publication). Retryable unless it says otherwise."""

    retryable: ClassVar[bool] = True


class ResultDownloadError(LandingError):
    """Downloading a result failed (truncated, wrong size, not an MP4, refused address)."""


class UnsafeResultUrlError(ResultDownloadError):
    """A result URL points somewhere we refuse to fetch from (non-https, non-public address)."""

    retryable = False


class ResultLinkExpiredError(ResultDownloadError):
    """The result link answered 401/403/404/410: refresh it through the service and try again."""


__all__ = ["InvalidTriggerEventError", "LandingError", "ResultDownloadError", "ResultLinkExpiredError",
           "SoraAccountError", "SoraFailedError", "SoraPendingError", "UnsafeResultUrlError"]
