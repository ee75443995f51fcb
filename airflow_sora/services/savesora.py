"""SaveSora: one synchronous, paid call returns the clean and the source links.

The API key travels in the JSON body, so request bodies are never logged, echoed or stored; errors name
the operation and code only.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from airflow_sora.services.base import AsyncWatermarkService, ServiceConfig, WatermarkService
from airflow_sora.services.envelope import Envelope, Reply, decode_envelope, lenient_number
from airflow_sora.services.errors import (
    AuthError,
    InsufficientCreditsError,
    InvalidVideoUrlError,
    RateLimitedError,
    RequestRejectedError,
    ServiceError,
    ServiceProtocolError,
    ServiceUnavailableError,
    SubmitOutcomeUnknownError,
    TaskFailedError,
)
from airflow_sora.services.models import CreditBalance, RemovalResult, Submission
from airflow_sora.services.transport import AsyncTransport, Operation, SyncTransport
from airflow_sora.services.urls import post_id_from_url, validate_video_url

SERVICE = "savesora"
DEFAULT_BASE_URL = "https://savesora.com"
REMOVE_PATH = "/api/v1/download"
CREDITS_PATH = "/api/v1/credits"
CREDITS_PER_VIDEO = 1.0

_AUTH_CODES = {4001, 4003, 4004, 4005}
_INPUT_CODES = {4002, 4006}


def raise_for_envelope(env: Envelope, operation: str) -> None:
    """Map a SaveSora error (body code, or bare HTTP status) to our typed error."""
    if env.ok:
        return
    code, text = env.code, f"{operation}: {env.message or 'no message'}"
    error: ServiceError
    if code in _AUTH_CODES or code in (401, 403):
        error = AuthError(text, service=SERVICE, code=code)
    elif code in _INPUT_CODES:
        error = InvalidVideoUrlError(text, service=SERVICE, code=code)
    elif code in (4007, 402):
        data = env.data if isinstance(env.data, dict) else {}
        error = InsufficientCreditsError(
            text, service=SERVICE, code=code, balance=lenient_number(data.get("current_credits")),
            required=lenient_number(data.get("required_credits")) or CREDITS_PER_VIDEO,
        )
    elif code == 5002:
        error = TaskFailedError(f"{text}; the credit was refunded, so it is safe to try again",
                                service=SERVICE, code=code, refunded=True)
    elif code == 429:
        error = RateLimitedError(text, service=SERVICE, code=code, retry_after=env.retry_after)
    elif code == 5001 or code == 455 or 500 <= code < 600:
        error = ServiceUnavailableError(text, service=SERVICE, code=code)
    else:
        error = RequestRejectedError(text, service=SERVICE, code=code)
    raise error


class _DownloadLinks(BaseModel):
    model_config = ConfigDict(extra="ignore")
    mp4: str
    mp4_source: str | None = None


class SaveSoraRemoval(BaseModel):
    """``/api/v1/download`` data."""

    model_config = ConfigDict(extra="ignore")

    post_id: str | None = None
    prompt: str | None = None
    thumbnail: str | None = None
    download_links: _DownloadLinks
    credits_used: float | None = None
    remaining_credits: float | None = None

    @field_validator("post_id", "prompt", "thumbnail", mode="before")
    @classmethod
    def _text_or_none(cls, value: Any) -> str | None:
        return value if isinstance(value, str) and value else None

    @field_validator("credits_used", "remaining_credits", mode="before")
    @classmethod
    def _num(cls, value: Any) -> float | None:
        return lenient_number(value)


class SaveSoraCredits(BaseModel):
    model_config = ConfigDict(extra="ignore")
    paid_credits: float | None = None
    onetime_credits: float | None = None
    total_credits: float | None = Field(default=None)

    @field_validator("paid_credits", "onetime_credits", "total_credits", mode="before")
    @classmethod
    def _num(cls, value: Any) -> float | None:
        return lenient_number(value)


class SaveSoraApi:
    """Requests and reply parsers for SaveSora, free of I/O. Requests carry the key: never log them."""

    def __init__(self, api_key: str) -> None:
        self._api_key = api_key

    def __repr__(self) -> str:
        return "SaveSoraApi(api_key=***)"

    def remove(self, video_url: str) -> Operation[RemovalResult]:
        def parse(reply: Reply) -> RemovalResult:
            return self.parse_remove(reply, video_url)

        return Operation("SaveSora download", "POST", REMOVE_PATH, parse,
                         json={"api_key": self._api_key, "video_url": video_url}, idempotent=False, paid=True)

    def credits(self) -> Operation[CreditBalance]:
        return Operation("SaveSora credits", "POST", CREDITS_PATH, self.parse_credits,
                         json={"api_key": self._api_key})

    @staticmethod
    def parse_remove(reply: Reply, video_url: str) -> RemovalResult:
        env = decode_envelope(reply, service=SERVICE, operation="SaveSora download")
        raise_for_envelope(env, "SaveSora download")
        try:
            data = SaveSoraRemoval.model_validate(env.data)
        except ValidationError:
            raise SubmitOutcomeUnknownError(
                "SaveSora download: success reply without a usable download link; the credit may have been "
                "spent", service=SERVICE,
            ) from None
        if not data.download_links.mp4.startswith(("https://", "http://")):
            raise SubmitOutcomeUnknownError(
                "SaveSora download: the clean link is not an http(s) URL; the credit may have been spent",
                service=SERVICE)
        return RemovalResult(
            service=SERVICE, video_url=video_url, post_id=data.post_id or post_id_from_url(video_url),
            clean_url=data.download_links.mp4, source_url=data.download_links.mp4_source,
            prompt=data.prompt, thumbnail_url=data.thumbnail,
            credits_used=data.credits_used if data.credits_used is not None else CREDITS_PER_VIDEO,
            remaining_credits=data.remaining_credits,
        )

    @staticmethod
    def parse_credits(reply: Reply) -> CreditBalance:
        env = decode_envelope(reply, service=SERVICE, operation="SaveSora credits")
        raise_for_envelope(env, "SaveSora credits")
        try:
            data = SaveSoraCredits.model_validate(env.data)
        except ValidationError:
            raise ServiceProtocolError("SaveSora credits: 'data' is not an object", service=SERVICE) from None
        total = data.total_credits
        if total is None:
            total = (data.paid_credits or 0.0) + (data.onetime_credits or 0.0)
        details = {k: v for k, v in (("paid", data.paid_credits), ("onetime", data.onetime_credits))
                   if v is not None}
        return CreditBalance(service=SERVICE, balance=total, details=details)


def _submission(result: RemovalResult) -> Submission:
    return Submission(service=SERVICE, video_url=result.video_url, task_id=None, result=result)


class SaveSoraClient(WatermarkService):
    service_name = SERVICE
    credits_per_video = CREDITS_PER_VIDEO
    asynchronous = False

    def __init__(self, config: ServiceConfig, *, http_client: httpx.Client | None = None) -> None:
        super().__init__(config)
        self.api = SaveSoraApi(config.api_key.get_secret_value())
        self.transport = SyncTransport(config.transport(), SERVICE, client=http_client,
                                       limiter=config.create_limiter(SERVICE, None))

    def submit(self, video_url: str, *, callback_url: str | None = None) -> Submission:
        validate_video_url(video_url)
        return _submission(self.transport.call(self.api.remove(video_url)))

    def credits(self) -> CreditBalance:
        return self.transport.call(self.api.credits())


class AsyncSaveSoraClient(AsyncWatermarkService):
    service_name = SERVICE
    credits_per_video = CREDITS_PER_VIDEO
    asynchronous = False

    def __init__(self, config: ServiceConfig, *, http_client: httpx.AsyncClient | None = None) -> None:
        super().__init__(config)
        self.api = SaveSoraApi(config.api_key.get_secret_value())
        self.transport = AsyncTransport(config.transport(), SERVICE, client=http_client,
                                        limiter=config.create_limiter(SERVICE, None))

    async def submit(self, video_url: str, *, callback_url: str | None = None) -> Submission:
        validate_video_url(video_url)
        return _submission(await self.transport.call(self.api.remove(video_url)))

    async def credits(self) -> CreditBalance:
        return await self.transport.call(self.api.credits())
