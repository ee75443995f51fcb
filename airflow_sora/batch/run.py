"""One operator try over a list of videos: the parts composed, in order, with progress at every stage.

plan (spend nothing) -> submit (pay, paced) -> wait (in the worker, or the trigger) -> land -> report.
Each part has one job and reports to the shared ``Ledger``; this class only sequences them and keeps the
person watching the log informed.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from airflow_sora.batch.claims import Claims
from airflow_sora.batch.land import LandingPool
from airflow_sora.batch.ledger import Ledger
from airflow_sora.batch.plan import Planner
from airflow_sora.batch.settings import BatchSettings
from airflow_sora.batch.submit import Submitter
from airflow_sora.batch.wait import record_statuses, wait_in_worker, waiting_task_ids
from airflow_sora.landing import ResultLander
from airflow_sora.lifecycle import Phase, Settled
from airflow_sora.manifest import VideoOutcome
from airflow_sora.polling import WaitOutcome
from airflow_sora.progress import Counts, ProgressReporter
from airflow_sora.services.base import WatermarkService
from airflow_sora.services.errors import ServiceError
from airflow_sora.services.models import TaskStatus
from airflow_sora.state import VideoStateStore
from airflow_sora.verdicts import VerdictBook
from airflow_sora.videos import VideoRef

log = logging.getLogger(__name__)


class BatchRun:
    def __init__(self, client: WatermarkService, store: VideoStateStore, lander: ResultLander,
                 settings: BatchSettings, videos: list[VideoRef], *, pre_rejected: int = 0,
                 on_submitted: Callable[[str], None] | None = None,
                 progress: ProgressReporter | None = None) -> None:
        self.client = client
        self.lander = lander
        self.settings = settings
        self.stage = "planning"
        self.progress = progress or ProgressReporter(log)
        self.verdicts = VerdictBook(lander.output)
        self.ledger = Ledger(videos, store, credits_per_video=client.credits_per_video,
                             pre_rejected=pre_rejected, on_change=self._changed, verdicts=self.verdicts,
                             max_credits=settings.max_credits)
        self.claims = (Claims(self.ledger, lander, self.verdicts, ttl=settings.claim_ttl, wait=settings.claim_wait,
                              retry_failed_after=settings.retry_failed_after)
                       if settings.if_exists == "skip" else None)  # "overwrite" pays, as it says
        self.submitter = Submitter(self.ledger, client, settings, on_submitted=on_submitted, claims=self.claims)
        self.landing = LandingPool(self.ledger, client, lander, settings, claims=self.claims)

    @property
    def account_error(self) -> ServiceError | None:
        return self.submitter.account_error

    def counts(self) -> Counts:
        return self.ledger.counts()

    def landing_as_results_come(self) -> Any:
        """Land videos while the batch is still submitting and waiting; drained when the block ends."""
        return self.landing.as_results_come()

    def ticking(self) -> Any:
        """A progress line at least every interval while the caller's block runs."""
        return self.progress.ticking(lambda: self.stage, self.counts)

    # the parts, in order --------------------------------------------------------------------------
    def plan_only(self) -> None:
        """What each video needs, from the durable records, paying for nothing (a resume without a ledger)."""
        Planner(self.ledger, self.lander, self.settings, self.verdicts, self.claims).plan()
        self._enter("waiting")

    def plan_and_submit(self) -> None:
        to_submit = Planner(self.ledger, self.lander, self.settings, self.verdicts, self.claims).plan()
        self._enter("submitting" if to_submit else "waiting")
        with long_lived_frozen():
            self.submitter.submit_all(to_submit)
            self._enter("waiting")
            self.submitter.finish_tail()

    def waiting_task_ids(self) -> list[str]:
        return waiting_task_ids(self.ledger)

    def wait_in_worker(self, deadline: float) -> WaitOutcome | None:
        if not self.waiting_task_ids():
            return None
        return wait_in_worker(self.ledger, self.client, deadline=deadline, schedule=self.settings.poll_schedule)

    def take_statuses(self, statuses: dict[str, TaskStatus]) -> None:
        """What the trigger learned while the task was deferred."""
        record_statuses(self.ledger, self.client, statuses)

    def land_and_settle(self, *, wait_error: str | None = None) -> list[VideoOutcome]:
        """Land what finished; every other video gets its reason. One outcome per video, in input order."""
        self._enter("landing")
        self.landing.land_finished()
        if self.claims is not None:  # after landing our own, so two runs waiting on each other never stall
            self.claims.await_others()
        for entry in self.ledger.unsettled(Phase.SUBMITTED):
            reason = wait_error or "still running at the deadline"
            task_id = entry.record.task_id if entry.record else None
            self.ledger.settle(entry.video.post_id, Settled.FAILED, retryable=True,
                               error=f"task {task_id}: {reason}; the task id is kept, so a retry resumes it "
                               "without a new charge")
        for entry in self.ledger.entries.values():
            if entry.outcome is None:
                reason = entry.record.error if entry.record and entry.record.error else "no create was sent"
                self.ledger.settle(entry.video.post_id, Settled.FAILED, retryable=True,
                                   error=f"not submitted in this try ({reason}); a retry submits it")
        if self.claims is not None:
            self.claims.release_unlanded()
        self._enter("done")
        return self.ledger.outcomes()

    # deferral -------------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {"videos": self.ledger.snapshot()}

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.ledger.restore(snapshot.get("videos") or {})
        self.stage = "waiting"

    # progress -------------------------------------------------------------------------------------
    def _enter(self, stage: str) -> None:
        self.stage = stage
        self.progress.update(stage, self.counts())

    def _changed(self) -> None:
        if self.progress.due(self.stage):  # counting is O(N): only when a line is due
            self.progress.update(self.stage, self.counts())


@contextmanager
def long_lived_frozen() -> Iterator[None]:
    """Keep Python's full collections off what already exists while the try submits.

    A full collection walks every object the process holds (Airflow's own and the planned ledger) with the GIL
    held, stopping every create and poll: at N=5,000 two of them took 0.96 s together (0.52 s the longest),
    places under the running cap held all the while. What exists once planning is done lives as long as the
    try; frozen, those passes skip it (11 of them took 0.41 s together, 0.09 s the longest). The heap is
    unfrozen after, so nothing stays uncollectable for good, unless it was frozen before (e.g. before a fork):
    that freeze stays as its owner left it.
    """
    frozen_before = gc.get_freeze_count()
    gc.freeze()
    try:
        yield
    finally:
        if not frozen_before:
            gc.unfreeze()
