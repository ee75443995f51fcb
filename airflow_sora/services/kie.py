"""Kie.ai ``sora-watermark-remover``: create a task, poll ``recordInfo``, refresh result links.

``KieApi`` builds requests and parses replies (no I/O); ``KieClient`` and ``AsyncKieClient`` only choose
the transport, so both paths share every rule about the spec's variants.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from airflow_sora.ratelimit import kie_default_rate
from airflow_sora.services.base import AsyncWatermarkService, ServiceConfig, WatermarkService
from airflow_sora.services.envelope import Envelope, Reply, decode_envelope, lenient_number
from airflow_sora.services.errors import (
    AuthError,
    InsufficientCreditsError,
    InvalidVideoUrlError,
    QuotaExceededError,
    RateLimitedError,
    RequestRejectedError,
    ServiceError,
    ServiceProtocolError,
    ServiceUnavailableError,
    SubmitOutcomeUnknownError,
    TaskFailedError,
    TaskNotFoundError,
)
from airflow_sora.services.models import CreditBalance, RemovalResult, Submission, TaskState, TaskStatus
from airflow_sora.services.transport import AsyncTransport, Operation, SyncTransport
from airflow_sora.services.urls import post_id_from_url, validate_video_url

SERVICE = "kie"
MODEL = "sora-watermark-remover"
DEFAULT_BASE_URL = "https://api.kie.ai"
DASHBOARD_URL = "https://kie.ai/logs"
CREATE_PATH = "/api/v1/jobs/createTask"
RECORD_PATH = "/api/v1/jobs/recordInfo"
DOWNLOAD_URL_PATH = "/api/v1/common/download-url"
CREDIT_PATH = "/api/v1/chat/credit"
CREDITS_PER_TASK = 10.0
RECORD_NOT_VISIBLE = "recordinfo is null"


def raise_for_envelope(env: Envelope, operation: str, *, creating: bool = False) -> None:
    """Map a Kie error envelope to our typed error (see the spec's code table)."""
    if env.ok:
        return
    code, text = env.code, f"{operation}: {env.message or 'no message'}"
    error: ServiceError
    if code in (401, 403):
        error = AuthError(text, service=SERVICE, code=code)
    elif code == 402:
        error = InsufficientCreditsError(text, service=SERVICE, code=code, required=CREDITS_PER_TASK)
    elif code == 433:
        error = QuotaExceededError(text, service=SERVICE, code=code)
    elif code == 429:
        error = RateLimitedError(text, service=SERVICE, code=code, retry_after=env.retry_after)
    elif code == 455 or (code >= 500 and code not in (501, 505)):
        error = ServiceUnavailableError(text, service=SERVICE, code=code)
    elif code == 501:
        error = TaskFailedError(text, service=SERVICE, code=code)
    elif code == 404 and not creating:
        error = TaskNotFoundError(text, service=SERVICE, code=code)
    elif code == 422 and creating and "video_url" in text.lower():
        error = InvalidVideoUrlError(text, service=SERVICE, code=code)  # a verdict on the video itself
    else:  # 400, 404, 422 elsewhere, 505 and anything undocumented
        error = RequestRejectedError(text, service=SERVICE, code=code)
    raise error


def _lenient_json(value: Any) -> Any:
    """Kie sends nested JSON as a string (``resultJson``, ``param``) or, sometimes, as an object."""
    if isinstance(value, str):
        try:
            return json.loads(value) if value.strip() else None
        except ValueError:
            return value
    return value


class KieRecord(BaseModel):
    """``recordInfo`` data, every field optional: the spec allows nulls anywhere."""

    model_config = ConfigDict(extra="ignore")

    task_id: str | None = Field(default=None, validation_alias=AliasChoices("taskId", "task_id"))
    state: str | None = None
    param: Any = None
    result_json: Any = Field(default=None, validation_alias=AliasChoices("resultJson", "result_json"))
    fail_code: str | None = Field(default=None, validation_alias=AliasChoices("failCode", "fail_code"))
    fail_msg: str | None = Field(default=None, validation_alias=AliasChoices("failMsg", "fail_msg"))
    cost_time: float | None = Field(default=None, validation_alias=AliasChoices("costTime", "cost_time"))
    create_time: float | None = Field(default=None, validation_alias=AliasChoices("createTime", "create_time"))
    complete_time: float | None = Field(
        default=None, validation_alias=AliasChoices("completeTime", "complete_time")
    )

    @field_validator("task_id", "state", "fail_code", "fail_msg", mode="before")
    @classmethod
    def _text_or_none(cls, value: Any) -> str | None:
        if value is None or isinstance(value, (dict, list)):
            return None
        return str(value)

    @field_validator("cost_time", "create_time", "complete_time", mode="before")
    @classmethod
    def _number_or_none(cls, value: Any) -> float | None:
        return lenient_number(value)

    def result_urls(self) -> tuple[str, ...]:
        result = _lenient_json(self.result_json)
        urls: Any = result.get("resultUrls") if isinstance(result, dict) else None
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list):
            return ()
        return tuple(u for u in urls if isinstance(u, str) and u.startswith(("https://", "http://")))

    def video_url(self) -> str | None:
        param = _lenient_json(self.param)
        inputs = param.get("input") if isinstance(param, dict) else None
        url = inputs.get("video_url") if isinstance(inputs, dict) else None
        return url if isinstance(url, str) else None


