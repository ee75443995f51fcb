"""Service clients: one interface (``base``), one module per remote service."""

from airflow_sora.services.base import AsyncWatermarkService, ServiceConfig, WatermarkService
from airflow_sora.services.errors import (
    AuthError,
    InsufficientCreditsError,
    InvalidVideoUrlError,
    QuotaExceededError,
    RateLimitedError,
    RequestRejectedError,
    ResultDownloadError,
    ResultLinkExpiredError,
    ServiceError,
    ServiceProtocolError,
    ServiceUnavailableError,
    SubmitOutcomeUnknownError,
    TaskFailedError,
    TaskNotFoundError,
    UnsafeResultUrlError,
)
from airflow_sora.services.kie import AsyncKieClient, KieClient
from airflow_sora.services.models import CreditBalance, RemovalResult, Submission, TaskState, TaskStatus
from airflow_sora.services.savesora import AsyncSaveSoraClient, SaveSoraClient
from airflow_sora.services.transport import RetryPolicy
from airflow_sora.services.urls import is_valid_video_url, post_id_from_url, validate_video_url

#: service name -> (blocking client, async client)
CLIENTS: dict[str, tuple[type[WatermarkService], type[AsyncWatermarkService]]] = {
    "kie": (KieClient, AsyncKieClient),
    "savesora": (SaveSoraClient, AsyncSaveSoraClient),
}

__all__ = [
    "CLIENTS",
    "AsyncKieClient",
    "AsyncSaveSoraClient",
    "AsyncWatermarkService",
    "AuthError",
    "CreditBalance",
    "InsufficientCreditsError",
    "InvalidVideoUrlError",
    "KieClient",
    "QuotaExceededError",
    "RateLimitedError",
    "RemovalResult",
    "RequestRejectedError",
    "ResultDownloadError",
    "ResultLinkExpiredError",
    "RetryPolicy",
    "SaveSoraClient",
    "ServiceConfig",
    "ServiceError",
    "ServiceProtocolError",
    "ServiceUnavailableError",
    "Submission",
    "SubmitOutcomeUnknownError",
    "TaskFailedError",
    "TaskNotFoundError",
    "TaskState",
    "TaskStatus",
    "UnsafeResultUrlError",
    "WatermarkService",
    "is_valid_video_url",
    "post_id_from_url",
    "validate_video_url",
]
