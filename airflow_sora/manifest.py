"""The small manifest the operator returns through XCom: one line per video, plus counts. Never bytes."""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict

from airflow_sora.lifecycle import Settled

#: A video's final status in the manifest: the life cycle's final word, under its long-standing name.
VideoStatus = Settled


class VideoOutcome(BaseModel):
    model_config = ConfigDict(extra="ignore")

    video_url: str
    post_id: str | None = None
    variants: list[str] = []  # other URLs given for the same post: one video, charged and landed once
    status: VideoStatus
    output_uri: str | None = None
    sidecar_uri: str | None = None
    size: int | None = None
    sha256: str | None = None
    task_id: str | None = None
    credits_charged: float = 0.0
    error: str | None = None
    retryable: bool = False  # a later try of the same task can still finish this video at no new cost


class Manifest(BaseModel):
    service: str
    output_path: str
    videos: list[VideoOutcome]
    worker_seconds: float = 0.0  # time this task held a worker slot (deferral excluded)
    balance_after: float | None = None  # the account's credits once this try was done, when the service says

    @property
    def credits_charged(self) -> float:
        """Credits this logical run's creates cost, retries included (refunds and error replies excluded)."""
        return sum(v.credits_charged for v in self.videos)

    @property
    def counts(self) -> dict[str, int]:
        counted = Counter(v.status.value for v in self.videos)
        return {status.value: counted.get(status.value, 0) for status in VideoStatus} | {"total": len(self.videos)}

    def to_xcom(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["counts"] = self.counts
        data["credits_charged"] = self.credits_charged
        return data
