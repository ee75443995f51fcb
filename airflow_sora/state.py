"""Money is state: a durable per-video record (intent -> task id -> landed) next to the output.

Written before every paid create and right after it, the record lets a retry, a cleared task or a worker
killed at any point resume the existing remote task instead of paying for a second one. It is keyed by
dag/task/run/map index and video URL, never the try number, and lives in object storage because Airflow 3
clears XCom between tries.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from airflow.sdk import ObjectStoragePath
from pydantic import BaseModel, ConfigDict

from airflow_sora.services.models import RemovalResult
from airflow_sora.storage import read_bytes_or_none, write_atomic

STATE_DIR = "_state"


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Phase(str, Enum):
    INTENT = "intent"  # about to create: if no task id follows, the create may or may not have happened
    NOT_CREATED = "not_created"  # the service answered the create with an error: nothing was charged
    SUBMITTED = "submitted"  # a task id (Kie) or a finished result (SaveSora) is known
    LANDED = "landed"
    FAILED = "failed"  # the service failed the work; not resubmitted unless asked
    REJECTED = "rejected"  # the service refused the video URL


@dataclass(frozen=True)
class RunScope:
    dag_id: str
    task_id: str
    run_id: str
    map_index: int = -1

    def as_dict(self) -> dict[str, Any]:
        return {"dag_id": self.dag_id, "task_id": self.task_id, "run_id": self.run_id,
                "map_index": self.map_index}


class VideoRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    video_url: str
    service: str
    phase: Phase
    scope: dict[str, Any]
    creates: int = 0  # paid creates sent for this video in this logical run
    task_id: str | None = None
    result: RemovalResult | None = None  # SaveSora returns it at once; Kie's is rebuilt from the poll
    output_uri: str | None = None
    sidecar_uri: str | None = None
    sha256: str | None = None
    size: int | None = None
    error: str | None = None
    submitted_at: str | None = None
    updated_at: str = ""


class VideoStateStore:
    """Reads and writes ``<output>/_state/<dag>/<run>/<task>[.<map>]/<sha of URL>.json`` atomically."""

    def __init__(self, output: ObjectStoragePath, scope: RunScope) -> None:
        self.scope = scope
        self.root = output / STATE_DIR / _safe(scope.dag_id) / _safe(scope.run_id) / _task_dir(scope)

    def path_for(self, video_url: str) -> ObjectStoragePath:
        return self.root / f"{hashlib.sha256(video_url.encode()).hexdigest()[:40]}.json"

    def load(self, video_url: str) -> VideoRecord | None:
        raw = read_bytes_or_none(self.path_for(video_url))
        if raw is None:
            return None
        record = VideoRecord.model_validate_json(raw)
        return record if record.video_url == video_url else None

    def save(self, record: VideoRecord) -> VideoRecord:
        record = record.model_copy(update={"updated_at": utcnow(), "scope": self.scope.as_dict()})
        write_atomic(self.path_for(record.video_url), json.dumps(record.model_dump(mode="json"),
                                                                  indent=1).encode())
        return record


def _safe(part: str) -> str:
    """Keep keys readable but unable to climb out of the state folder."""
    cleaned = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in part).strip(".")
    return cleaned or "_"


def _task_dir(scope: RunScope) -> str:
    name = _safe(scope.task_id)
    return name if scope.map_index < 0 else f"{name}.{scope.map_index}"