class _TaskIdReply(BaseModel):
    model_config = ConfigDict(extra="ignore")
    task_id: str = Field(validation_alias=AliasChoices("taskId", "task_id"))

    @field_validator("task_id", mode="before")
    @classmethod
    def _non_empty(cls, value: Any) -> str:
        if not isinstance(value, (str, int)) or isinstance(value, bool) or not str(value).strip():
            raise ValueError("task id must be a non-empty string")
        return str(value)


def status_from_record(record: KieRecord, task_id: str) -> TaskStatus:
    """Our ``TaskStatus`` from a record. Unknown states are still running; a success without a URL failed."""
    raw = (record.state or "").strip().lower()
    urls = record.result_urls()
    fail_code, fail_message = record.fail_code or None, record.fail_msg or None
    if raw == "success":
        state = TaskState.SUCCEEDED if urls else TaskState.FAILED
        if not urls:
            fail_code, fail_message = "no_result_url", "the service reported success without a usable result URL"
    elif raw in ("fail", "failed", "failure", "error"):
        state = TaskState.FAILED
        fail_message = fail_message or "the service reported the task as failed without a reason"
    else:
        state = TaskState.RUNNING
    return TaskStatus(
        task_id=record.task_id or task_id,
        state=state,
        raw_state=record.state,
        result_urls=urls,
        fail_code=fail_code,
        fail_message=fail_message,
        video_url=record.video_url(),
        cost_time=record.cost_time,
        created_at_ms=int(record.create_time) if record.create_time is not None else None,
        completed_at_ms=int(record.complete_time) if record.complete_time is not None else None,
    )


def result_from_status(status: TaskStatus, video_url: str) -> RemovalResult:
    """The landing input for a succeeded task; raises ``TaskFailedError`` for anything else."""
    if status.state is not TaskState.SUCCEEDED or not status.result_urls:
        raise TaskFailedError(
            f"task {status.task_id} did not succeed: {status.fail_message or status.raw_state}",
            service=SERVICE, code=status.fail_code,
        )
    return RemovalResult(
        service=SERVICE, video_url=video_url, post_id=post_id_from_url(video_url),
        clean_url=status.result_urls[0], task_id=status.task_id, credits_used=CREDITS_PER_TASK,
    )


