"""The one interface the operator, trigger and sensor speak to, whatever the service.

Kie.ai is asynchronous (create a task, poll it); SaveSora answers in one call. Both fit the same shape:
``submit`` returns a ``Submission`` that either carries a task id to poll or the finished result.
Adding a third service means one new module implementing these two classes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import SecretStr

from airflow_sora.ratelimit import KIE_WINDOW_SECONDS, TokenBucket, shared_bucket
from airflow_sora.services.models import CreditBalance, RemovalResult, Submission, TaskStatus
from airflow_sora.services.transport import AsyncTransport, RetryPolicy, SyncTransport, TransportSettings

DEFAULT_UPLOAD_METHOD = "s3"
UPLOAD_METHODS = ("s3", "oss")


@dataclass(frozen=True)
class ServiceConfig:
    """Everything a client needs, read from an Airflow connection (or built by hand in tests).

    The key is a ``SecretStr`` so that it cannot leak through ``repr`` or an f-string by accident.
    """

    base_url: str
    api_key: SecretStr = field(repr=False)
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    upload_method: str = DEFAULT_UPLOAD_METHOD
    allow_private_result_hosts: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    create_rate: float | None = None  # paid creates per second; None = the service's documented default
    create_burst: float = 1.0
    create_window: float = KIE_WINDOW_SECONDS  # the account's limit counts creates per this many seconds
    rate_limiter_conn_id: str | None = None  # a Redis connection holding the account-wide window of creates

    def create_limiter(self, service: str, default_rate: float | None) -> TokenBucket | None:
        """The process-wide bucket for this account's creates, or None where no limit applies."""
        rate = self.create_rate if self.create_rate is not None else default_rate
        if not rate:
            return None
        return shared_bucket(service, self.base_url, self.api_key.get_secret_value(), rate, self.create_burst,
                             window=self.create_window, redis_conn_id=self.rate_limiter_conn_id)

    def transport(self, headers: dict[str, str] | None = None) -> TransportSettings:
        return TransportSettings(
            base_url=self.base_url,
            headers=headers or {},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retry=self.retry,
        )


class _ServiceInfo:
    service_name: ClassVar[str]
    credits_per_video: ClassVar[float]
    asynchronous: ClassVar[bool]  # True: submit returns a task id to poll; False: the result itself
    refreshable_links: ClassVar[bool] = False

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config


class WatermarkService(_ServiceInfo, ABC):
    """Blocking client, used in workers."""

    transport: SyncTransport

    @abstractmethod
    def submit(self, video_url: str, *, callback_url: str | None = None) -> Submission:
        """Start one removal (paid). Validates the URL first, so a bad one costs nothing."""

    def get_status(self, task_id: str) -> TaskStatus:
        raise NotImplementedError(f"{self.service_name} has no tasks to poll")

    def result(self, status: TaskStatus, video_url: str) -> RemovalResult:
        raise NotImplementedError(f"{self.service_name} has no tasks to poll")

    def refresh_link(self, url: str) -> str:
        raise NotImplementedError(f"{self.service_name} cannot refresh result links")

    @abstractmethod
    def credits(self) -> CreditBalance:
        """Current balance, free of charge."""

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> WatermarkService:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncWatermarkService(_ServiceInfo, ABC):
    """Non-blocking twin of ``WatermarkService`` for the triggerer; same parsing and errors."""

    transport: AsyncTransport

    @abstractmethod
    async def submit(self, video_url: str, *, callback_url: str | None = None) -> Submission: ...

    async def get_status(self, task_id: str) -> TaskStatus:
        raise NotImplementedError(f"{self.service_name} has no tasks to poll")

    def result(self, status: TaskStatus, video_url: str) -> RemovalResult:
        raise NotImplementedError(f"{self.service_name} has no tasks to poll")

    async def refresh_link(self, url: str) -> str:
        raise NotImplementedError(f"{self.service_name} cannot refresh result links")

    @abstractmethod
    async def credits(self) -> CreditBalance: ...

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> AsyncWatermarkService:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
