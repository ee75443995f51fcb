"""The ledger: what this try knows about each video, moved only through the life cycle's transitions.

Every part (submit, wait, land) reports what happened as a ``lifecycle.Event``; the ledger applies the
transition, writes the record when the transition says so, and counts the money. Progress lines, metrics
and the manifest all read from here, so they cannot disagree about where a video stands.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from airflow_sora import metrics
from airflow_sora.costs import creates_within
from airflow_sora.lifecycle import Event, Phase, Settled, transition
from airflow_sora.manifest import VideoOutcome, VideoStatus
from airflow_sora.progress import Counts
from airflow_sora.state import VideoRecord, VideoStateStore
from airflow_sora.verdicts import VerdictBook
from airflow_sora.videos import VideoRef

_FINISHED = (Phase.FINISHED, Phase.LANDED)


@dataclass
class Entry:
    video: VideoRef
    record: VideoRecord | None = None  # None: nothing recorded for this video in this run yet
    outcome: VideoOutcome | None = None
    sent_at: float | None = field(default=None, repr=False)  # monotonic time of this try's create
    claim_token: str | None = field(default=None, repr=False)  # this run holds the video's claim
    claimed_at: float | None = None  # epoch seconds the claim was taken
    claimed_by: dict[str, Any] | None = None  # another live run holds the claim: wait for its file
    had_verdict: bool = False  # the folder remembered a verdict for it (forgotten once it lands)

    @property
    def phase(self) -> Phase | None:
        return self.record.phase if self.record else None


class Ledger:
    """Thread-safe: creates and landings run in small thread pools."""

    def __init__(self, videos: Iterable[VideoRef], store: VideoStateStore, *, credits_per_video: float,
                 pre_rejected: int = 0, on_change: Callable[[], None] | None = None,
                 verdicts: VerdictBook | None = None, max_credits: float | None = None) -> None:
        self.entries: dict[str, Entry] = {v.post_id: Entry(v) for v in videos}
        self.store = store
        self.credits_per_video = credits_per_video
        self.pre_rejected = pre_rejected
        self.on_change = on_change or (lambda: None)
        self.verdicts = verdicts
        self.max_credits = max_credits
        self.on_finished: Callable[[str], None] | None = None  # told of each video whose result is now known
        self._reserved = 0  # creates about to be sent, counted against the budget before they are
        self._lock = threading.RLock()

    def __getitem__(self, post_id: str) -> Entry:
        return self.entries[post_id]

    def apply(self, post_id: str, event: Event, **changes: Any) -> VideoRecord:
        """Move one video along ``event``'s edge; persist first where the life cycle says so."""
        entry = self.entries[post_id]
        with self._lock:
            rule = transition(entry.phase, event)
            base = entry.record or self.store.new_record(entry.video)
            record = base.model_copy(update={"phase": rule.target, "creates": base.creates + rule.charge,
                                             **changes})
        if rule.persist:
            record = self.store.save(record)
        if rule.verdict is not None and self.verdicts is not None:
            self.verdicts.record(post_id=post_id, video_url=entry.video.url, service=self.store.service,
                                 kind=rule.verdict, reason=record.error or event.value, run=self.store.scope.as_dict())
        with self._lock:
            entry.record = record
            if event is Event.CREATE_SENT:
                entry.sent_at = time.monotonic()
                if self._reserved:
                    self._reserved -= 1  # the reservation is now a counted create
        if rule.target is Phase.FINISHED and event is not Event.LANDING_FAILED and self.on_finished is not None:
            self.on_finished(post_id)
        if rule.charge:  # counters only go up (OpenTelemetry refuses negative counts): a refund is its own
            name = "credits.charged" if rule.charge > 0 else "credits.refunded"
            metrics.incr(name, int(abs(rule.charge) * self.credits_per_video), service=self.store.service)
        self.on_change()
        return record

    def observe_latency(self, post_id: str, service_seconds: float | None) -> None:
        """The service's own time for a finished task, else the time since this try sent its create."""
        entry = self.entries[post_id]
        if service_seconds is None and entry.sent_at is not None:
            service_seconds = time.monotonic() - entry.sent_at
        if service_seconds is not None:
            metrics.timing("service.latency", service_seconds, service=self.store.service)

    def settle(self, post_id: str, status: Settled, *, error: str | None = None, retryable: bool = False,
               **found: Any) -> VideoOutcome:
        """The final word on a video for this try. ``found`` fills in what the record does not know (a
        skipped video's landed file)."""
        entry = self.entries[post_id]
        record = entry.record
        known: dict[str, Any] = {}
        if record is not None:
            known = {"output_uri": record.output_uri, "sidecar_uri": record.sidecar_uri, "size": record.size,
                     "sha256": record.sha256, "task_id": record.task_id}
        outcome = VideoOutcome(
            video_url=entry.video.url, post_id=entry.video.post_id, variants=list(entry.video.variants),
            status=status, credits_charged=self.credits_of(entry), error=error,
            retryable=retryable, **(known | {k: v for k, v in found.items() if v is not None}),
        )
        with self._lock:
            entry.outcome = outcome
        self.on_change()
        return outcome

    def reserve_create(self) -> bool:
        """Whether one more create fits in ``max_credits`` (this logical run's charges, retries included, and
        creates whose outcome is unknown counted as charged); if so, it is reserved until sent."""
        cap = creates_within(self.max_credits, self.credits_per_video)
        with self._lock:
            if cap is None:
                return True
            creates = sum(e.record.creates for e in self.entries.values() if e.record) + self._reserved
            if creates + 1 > cap:
                return False
            self._reserved += 1
            return True

    def budget_message(self) -> str:
        cap = creates_within(self.max_credits, self.credits_per_video)
        return (f"not submitted: budget max_credits={self.max_credits:g} would be exceeded (it allows {cap} "
                f"create(s) at {self.credits_per_video:g} credits, and this run has sent or reserved them all); "
                "raise max_credits to pay for it")

    def reopen(self, post_id: str) -> None:
        """Forget this try's outcome for a video that gets another pass (a create to repeat)."""
        with self._lock:
            self.entries[post_id].outcome = None

    def credits_of(self, entry: Entry) -> float:
        return (entry.record.creates if entry.record else 0) * self.credits_per_video

    # views ----------------------------------------------------------------------------------------
    def unsettled(self, phase: Phase) -> list[Entry]:
        with self._lock:
            return [e for e in self.entries.values() if e.outcome is None and e.phase is phase]

    def outcomes(self) -> list[VideoOutcome]:
        with self._lock:
            return [e.outcome for e in self.entries.values() if e.outcome is not None]

    def counts(self) -> Counts:
        with self._lock:
            entries = list(self.entries.values())
        settled = [e.outcome.status for e in entries if e.outcome is not None]
        return Counts(
            total=len(entries) + self.pre_rejected,
            submitted=sum(1 for e in entries if e.record is not None and (e.record.task_id or e.record.result)),
            running=sum(1 for e in entries if e.outcome is None and e.phase is Phase.SUBMITTED),
            finished=sum(1 for e in entries if e.phase in _FINISHED
                         or (e.phase is Phase.FAILED and e.record is not None and e.record.task_id)),
            landed=settled.count(VideoStatus.LANDED),
            skipped=settled.count(VideoStatus.SKIPPED),
            failed=settled.count(VideoStatus.FAILED),
            rejected=settled.count(VideoStatus.REJECTED) + self.pre_rejected,
            not_submitted=settled.count(VideoStatus.NOT_SUBMITTED),
            credits=sum(self.credits_of(e) for e in entries),
        )

    # deferral -------------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """What a resume after deferral needs, so it does not plan again (no Nones; the results a finished
        video carries, so it lands without asking the service again)."""
        with self._lock:
            return {post_id: {"record": e.record.model_dump(mode="json", exclude_none=True, exclude={"scope"})
                              if e.record else None,
                              "outcome": e.outcome.model_dump(mode="json", exclude_none=True)
                              if e.outcome else None,
                              "claim": [e.claim_token, e.claimed_at] if e.claim_token else None,
                              "claimed_by": e.claimed_by}
                    for post_id, e in self.entries.items()}

    def restore(self, snapshot: dict[str, Any]) -> None:
        scope = self.store.scope.as_dict()
        with self._lock:
            for post_id, saved in snapshot.items():
                entry = self.entries.get(post_id)
                if entry is None:
                    continue
                if saved.get("record"):
                    entry.record = VideoRecord.model_validate({**saved["record"], "scope": scope})
                if saved.get("outcome"):
                    entry.outcome = VideoOutcome.model_validate(saved["outcome"])
                if saved.get("claim"):
                    entry.claim_token, entry.claimed_at = saved["claim"]
                if saved.get("claimed_by"):  # another run is paying for it: the resumed try waits for its file
                    entry.claimed_by = saved["claimed_by"]
