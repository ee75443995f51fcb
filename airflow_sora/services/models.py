"""Typed results every service client returns. Nothing past the parsers touches raw dicts."""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field


class TaskState(str, Enum):
    """Our view of a remote task. Any state the service invents later reads as ``RUNNING``."""

    NOT_VISIBLE = "not_visible"  # Kie answered "recordInfo is null": created, not yet queryable
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (TaskState.SUCCEEDED, TaskState.FAILED)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class TaskStatus(_Frozen):
    """One poll of an asynchronous task."""

    task_id: str
    state: TaskState
    raw_state: str | None = None
    result_urls: tuple[str, ...] = ()
    fail_code: str | None = None
    fail_message: str | None = None
    video_url: str | None = None
    cost_time: float | None = None
    created_at_ms: int | None = None
    completed_at_ms: int | None = None

    @property
    def terminal(self) -> bool:
        return self.state.terminal


class RemovalResult(_Frozen):
    """A finished removal: where to download the clean video, and what we know about it."""

    service: str
    video_url: str
    post_id: str
    clean_url: str
    task_id: str | None = None
    source_url: str | None = None
    prompt: str | None = None
    thumbnail_url: str | None = None
    credits_used: float | None = None
    remaining_credits: float | None = None


class Submission(_Frozen):
    """What a create returned: a task id to poll (Kie), or the finished result at once (SaveSora)."""

    service: str
    video_url: str
    task_id: str | None = None
    result: RemovalResult | None = None

    @property
    def finished(self) -> bool:
        return self.result is not None


class CreditBalance(_Frozen):
    service: str
    balance: float
    details: dict[str, float] = Field(default_factory=dict)
