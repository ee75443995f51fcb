"""Part two of a try: pay for creates, at the account's pace, with a cap on tasks running at once.

Every create is bracketed by life-cycle events: ``create_sent`` is written before the paid call, the reply
(task id, result, error reply, or no reply at all) right after it, so a worker killed anywhere leaves a
record that tells the next try what was paid for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from airflow_sora.batch.claims import Claims
from airflow_sora.batch.ledger import Ledger
from airflow_sora.batch.running import RunningTasks
from airflow_sora.batch.settings import BatchSettings
from airflow_sora.lifecycle import Event, Phase, Settled, unknown_create_message
from airflow_sora.polling import CallbackWatch
from airflow_sora.services.base import WatermarkService
from airflow_sora.services.errors import (
    AuthError,
    InsufficientCreditsError,
    InvalidVideoUrlError,
    QuotaExceededError,
    ServiceError,
    ServiceProtocolError,
    ServiceUnavailableError,
    SubmitOutcomeUnknownError,
    TaskFailedError,
)
from airflow_sora.state import utcnow

log = logging.getLogger(__name__)

ACCOUNT_ERRORS = (AuthError, InsufficientCreditsError, QuotaExceededError)
ROOM_RECHECK = 0.05  # seconds between looks at the creates in flight while waiting for a place to free
#: How long before a place may free its create may be made ready (the video claimed): the intent is recorded
#: and the request goes out once the place is free, so the cap holds at the service.
READY_AHEAD = 0.03


class Submitter:
    def __init__(self, ledger: Ledger, client: WatermarkService, settings: BatchSettings, *,
                 on_submitted: Callable[[str], None] | None = None, claims: Claims | None = None) -> None:
        self.ledger = ledger
        self.claims = claims
        self.client = client
        self.settings = settings
        self.on_submitted = on_submitted or (lambda task_id: None)
        self.account_error: ServiceError | None = None
        self.watch: CallbackWatch | None = None  # set while submitting, when the batch has a callback inbox
        self.running: RunningTasks | None = None  # this try's tasks running at the service, once submitting began
        self._answered: dict[str, float] = {}  # post id -> when its create was answered (monotonic)

    def submit_all(self, post_ids: list[str]) -> None:
        """Submit in order (the few creates in flight at once may go out in any order), at the pace of the
        client's create bucket, with at most ``max_active_submissions`` of this try's tasks running at the
        service at once.

        Creates the service answered with a transient error reply (5xx, 455, 429 after the client's own
        retries) created nothing, so they get a few more passes in this try before Airflow's retry is spent.
        """
        pending = list(post_ids)
        schedule = self.settings.poll_schedule
        self.watch = CallbackWatch(schedule) if schedule.expects_callbacks and self.client.asynchronous else None
        self.running = RunningTasks(self.ledger, self.client, schedule, self.watch)
        with self.running.polling() as running:
            for attempt in range(self.settings.submit_passes):
                if attempt:
                    time.sleep(self.settings.submit_pass_delay * attempt)
                    log.warning("Resubmitting %d video(s) whose create got a transient error reply", len(pending))
                    for post_id in pending:
                        self.ledger.reopen(post_id)
                self._submit_pass(pending, running)
                pending = [p for p in pending if self._not_created_transiently(p)]
                if not pending or self.account_error is not None:
                    return

    def finish_tail(self) -> None:
        """After the last create, wait here for the running tasks when that is quicker than deferring
        (``RunningTasks.finish_tail``)."""
        if self.running is not None and self.account_error is None:
            self.running.finish_tail(self.settings.finish_tail_within)

    def _not_created_transiently(self, post_id: str) -> bool:
        entry = self.ledger[post_id]
        return entry.outcome is not None and entry.outcome.retryable and entry.phase is Phase.NOT_CREATED

    def _submit_pass(self, post_ids: list[str], running: RunningTasks) -> None:
        """Creates run in a small thread pool so state writes overlap; the shared bucket still sets the pace.

        The first create goes alone, so a bad key or an empty balance costs one rejected call, not a pool's
        worth. A created task joins ``running`` at once (its poll falls due from then); task ids are handed to
        ``on_submitted`` from this thread only (it may talk to Airflow).
        """
        workers = max(1, self.settings.submit_concurrency)
        in_flight: dict[Future[str | None], str] = {}

        def collect(done: set[Future[str | None]]) -> None:
            for future in done:
                in_flight.pop(future)
                if task_id := future.result():
                    self.on_submitted(task_id)

        if post_ids and (first := self._create(post_ids[0], running)):
            self.on_submitted(first)
        with ThreadPoolExecutor(workers, thread_name_prefix="sora-submit") as pool:
            try:
                for post_id in post_ids[1:]:
                    if self.account_error is not None:
                        self.ledger.settle(post_id, Settled.FAILED, error=f"not submitted: {self.account_error}")
                        continue
                    self._wait_for_room(in_flight, running, workers, collect)
                    in_flight[pool.submit(self._create, post_id, running)] = post_id
                collect(wait(in_flight).done)
            except BaseException:
                running.stop()  # creates still waiting for a place are not sent; the pool can then wind up
                raise

    def _create(self, post_id: str, running: RunningTasks) -> str | None:
        """One create, its request sent once it holds a place under the cap (an asynchronous service); its
        task runs from the answer on (not from after its record was written)."""
        cap = self.settings.max_active_submissions
        place = (lambda: running.take_place(post_id, cap)) if self.client.asynchronous else None
        try:
            task_id = self.submit(post_id, before_send=place)
            if task_id:
                running.add(post_id, task_id, answered_at=self._answered.get(post_id))
            return task_id
        finally:
            self._answered.pop(post_id, None)
            running.release_place(post_id)

    def _wait_for_room(self, in_flight: dict[Future[str | None], str], running: RunningTasks, workers: int,
                       collect: Callable[[set[Future[str | None]]], None]) -> None:
        """Block until one more create may start: a free submit thread, and room under the running cap within
        ``READY_AHEAD``.

        The running tasks are polled in the background as they fall due (``RunningTasks``), oldest first; a
        finished one frees its place at once, so this only waits until ``READY_AHEAD`` before that look is due,
        while the create is made ready; its request then waits for the place itself."""
        limit = self.settings.max_active_submissions
        while True:
            collect({future for future in in_flight if future.done()})
            if len(in_flight) >= workers:
                collect(wait(in_flight, return_when=FIRST_COMPLETED).done)
            elif not self.client.asynchronous or len(running) + len(in_flight) < limit:
                return
            elif len(running):
                if running.wait_for_room(limit - len(in_flight), timeout=ROOM_RECHECK, lead=READY_AHEAD) is not None:
                    return
            else:
                collect(wait(in_flight, return_when=FIRST_COMPLETED).done)

    def submit(self, post_id: str, *, before_send: Callable[[], bool] | None = None) -> str | None:
        """Create the remote work for one video; returns the task id to wait for, if any. ``before_send`` blocks
        until the paid request may go out (False: it must not). It runs before the intent is recorded, so a
        worker killed while it waits leaves no record of a create that was never sent."""
        entry = self.ledger[post_id]
        url = entry.video.url
        if self.claims is not None and not self.claims.claim(entry):
            return None  # another run is paying for it: wait for its file later
        attempts = 2 if self.settings.on_unknown_submit == "resubmit" else 1
        for attempt in range(attempts):
            if before_send is not None and not before_send():  # made ready while its place was still held
                return None  # the try is stopping: never sent, so nothing recorded
            if not self.ledger.reserve_create():
                self.ledger.settle(post_id, Settled.NOT_SUBMITTED, error=self.ledger.budget_message())
                return None
            self.ledger.apply(post_id, Event.CREATE_SENT, error=None, task_id=None, result=None)
            try:
                submission = self.client.submit(url, callback_url=self.settings.callback_url)
                self._answered[post_id] = time.monotonic()
            except ServiceError as error:
                if not _outcome_unknown(error):
                    self._error_reply(post_id, error)
                    return None
                self.ledger.apply(post_id, Event.NO_REPLY, error=str(error))
                log.error("Create for %s may have been charged without a recorded task id: %s", url, error)
                if attempt + 1 < attempts:
                    log.warning("RESUBMITTING %s (on_unknown_submit='resubmit')", url)
                    continue
                self.ledger.settle(post_id, Settled.FAILED, error=unknown_create_message(url))
                return None
            # The audit trail of what was paid: even if the state write below failed, the log keeps the id.
            log.info("Created %s for %s (paid)", submission.task_id or "a finished result", url)
            if submission.result is not None:
                self.ledger.apply(post_id, Event.RESULT_RETURNED, task_id=submission.task_id,
                                  result=submission.result, submitted_at=utcnow())
                return None
            self.ledger.apply(post_id, Event.TASK_CREATED, task_id=submission.task_id, submitted_at=utcnow())
            return submission.task_id
        return None

    def _error_reply(self, post_id: str, error: ServiceError) -> None:
        """The service answered the create with an error: what it means for the video and for the money."""
        if isinstance(error, InvalidVideoUrlError):
            self.ledger.apply(post_id, Event.URL_REFUSED, error=str(error))
            self.ledger.settle(post_id, Settled.REJECTED, error=str(error))
        elif isinstance(error, TaskFailedError):  # SaveSora 5002: failed (and refunded)
            event = Event.CREATE_FAILED_REFUNDED if error.refunded else Event.CREATE_FAILED
            self.ledger.apply(post_id, event, error=str(error))
            self.ledger.settle(post_id, Settled.FAILED, error=str(error))
        else:  # any other error reply means the service created nothing: safe to try again later
            self.ledger.apply(post_id, Event.ERROR_REPLY, error=str(error))
            if isinstance(error, ACCOUNT_ERRORS):
                self.account_error = error
            self.ledger.settle(post_id, Settled.FAILED, error=f"not submitted: {error}", retryable=error.retryable)


#: A gateway that timed out waiting for the service (504, Cloudflare's 524) passed the create on: it may have
#: been processed and charged, like a create that got no reply at all.
UPSTREAM_TIMEOUTS = (504, 524)


def _outcome_unknown(error: ServiceError) -> bool:
    if isinstance(error, (SubmitOutcomeUnknownError, ServiceProtocolError)):
        return True
    return isinstance(error, ServiceUnavailableError) and error.code in UPSTREAM_TIMEOUTS
