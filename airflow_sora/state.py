"""Money is state: a durable, versioned per-video record (intent -> task id -> landed) next to the output.

Written before every paid create and right after it, the record lets a retry, a cleared task or a worker
killed at any point resume the existing remote task instead of paying for a second one. It is keyed by
dag/task/run/map index and post id, never the try number, and lives in object storage because Airflow 3
clears XCom between tries. Which phases exist and when a record is written is decided in ``lifecycle``.

A record that cannot be read, or that belongs to another video, service or connection, stops that video with
a ``StateRecordError`` naming the file and what to do: never a silent resubmit, never a resume through the
wrong service.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from airflow.sdk import ObjectStoragePath
from pydantic import BaseModel, ConfigDict, ValidationError

from airflow_sora.lifecycle import Phase
from airflow_sora.services.models import RemovalResult
from airflow_sora.storage import read_bytes_or_none, read_listed, write_atomic
from airflow_sora.videos import VideoRef

STATE_DIR = "_state"
SCHEMA_VERSION = 2  # 1: keyed by a hash of the URL, no post id, "submitted" with a result meant finished

__all__ = ["SCHEMA_VERSION", "STATE_DIR", "Phase", "RunScope", "StateRecordError", "VideoRecord",
           "VideoStateStore", "utcnow"]


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


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

    schema_version: int = SCHEMA_VERSION
    video_url: str
    post_id: str | None = None  # None only in version 1 records
    service: str
    conn_id: str | None = None
    phase: Phase
    scope: dict[str, Any]
    creates: int = 0  # paid creates sent for this video in this logical run
    task_id: str | None = None
    result: RemovalResult | None = None  # SaveSora returns it at once; Kie's is rebuilt from a (free) poll
    output_uri: str | None = None
    sidecar_uri: str | None = None
    sha256: str | None = None
    size: int | None = None
    error: str | None = None
    submitted_at: str | None = None
    updated_at: str = ""


class StateRecordError(Exception):
    """A state record this try must not act on; the message names the file and what to do."""


class VideoStateStore:
    """Reads and writes ``<output>/_state/<dag>/<run>/<task>[.<map>]/<post_id>.json`` atomically."""

    def __init__(self, output: ObjectStoragePath, scope: RunScope, *, service: str,
                 conn_id: str | None = None) -> None:
        self.scope = scope
        self.service = service
        self.conn_id = conn_id
        self.root = output / STATE_DIR / _safe(scope.dag_id) / _safe(scope.run_id) / _task_dir(scope)

    def path_for(self, post_id: str) -> ObjectStoragePath:
        return self.root / f"{post_id}.json"

    def new_record(self, video: VideoRef) -> VideoRecord:
        """The record of a video this run has not touched yet (not written until its first event)."""
        return VideoRecord(video_url=video.url, post_id=video.post_id, service=self.service,
                           conn_id=self.conn_id, phase=Phase.NOT_CREATED, scope=self.scope.as_dict())

    def load_all(self, videos: Iterable[VideoRef]) -> dict[str, VideoRecord | StateRecordError | None]:
        """Every video's record by post id: one listing, then reads of only the records that exist, a few at a
        time. A fresh run costs one request however many videos it has; the folder holds this run's records
        only, so the listing grows with the run, never with the output folder's history."""
        names = {video.post_id: (video, f"{video.post_id}.json", _legacy_name(video.url)) for video in videos}
        raws = read_listed(self.root, [n for _, current, legacy in names.values() for n in (current, legacy)])
        loaded: dict[str, VideoRecord | StateRecordError | None] = {}
        for post_id, (video, current, legacy) in names.items():
            name = current if current in raws else legacy  # a version 1 record only where no current one is
            loaded[post_id] = self._check(raws[name], video, self.root / name) if name in raws else None
        return loaded

    def load(self, video: VideoRef) -> VideoRecord | None:
        """One video's record (raises ``StateRecordError`` for one this try must not act on)."""
        path = self.path_for(video.post_id)
        record = self._check(read_bytes_or_none(path), video, path)
        if isinstance(record, StateRecordError):
            raise record
        return record

    def save(self, record: VideoRecord) -> VideoRecord:
        post_id = record.post_id
        assert post_id, "records are written under their post id"
        record = record.model_copy(update={"updated_at": utcnow(), "scope": self.scope.as_dict(),
                                           "schema_version": SCHEMA_VERSION, "service": self.service,
                                           "conn_id": self.conn_id})
        # ``outlast``: a record lost after a paid create leaves a video a retry may not land (never pays for).
        write_atomic(self.path_for(post_id), json.dumps(record.model_dump(mode="json"), indent=1).encode(),
                     outlast=True)
        return record

    # internals ------------------------------------------------------------------------------------
    def _check(self, raw: bytes | None, video: VideoRef, path: ObjectStoragePath
               ) -> VideoRecord | StateRecordError | None:
        if raw is None:
            return None
        fix = (f"Delete {path} to start this video afresh in this run (check the service's dashboard first: "
               "a create recorded there may have been paid), or run it under a new run id.")
        try:
            data = json.loads(raw)
            record = _upgrade(VideoRecord.model_validate(data), video)
        except (ValueError, ValidationError) as error:
            reason = str(error).splitlines()[0]
            return StateRecordError(f"state record {path} cannot be read ({reason}); nothing was sent for "
                                    f"{video.url}. {fix}")
        if record.schema_version > SCHEMA_VERSION:
            return StateRecordError(f"state record {path} has schema version {record.schema_version}, newer than "
                                    f"this provider understands ({SCHEMA_VERSION}); upgrade "
                                    "airflow-provider-sora on every worker before resuming this run.")
        if record.post_id != video.post_id:
            return StateRecordError(f"state record {path} belongs to post {record.post_id}, not to {video.url}; "
                                    f"nothing was sent. {fix}")
        if record.service != self.service:
            return StateRecordError(
                f"state record {path} was written through {record.service}, but this try uses {self.service}: "
                f"{video.url} is not resumed through another service. Use the connection the run started "
                f"with ({record.conn_id}), or {fix[0].lower()}{fix[1:]}")
        if record.conn_id and self.conn_id and record.conn_id != self.conn_id:
            return StateRecordError(
                f"state record {path} was written through connection {record.conn_id!r}, but this try uses "
                f"{self.conn_id!r}: its task id belongs to that account. Use {record.conn_id!r} to resume "
                f"{video.url}, or {fix[0].lower()}{fix[1:]}")
        return record


def _upgrade(record: VideoRecord, video: VideoRef) -> VideoRecord:
    """Read version 1 records (written before post ids keyed the state) as version 2."""
    if "schema_version" in record.model_fields_set:
        return record
    changes: dict[str, Any] = {"schema_version": 2}
    if record.post_id is None and record.video_url in (video.url, *video.variants):
        changes["post_id"] = video.post_id
    if record.phase is Phase.SUBMITTED and record.result is not None:
        changes["phase"] = Phase.FINISHED
    return record.model_copy(update=changes)


def _legacy_name(video_url: str) -> str:
    return f"{hashlib.sha256(video_url.encode()).hexdigest()[:40]}.json"


def _safe(part: str) -> str:
    """Keep keys readable but unable to climb out of the state folder."""
    cleaned = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in part).strip(".")
    return cleaned or "_"


def _task_dir(scope: RunScope) -> str:
    name = _safe(scope.task_id)
    return name if scope.map_index < 0 else f"{name}.{scope.map_index}"
