"""The try's tasks running at the service while it submits: polled as they fall due, so a place under
``max_active_submissions`` frees as soon as its task ends and the video lands at once.

A poller thread does the status calls; when to look at which task is ``polling.DuePolls``'s decision (or,
with callbacks heard, ``polling.CallbackWatch``'s), and the submitter only waits here for room. A place is
held from the moment a create's request goes out (``take_place``) until a look finds its task finished, so
the cap holds at the service even for a task slower than any seen before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from airflow_sora.batch.ledger import Ledger
from airflow_sora.batch.wait import callback_due, record_status
from airflow_sora.polling import CallbackWatch, DuePolls, PollSchedule
from airflow_sora.services.base import WatermarkService
from airflow_sora.services.errors import ServiceError
from airflow_sora.services.models import TaskStatus

log = logging.getLogger(__name__)

POLL_CONCURRENCY = 4  # status calls in flight at once: enough for a cap's worth of tasks falling due together
IDLE_WAIT = 1.0  # the longest the poller sleeps without a task falling due (it is woken for new ones)


class RunningTasks:
    """Tasks created in this try and not known to have ended, with a poller that retires them.

    ``watch``: the batch's callback watch, when its creates asked for callbacks. While callbacks are heard, a
    running task is polled only when room is wanted and the watch says so (one inbox listing per look, then a
    poll interval's pause), as the waiting side does; otherwise tasks are polled as they fall due.
    """

    def __init__(self, ledger: Ledger, client: WatermarkService, schedule: PollSchedule,
                 watch: CallbackWatch | None = None) -> None:
        self.ledger = ledger
        self.client = client
        self.schedule = schedule
        self.watch = watch
        self.due = DuePolls(schedule)
        self._post_ids: dict[str, str] = {}  # task id -> post id
        self._sending: set[str] = set()  # post ids whose create holds a place and has no task id yet
        self._room_wanted = 0  # submitters blocked in ``wait_for_room`` or ``take_place``
        self.cap_bound = False  # a create had to wait for room
        self._failure: BaseException | None = None  # what stopped the poller, raised to the submitter
        self._stopped = False
        self._changed = threading.Condition()

    def __len__(self) -> int:
        """The tasks created and not yet seen ended."""
        with self._changed:
            return len(self.due)

    def take_place(self, post_id: str, cap: int) -> bool:
        """Block until fewer than ``cap`` places are held, then hold one for ``post_id``'s create, from just
        before its request goes out until ``add`` (its task then holds it) or ``release_place``. False, at
        once, when the submitter is stopping (``stop``): the create must not go out."""
        with self._changed:
            if self._stopped:
                return False
            if post_id in self._sending:
                return True  # a second attempt of the same create
            if self._held() >= cap:
                self.cap_bound = True
                self._room_wanted += 1
                self._changed.notify_all()
                try:
                    self._changed.wait_for(lambda: self._stopped or self._held() < cap)
                finally:
                    self._room_wanted -= 1
            if self._stopped:
                return False
            self._sending.add(post_id)
            return True

    def _held(self) -> int:
        """Places held (under the lock): tasks not yet seen ended, and creates sent without a task id yet."""
        return len(self.due) + len(self._sending)

    def release_place(self, post_id: str) -> None:
        """The create for ``post_id`` created no task (or its task was added): its place, if held, frees."""
        with self._changed:
            if post_id in self._sending:
                self._sending.discard(post_id)
                self._changed.notify_all()

    def add(self, post_id: str, task_id: str, *, answered_at: float | None = None) -> None:
        """A task the service created; ``answered_at`` (monotonic): when the create's answer came, default now.
        It takes over the place its create held."""
        with self._changed:
            self._post_ids[task_id] = post_id
            self.due.add(task_id, answered_at)
            self._sending.discard(post_id)
            self._changed.notify_all()

    def wait_for_room(self, room: int, timeout: float, *, lead: float = 0.0) -> float | None:
        """Block until a place may free for fewer than ``room`` tasks within ``lead`` seconds (or ``timeout``),
        telling the poller that room is wanted, so it looks at tasks as soon as they fall due. Returns when that
        look is due (monotonic; at most ``lead`` ahead), None on timeout: a create can be made ready meanwhile,
        its request waiting for the place itself (``take_place``)."""
        end = time.monotonic() + timeout
        with self._changed:
            self.cap_bound = True
            self._room_wanted += 1
            self._changed.notify_all()
            try:
                while not self._stopped and (left := end - time.monotonic()) > 0:
                    at = self.due.room_at(room)
                    if at is None:  # only a poll makes room now: wait to be told of one
                        self._changed.wait(left)
                        continue
                    if at - time.monotonic() <= lead:
                        return at
                    self._changed.wait(max(0.0, min(left, at - lead - time.monotonic())))
            finally:
                self._room_wanted -= 1
                self._raise_failure()
        return None

    def finish_tail(self, within: float) -> None:
        """After the last create: if the cap bound (a large batch, its worker busy for a while already) and every
        task still running falls due within ``within`` seconds, look at each here when it is due, landing it at
        once, instead of paying a deferral round trip and a resume for a few seconds of waiting. Tasks a look
        finds still running are left to the wait that follows (the trigger, when deferrable)."""
        with self._changed:
            listening = self.watch is not None and not self.watch.fallback
            last_due = self.due.last_due(urgent=True)
            if not self.cap_bound or listening or last_due is None or last_due - time.monotonic() > within:
                return
            self._room_wanted += 1  # as if a create waited: look at each task as soon as it is due
        deadline = last_due + self.schedule.delay(0)  # every task's first look, and a second for a late one
        try:
            with self.polling(), self._changed:
                self._changed.wait_for(lambda: not self._post_ids, max(0.0, deadline - time.monotonic()))
        finally:
            with self._changed:
                self._room_wanted -= 1

    @contextmanager
    def polling(self) -> Iterator[RunningTasks]:
        """Poll in the background while the block runs; the poller stops (and is joined) when it ends."""
        thread = threading.Thread(target=self._poll_until_stopped, name="sora-running", daemon=True)
        self._stopped = False
        thread.start()
        try:
            yield self
        finally:
            self.stop()
            thread.join()
        self._raise_failure()

    def stop(self) -> None:
        """Stop the poller, and every create still waiting for a place (it is not sent)."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()

    def _raise_failure(self) -> None:
        """A poller that stopped on an error stops the submitter too (it would otherwise wait for room forever)."""
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    # the poller ------------------------------------------------------------------------------------
    def _poll_until_stopped(self) -> None:
        try:
            with ThreadPoolExecutor(POLL_CONCURRENCY, thread_name_prefix="sora-poll") as pool:
                while (task_ids := self._next_batch()) is not None:
                    if task_ids:
                        statuses = dict(zip(task_ids, pool.map(self._poll, task_ids), strict=True))
                        self._learned(statuses)
        except BaseException as error:  # a bug or a store that failed: the submitter raises it
            with self._changed:
                self._failure, self._stopped = error, True
                self._changed.notify_all()

    def _next_batch(self) -> list[str] | None:
        """The tasks to poll now, after waiting until some fall due; None once stopped."""
        while True:
            with self._changed:
                if self._stopped:
                    return None
                urgent = self._room_wanted > 0
                listening = self.watch is not None and not self.watch.fallback
                if not listening:
                    if due := self.due.due(urgent=urgent):
                        return due
                    next_due = self.due.next_due(urgent=urgent)
                    pause = IDLE_WAIT if next_due is None else min(IDLE_WAIT, max(0.0, next_due - time.monotonic()))
                    self._changed.wait(pause)  # woken early for a new task or a submitter wanting room
                    continue
                if not urgent:
                    self._changed.wait(IDLE_WAIT)
                    continue
                running = list(self._post_ids)
            assert self.watch is not None
            due = callback_due(self.watch, self.ledger, running)  # lists the inbox: outside the lock
            if due:
                return due
            with self._changed:  # nothing heard of yet: listen again after a poll interval
                self._changed.wait(self.schedule.interval)

    def _poll(self, task_id: str) -> TaskStatus | None:
        try:
            return self.client.get_status(task_id)
        except ServiceError as error:  # a poll that failed says nothing: look again later
            log.info("Polling task %s while submitting failed: %s", task_id, error)
            return None

    def _learned(self, statuses: dict[str, TaskStatus | None]) -> None:
        """What the polls said: a finished task's result goes into the ledger (it lands), then its place frees."""
        for task_id, status in statuses.items():
            if status is not None and status.terminal:
                record_status(self.ledger, self.client, self._post_ids[task_id], status)
        if self.watch is not None:
            self.watch.polled({t: s for t, s in statuses.items() if s is not None})
        with self._changed:
            for task_id, status in statuses.items():
                self.due.polled(task_id, status)
                if status is not None and status.terminal:
                    self._post_ids.pop(task_id, None)
            self._changed.notify_all()
