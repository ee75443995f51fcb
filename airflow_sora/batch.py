"""The per-video life cycle behind the operator: plan, submit, wait, land, report.

Every step reads and writes the durable ``VideoRecord`` first, so the same code serves a first try, a retry,
a cleared task and a resume after deferral: whatever was paid for is found again, never bought twice.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Literal

from airflow_sora.landing import ResultLander
from airflow_sora.manifest import VideoOutcome, VideoStatus
from airflow_sora.polling import PollSchedule
from airflow_sora.services.base import WatermarkService
from airflow_sora.services.errors import (
    AuthError,
    InsufficientCreditsError,
    InvalidVideoUrlError,
    QuotaExceededError,
    ResultDownloadError,
    ServiceError,
    ServiceProtocolError,
    SubmitOutcomeUnknownError,
    TaskFailedError,
)
from airflow_sora.services.models import TaskState, TaskStatus
from airflow_sora.services.urls import post_id_from_url
from airflow_sora.state import Phase, VideoRecord, VideoStateStore, utcnow

log = logging.getLogger(__name__)

IfExists = Literal["skip", "overwrite", "fail"]
OnUnknownSubmit = Literal["fail", "resubmit"]
_ACCOUNT_ERRORS = (AuthError, InsufficientCreditsError, QuotaExceededError)


@dataclass
class BatchSettings:
    if_exists: IfExists = "skip"
    keep_source: bool = False
    on_unknown_submit: OnUnknownSubmit = "fail"
    resubmit_failed: bool = False
    callback_url: str | None = None
    landing_concurrency: int = 8
    max_active_submissions: int = 100  # Kie runs "about 100+" tasks at once per account
    submit_concurrency: int = 8  # creates in flight at once (the rate limit still sets the pace)
    submit_passes: int = 3  # passes over creates that got a transient error reply (nothing was created)
    submit_pass_delay: float = 2.0
    poll_schedule: PollSchedule = field(default_factory=PollSchedule)
    provenance: dict[str, Any] = field(default_factory=dict)


class BatchRun:
    """One operator try over a list of already validated, de-duplicated Sora URLs."""

    def __init__(self, client: WatermarkService, store: VideoStateStore, lander: ResultLander,
                 settings: BatchSettings, *, on_submitted: Callable[[str], None] | None = None) -> None:
        self.client = client
        self.store = store
        self.lander = lander
        self.settings = settings
        self.on_submitted = on_submitted or (lambda task_id: None)
        self.outcomes: dict[str, VideoOutcome] = {}
        self.account_error: ServiceError | None = None

    # planning -------------------------------------------------------------------------------------
    def plan(self, urls: Iterable[str]) -> list[str]:
        """Settle what needs no new spending; return the URLs that need a (first or repeated) create."""
        to_submit: list[str] = []
        for url in urls:
            record = self.store.load(url)
            phase = record.phase if record else None
            if record and phase is Phase.LANDED and self.lander.existing(post_id_from_url(url), url):
                self._settle(url, VideoStatus.LANDED, record)
            elif record and phase is Phase.LANDED and record.result is not None:
                # Paid for in this run but the object is gone: land it again from the known result, free.
                self.store.save(record.model_copy(update={"phase": Phase.SUBMITTED}))
            elif record and phase is Phase.SUBMITTED:
                continue  # paid for already: resume it
            elif record and phase is Phase.INTENT:
                if self.settings.on_unknown_submit == "resubmit":
                    log.warning("RESUBMITTING %s: an earlier create may have been charged but its task id was "
                                "never recorded (on_unknown_submit='resubmit')", url)
                    to_submit.append(url)
                else:
                    self._settle(url, VideoStatus.FAILED, record, error=_unknown_message(url))
            elif record and phase is Phase.REJECTED:
                self._settle(url, VideoStatus.REJECTED, record, error=record.error)
            elif record and phase is Phase.FAILED and not self.settings.resubmit_failed:
                self._settle(url, VideoStatus.FAILED, record, error=record.error)
            elif self._exists_decision(url, record):
                to_submit.append(url)
        return to_submit

    def _exists_decision(self, url: str, record: VideoRecord | None) -> bool:
        """Apply ``if_exists`` to a video with nothing paid in this run; True means submit it."""
        existing = self.lander.existing(post_id_from_url(url), url)
        if existing is None or self.settings.if_exists == "overwrite":
            return True
        if self.settings.if_exists == "skip":
            self.outcomes[url] = VideoOutcome(
                video_url=url, post_id=post_id_from_url(url), status=VideoStatus.SKIPPED,
                output_uri=str(self.lander.video_path(post_id_from_url(url))),
                sidecar_uri=str(self.lander.sidecar_path(post_id_from_url(url))),
                size=existing.get("size"), sha256=existing.get("sha256"), task_id=existing.get("task_id"),
            )
        else:
            self._settle(url, VideoStatus.FAILED, record,
                         error=f"{self.lander.video_path(post_id_from_url(url))} already exists "
                         "(if_exists='fail'); use 'skip' or 'overwrite'")
        return False

    # submitting -----------------------------------------------------------------------------------
    def submit_all(self, urls: list[str]) -> None:
        """Submit in order, at the pace of the client's create bucket, with at most
        ``max_active_submissions`` of this try's tasks running at the service at once.

        Creates the service answered with a transient error reply (5xx, 455, 429 after the client's own
        retries) created nothing, so they get a few more passes in this try before Airflow's retry is spent.
        """
        active: deque[tuple[str, str]] = deque()  # (url, task id) running at the service, oldest first
        pending = list(urls)
        for attempt in range(self.settings.submit_passes):
            if attempt:
                time.sleep(self.settings.submit_pass_delay * attempt)
                log.warning("Resubmitting %d video(s) whose create got a transient error reply", len(pending))
                for url in pending:
                    del self.outcomes[url]
            self._submit_pass(pending, active)
            pending = [u for u in pending if self._not_created_transiently(u)]
            if not pending or self.account_error is not None:
                return

    def _not_created_transiently(self, url: str) -> bool:
        outcome = self.outcomes.get(url)
        if outcome is None or not outcome.retryable:
            return False
        record = self.store.load(url)
        return record is not None and record.phase is Phase.NOT_CREATED

    def _submit_pass(self, urls: list[str], active: deque[tuple[str, str]]) -> None:
        """Creates run in a small thread pool so state writes overlap; the shared bucket still sets the pace.

        The first create goes alone, so a bad key or an empty balance costs one rejected call, not a pool's
        worth. Task ids are handed to ``on_submitted`` from this thread only (it may talk to Airflow).
        """
        workers = max(1, self.settings.submit_concurrency)
        limit = self.settings.max_active_submissions
        in_flight: dict[Future[str | None], str] = {}

        def collect(done: set[Future[str | None]]) -> None:
            for future in done:
                url = in_flight.pop(future)
                task_id = future.result()
                if task_id:
                    active.append((url, task_id))
                    self.on_submitted(task_id)

        if urls:
            first = self.submit(urls[0])
            if first:
                active.append((urls[0], first))
                self.on_submitted(first)
        with ThreadPoolExecutor(workers, thread_name_prefix="sora-submit") as pool:
            for url in urls[1:]:
                if self.account_error is not None:
                    self._settle(url, VideoStatus.FAILED, self.store.load(url),
                                 error=f"not submitted: {self.account_error}")
                    continue
                self._wait_for_room(in_flight, active, workers, limit, collect)
                in_flight[pool.submit(self.submit, url)] = url
            collect(wait(in_flight).done)

    def _wait_for_room(self, in_flight: dict[Future[str | None], str], active: deque[tuple[str, str]],
                       workers: int, limit: int, collect: Callable[[set[Future[str | None]]], None]) -> None:
        """Block until one more create may start: a free submit thread, and room under ``limit`` running tasks."""
        while True:
            collect({future for future in in_flight if future.done()})
            if len(in_flight) >= workers:
                collect(wait(in_flight, return_when=FIRST_COMPLETED).done)
            elif not self.client.asynchronous or len(active) + len(in_flight) < limit:
                return
            elif active:
                self._drain(active, room_needed=len(in_flight) + 1)
            else:
                collect(wait(in_flight, return_when=FIRST_COMPLETED).done)

    def _drain(self, active: deque[tuple[str, str]], room_needed: int) -> None:
        """Make room for ``room_needed`` more tasks by retiring the oldest finished ones (tasks end roughly in
        submission order), waiting a poll interval when none has finished yet.

        What a poll here learns is kept in the record, so the task is never polled again.
        """
        limit = self.settings.max_active_submissions
        while active and len(active) + room_needed > limit:
            url, task_id = active[0]
            status = self.client.get_status(task_id)
            if not status.terminal:
                break
            active.popleft()
            record = self.store.load(url)
            if record is not None:
                self._record_terminal(url, record, status)
        if len(active) + room_needed > limit:
            time.sleep(self.settings.poll_schedule.interval)

    def submit(self, url: str) -> str | None:
        """Create the remote work for one video; returns the task id to wait for, if any."""
        previous = self.store.load(url)
        creates = previous.creates if previous else 0
        attempts = 2 if self.settings.on_unknown_submit == "resubmit" else 1
        for attempt in range(attempts):
            record = self.store.save(VideoRecord(video_url=url, service=self.client.service_name,
                                                 phase=Phase.INTENT, scope={}, creates=creates + 1))
            try:
                submission = self.client.submit(url, callback_url=self.settings.callback_url)
            except (SubmitOutcomeUnknownError, ServiceProtocolError) as error:
                self.store.save(record.model_copy(update={"error": str(error)}))
                log.error("Create for %s may have been charged without a recorded task id: %s", url, error)
                if attempt + 1 < attempts:
                    log.warning("RESUBMITTING %s (on_unknown_submit='resubmit')", url)
                    creates += 1
                    continue
                self._settle(url, VideoStatus.FAILED, record, error=_unknown_message(url))
                return None
            except InvalidVideoUrlError as error:
                self._settle(url, VideoStatus.REJECTED, self._close(record, Phase.REJECTED, error), error=str(error))
                return None
            except TaskFailedError as error:  # SaveSora 5002: failed and refunded
                self._settle(url, VideoStatus.FAILED, self._close(record, Phase.FAILED, error), error=str(error))
                return None
            except ServiceError as error:
                # Any other error reply means the service created nothing: safe to try again later.
                closed = self._close(record, Phase.NOT_CREATED, error)
                if isinstance(error, _ACCOUNT_ERRORS):
                    self.account_error = error
                self._settle(url, VideoStatus.FAILED, closed, error=f"not submitted: {error}",
                             retryable=error.retryable)
                return None
            record = self.store.save(record.model_copy(update={
                "phase": Phase.SUBMITTED, "task_id": submission.task_id, "result": submission.result,
                "error": None, "submitted_at": utcnow(),
            }))
            return submission.task_id
        return None

    def _close(self, record: VideoRecord, phase: Phase, error: Exception) -> VideoRecord:
        """Record a create that ended in an error reply; ``creates`` counts only what stayed charged."""
        refunded = phase in (Phase.NOT_CREATED, Phase.REJECTED) or getattr(error, "refunded", False)
        creates = record.creates - 1 if refunded else record.creates
        return self.store.save(record.model_copy(update={"phase": phase, "error": str(error), "creates": creates}))

    # waiting (in the worker) ---------------------------------------------------------------------
    def task_ids(self, urls: Iterable[str]) -> tuple[list[str], list[str]]:
        """Every task id this run's videos have, and those still to wait for: one state read per video."""
        known, waiting = [], []
        for url in urls:
            record = self.store.load(url)
            if record is None or not record.task_id:
                continue
            known.append(record.task_id)
            if url not in self.outcomes and record.phase is Phase.SUBMITTED and record.result is None:
                waiting.append(record.task_id)
        return known, waiting

    def poll_until_done(self, task_ids: list[str], deadline: float, schedule: PollSchedule) -> dict[str, TaskStatus]:
        """The worker-side twin of ``KieTaskTrigger``, for ``deferrable=False``."""
        statuses: dict[str, TaskStatus] = {}
        pending = list(task_ids)
        started = time.monotonic()
        time.sleep(min(schedule.first_poll_after, max(0.0, deadline - time.time())))
        while pending:
            for task_id in pending:
                statuses[task_id] = self.client.get_status(task_id)
            pending = [t for t in pending if not statuses[t].terminal]
            remaining = deadline - time.time()
            if not pending or remaining <= 0:
                break  # the last look is at the deadline, not a poll interval before it
            time.sleep(min(schedule.delay(time.monotonic() - started), remaining))
        return statuses

    def keep_finished(self, urls: Iterable[str], statuses: dict[str, TaskStatus]) -> None:
        """Persist what finished tasks gave, so a resumed try lands them without asking the service again."""
        for url in urls:
            if url not in self.outcomes:
                self._keep_if_finished(url, self.store.load(url), statuses)

    def _keep_if_finished(self, url: str, record: VideoRecord | None, statuses: dict[str, TaskStatus]
                          ) -> VideoRecord | None:
        if record is not None and record.phase is Phase.SUBMITTED and record.result is None:
            status = statuses.get(record.task_id or "")
            if status is not None and status.terminal:
                return self._record_terminal(url, record, status)
        return record

    # landing --------------------------------------------------------------------------------------
    def finish(self, urls: list[str], statuses: dict[str, TaskStatus], *, wait_error: str | None = None
               ) -> list[VideoOutcome]:
        """Land every finished video (bounded concurrency) and return one outcome per URL, in order."""
        to_land: list[tuple[str, VideoRecord]] = []
        for url in urls:
            if url in self.outcomes:
                continue
            record = self._keep_if_finished(url, self.store.load(url), statuses)
            if record is not None and record.phase is Phase.FAILED:
                self._settle(url, VideoStatus.FAILED, record, error=record.error)
            elif record is None or record.phase is not Phase.SUBMITTED:
                reason = record.error if record is not None and record.error else "no submitted task found"
                self._settle(url, VideoStatus.FAILED, record, retryable=True,
                             error=f"not submitted in this try ({reason}); a retry submits it")
            elif record.result is not None:
                to_land.append((url, record))
            else:
                reason = wait_error or "still running at the deadline"
                self._settle(url, VideoStatus.FAILED, record, retryable=True,
                             error=f"task {record.task_id}: {reason}; the task id is kept, so a retry resumes it "
                             "without a new charge")
        workers = max(1, min(self.settings.landing_concurrency, len(to_land)))
        with ThreadPoolExecutor(workers, thread_name_prefix="sora-landing") as pool:
            list(pool.map(lambda item: self._land(*item), to_land))
        return [self.outcomes[url] for url in urls if url in self.outcomes]

    def _record_terminal(self, url: str, record: VideoRecord, status: TaskStatus) -> VideoRecord:
        """Persist what a finished task gave: the result to land, or the service's failure."""
        if status.state is TaskState.FAILED:
            error = f"the service failed task {record.task_id}: {status.fail_message} (code {status.fail_code})"
            return self.store.save(record.model_copy(update={"phase": Phase.FAILED, "error": error}))
        return self.store.save(record.model_copy(update={"result": self.client.result(status, url)}))

    def _land(self, url: str, record: VideoRecord) -> None:
        assert record.result is not None
        post_id = post_id_from_url(url)
        result = record.result.model_copy(update={"post_id": post_id})
        provenance = {**self.settings.provenance, "service_post_id": record.result.post_id,
                      "submitted_at": record.submitted_at}
        refresh = self.client.refresh_link if self.client.refreshable_links else None
        try:
            landed = self.lander.land(result, provenance=provenance, keep_source=self.settings.keep_source,
                                      refresh=refresh)
        except (ResultDownloadError, ServiceError) as error:
            log.warning("Landing %s failed: %s", url, error)
            self._settle(url, VideoStatus.FAILED, record, error=f"landing failed: {error}",
                         retryable=error.retryable)
            return
        record = self.store.save(record.model_copy(update={
            "phase": Phase.LANDED, "output_uri": landed.video.uri, "sidecar_uri": landed.sidecar_uri,
            "sha256": landed.video.sha256, "size": landed.video.size, "error": None,
        }))
        self._settle(url, VideoStatus.LANDED, record)

    # outcomes -------------------------------------------------------------------------------------
    def _settle(self, url: str, status: VideoStatus, record: VideoRecord | None, *, error: str | None = None,
                retryable: bool = False) -> None:
        credits = (record.creates if record else 0) * self.client.credits_per_video
        self.outcomes[url] = VideoOutcome(
            video_url=url, post_id=post_id_from_url(url), status=status,
            output_uri=record.output_uri if record else None, sidecar_uri=record.sidecar_uri if record else None,
            size=record.size if record else None, sha256=record.sha256 if record else None,
            task_id=record.task_id if record else None, credits_charged=credits, error=error,
            retryable=retryable,
        )


def _unknown_message(url: str) -> str:
    return (f"a create for {url} was sent but its task id was never recorded (the worker died or the reply "
            "was lost), so it may have been charged; not resubmitted because on_unknown_submit='fail'. Check "
            "the service's dashboard, or re-run with on_unknown_submit='resubmit' to pay for a new attempt")
