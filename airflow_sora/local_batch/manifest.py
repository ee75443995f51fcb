"""The manifest the local operator returns through XCom: one line per file, plus counts. Never bytes.

It has the service manifest's shape (``service``, ``output_path``, ``videos``, ``counts``, ``worker_seconds``)
so code reading either finds the same keys; a file's line names its source path instead of a share link, and
says what the engine found.
"""

from __future__ import annotations

from collections import Counter
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict

SERVICE = "local"


class FileStatus(str, Enum):
    LANDED = "landed"  # cleaned and landed
    NO_MARK = "no_mark"  # no mark found: landed unchanged (``if_no_mark="copy"``)
    SKIPPED = "skipped"  # already landed (``if_exists="skip"``), or no mark with ``if_no_mark="skip"``
    FAILED = "failed"  # not cleaned or not landed; ``error`` says why


class FileOutcome(BaseModel):
    model_config = ConfigDict(extra="ignore")

    source: str
    name: str | None = None  # lands as ``<name>.mp4``: the post id when the file name carries one, else the stem
    post_id: str | None = None
    status: FileStatus
    output_uri: str | None = None
    sidecar_uri: str | None = None
    c2pa_uri: str | None = None
    size: int | None = None
    sha256: str | None = None
    source_size: int | None = None
    source_sha256: str | None = None
    mark_found: bool | None = None
    segments: int | None = None
    confidence: float | None = None
    frames: int | None = None
    seconds: float | None = None  # the engine's time on this file
    error: str | None = None
    retryable: bool = False  # the trouble was the store's, not the file's: a retry of the task may land it


class LocalManifest(BaseModel):
    service: str = SERVICE
    engine: str
    output_path: str
    videos: list[FileOutcome]
    worker_seconds: float = 0.0

    @property
    def counts(self) -> dict[str, int]:
        counted = Counter(v.status.value for v in self.videos)
        return {status.value: counted.get(status.value, 0) for status in FileStatus} | {"total": len(self.videos)}

    @property
    def frames(self) -> int:
        """Frames the engine worked through in this try (files already landed were not touched)."""
        return sum(v.frames or 0 for v in self.videos)

    def to_xcom(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["counts"] = self.counts
        return data
