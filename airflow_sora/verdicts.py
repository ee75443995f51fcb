"""The output folder's memory of what the service said about a video, across runs.

A daily DAG whose list holds a video the service fails (a draft, a removed post) would otherwise pay for it
every day. When the service fails a paid attempt or refuses a URL as invalid, the verdict is written to
``<output>/_state/_verdicts/<post_id>.json``; later runs into the same folder read it (a listing page, which
holds every verdict of most folders, then only the verdicts that exist; past a page, a lookup per video) and
``lifecycle.decide`` holds the video back: a failure for ``retry_failed_after``, a rejection until asked.
A failure the service refunded (SaveSora 5002) leaves no verdict: trying it again costs nothing unless it succeeds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from airflow.sdk import ObjectStoragePath
from pydantic import BaseModel, ValidationError

from airflow_sora.lifecycle import PastVerdict
from airflow_sora.state import STATE_DIR, utcnow
from airflow_sora.storage import delete_if_present, listing_budget, read_present, write_atomic

log = logging.getLogger(__name__)

VERDICTS_DIR = "_verdicts"


class Verdict(BaseModel):
    schema_version: int = 1
    post_id: str
    video_url: str
    service: str
    kind: Literal["failed", "rejected"]
    reason: str
    at: str
    run: dict[str, Any]  # dag_id, run_id, task_id, map_index of the run that was told

    def past(self, now: datetime | None = None) -> PastVerdict:
        given = datetime.fromisoformat(self.at)
        return PastVerdict(self.kind, ((now or datetime.now(timezone.utc)) - given).total_seconds())

    def explain(self, *, retry_failed_after: float | None) -> str:
        """Why the video is not paid for again, and how to force it."""
        told = (f"the service {'rejected it as invalid' if self.kind == 'rejected' else 'failed it'} in run "
                f"{self.run.get('run_id')} of {self.run.get('dag_id')} at {self.at}: {self.reason}")
        if self.kind == "rejected":
            return f"{told}. Not resubmitted automatically: set retry_rejected=True to pay for a new attempt"
        if retry_failed_after is None:
            return f"{told}. Not paid for again automatically (retry_failed_after=None): set retry_failed_after=0"
        until = datetime.fromisoformat(self.at) + timedelta(seconds=retry_failed_after)
        return (f"{told}. Not paid for again before {until.isoformat(timespec='seconds')} "
                f"(retry_failed_after={retry_failed_after:g} s): set retry_failed_after=0 to retry now")


class VerdictBook:
    """Reads and writes the verdicts of one output folder."""

    def __init__(self, output: ObjectStoragePath) -> None:
        self.root = output / STATE_DIR / VERDICTS_DIR

    def load(self, post_ids: Iterable[str]) -> dict[str, Verdict]:
        """The verdicts on ``post_ids``. Only failures leave one, so the folder is small: a page of listing
        first (one request answers a whole run), then lookups of the videos it did not reach, whatever the
        folder has gathered over the years."""
        names = [f"{p}.json" for p in dict.fromkeys(post_ids)]
        raws = read_present(self.root, names, pages=listing_budget(len(names), at_least=1))
        verdicts: dict[str, Verdict] = {}
        for name, raw in raws.items():
            post_id = name.removesuffix(".json")
            try:
                verdict = Verdict.model_validate_json(raw)
            except ValidationError:
                log.warning("Ignoring the unreadable verdict %s", self.root / name)
                continue
            if verdict.post_id == post_id:
                verdicts[post_id] = verdict
        return verdicts

    def record(self, *, post_id: str, video_url: str, service: str, kind: Literal["failed", "rejected"],
               reason: str, run: dict[str, Any]) -> None:
        verdict = Verdict(post_id=post_id, video_url=video_url, service=service, kind=kind, reason=reason,
                          at=utcnow(), run=run)
        write_atomic(self.root / f"{post_id}.json", json.dumps(verdict.model_dump(mode="json"), indent=1).encode(),
                     outlast=True)  # a verdict lost is a video paid for again by the next run

    def forget(self, post_id: str) -> None:
        """The video landed after all: the old verdict no longer holds. A store that fails the delete changes
        nothing that costs money (a landed video is skipped before any verdict is looked at)."""
        try:
            delete_if_present(self.root / f"{post_id}.json")
        except Exception as error:
            log.warning("Could not forget the verdict on %s (%s: %s); the video is landed, so it is skipped anyway",
                        post_id, type(error).__name__, error)