class KieApi:
    """Requests and reply parsers for Kie, free of I/O."""

    def __init__(self, upload_method: str = "s3") -> None:
        self.upload_method = upload_method

    def create_task(self, video_url: str, callback_url: str | None = None) -> Operation[str]:
        body: dict[str, Any] = {"model": MODEL, "input": {"video_url": video_url,
                                                          "upload_method": self.upload_method}}
        if callback_url:
            body["callBackUrl"] = callback_url
        return Operation("Kie createTask", "POST", CREATE_PATH, self.parse_create, json=body, idempotent=False,
                         paid=True)

    def record_info(self, task_id: str) -> Operation[TaskStatus]:
        def parse(reply: Reply) -> TaskStatus:
            return self.parse_record(reply, task_id)

        return Operation("Kie recordInfo", "GET", RECORD_PATH, parse, params={"taskId": task_id})

    def download_url(self, url: str) -> Operation[str]:
        return Operation("Kie download-url", "POST", DOWNLOAD_URL_PATH, self.parse_download_url, json={"url": url})

    def credit(self) -> Operation[CreditBalance]:
        return Operation("Kie credit", "GET", CREDIT_PATH, self.parse_credit)

    @staticmethod
    def parse_create(reply: Reply) -> str:
        env = decode_envelope(reply, service=SERVICE, operation="Kie createTask")
        raise_for_envelope(env, "Kie createTask", creating=True)
        try:
            return _TaskIdReply.model_validate(env.data).task_id
        except ValidationError:
            raise SubmitOutcomeUnknownError(
                "Kie createTask: the service accepted the task but the reply carried no task id; it may "
                "have been charged", service=SERVICE,
            ) from None

    @staticmethod
    def parse_record(reply: Reply, task_id: str) -> TaskStatus:
        env = decode_envelope(reply, service=SERVICE, operation="Kie recordInfo")
        if env.code == 422 and RECORD_NOT_VISIBLE in env.message.lower():
            return TaskStatus(task_id=task_id, state=TaskState.NOT_VISIBLE, raw_state=None)
        raise_for_envelope(env, "Kie recordInfo")
        if not isinstance(env.data, dict):
            raise ServiceProtocolError(f"Kie recordInfo: expected an object in 'data' for task {task_id}",
                                       service=SERVICE)
        try:
            record = KieRecord.model_validate(env.data)
        except ValidationError:  # every field is lenient; this is a last line of defence for the triggerer
            raise ServiceProtocolError(f"Kie recordInfo: unreadable record for task {task_id}",
                                       service=SERVICE) from None
        return status_from_record(record, task_id)

    @staticmethod
    def parse_download_url(reply: Reply) -> str:
        env = decode_envelope(reply, service=SERVICE, operation="Kie download-url")
        raise_for_envelope(env, "Kie download-url")
        data = env.data
        if isinstance(data, dict):
            data = data.get("url") or data.get("downloadUrl") or data.get("download_url")
        if not isinstance(data, str) or not data.startswith(("https://", "http://")):
            raise ServiceProtocolError("Kie download-url: reply carried no URL", service=SERVICE)
        return data

    @staticmethod
    def parse_credit(reply: Reply) -> CreditBalance:
        env = decode_envelope(reply, service=SERVICE, operation="Kie credit")
        raise_for_envelope(env, "Kie credit")
        balance = lenient_number(env.data)
        if balance is None:
            raise ServiceProtocolError("Kie credit: 'data' is not a number", service=SERVICE)
        return CreditBalance(service=SERVICE, balance=balance)


def _auth_headers(config: ServiceConfig) -> dict[str, str]:
    return {"Authorization": f"Bearer {config.api_key.get_secret_value()}"}


class KieClient(WatermarkService):
    service_name = SERVICE
    credits_per_video = CREDITS_PER_TASK
    asynchronous = True
    refreshable_links = True

    def __init__(self, config: ServiceConfig, *, http_client: httpx.Client | None = None) -> None:
        super().__init__(config)
        self.api = KieApi(config.upload_method)
        self.transport = SyncTransport(config.transport(_auth_headers(config)), SERVICE, client=http_client,
                                       limiter=config.create_limiter(SERVICE, kie_default_rate()))

    def submit(self, video_url: str, *, callback_url: str | None = None) -> Submission:
        validate_video_url(video_url)
        task_id = self.transport.call(self.api.create_task(video_url, callback_url))
        return Submission(service=SERVICE, video_url=video_url, task_id=task_id)

    def get_status(self, task_id: str) -> TaskStatus:
        return self.transport.call(self.api.record_info(task_id))

    def result(self, status: TaskStatus, video_url: str) -> RemovalResult:
        return result_from_status(status, video_url)

    def refresh_link(self, url: str) -> str:
        return self.transport.call(self.api.download_url(url))

    def credits(self) -> CreditBalance:
        return self.transport.call(self.api.credit())


class AsyncKieClient(AsyncWatermarkService):
    service_name = SERVICE
    credits_per_video = CREDITS_PER_TASK
    asynchronous = True
    refreshable_links = True

    def __init__(self, config: ServiceConfig, *, http_client: httpx.AsyncClient | None = None) -> None:
        super().__init__(config)
        self.api = KieApi(config.upload_method)
        self.transport = AsyncTransport(config.transport(_auth_headers(config)), SERVICE, client=http_client,
                                        limiter=config.create_limiter(SERVICE, kie_default_rate()))

    async def submit(self, video_url: str, *, callback_url: str | None = None) -> Submission:
        validate_video_url(video_url)
        task_id = await self.transport.call(self.api.create_task(video_url, callback_url))
        return Submission(service=SERVICE, video_url=video_url, task_id=task_id)

    async def get_status(self, task_id: str) -> TaskStatus:
        return await self.transport.call(self.api.record_info(task_id))

    def result(self, status: TaskStatus, video_url: str) -> RemovalResult:
        return result_from_status(status, video_url)

    async def refresh_link(self, url: str) -> str:
        return await self.transport.call(self.api.download_url(url))

    async def credits(self) -> CreditBalance:
        return await self.transport.call(self.api.credit())
