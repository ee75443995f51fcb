"""``KieTaskTrigger``: wait in the triggerer for one or many Kie tasks, with one shared async client.

The decision of when to stop is ``polling.WaitTracker``'s, the same as the worker's and the sensor's. With
an ``inbox`` (callbacks on), each round first lists the run's callback inbox (one store request for the whole
batch) and ``polling.CallbackWatch`` picks the tasks to poll: those heard of, once, to confirm, and those
silent past their expected time, slowly. The trigger writes progress lines (counts out of N) at least every
15 s; in Airflow 3 the triggerer sends a trigger's log lines to the log of the task that deferred to it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from airflow.triggers.base import BaseTrigger, TriggerEvent
from pydantic import BaseModel, ValidationError

from airflow_sora.exceptions import InvalidTriggerEventError
from airflow_sora.hooks.kie import KieHook
from airflow_sora.polling import MAX_CONSECUTIVE_ERRORS, CallbackWatch, PollSchedule, WaitOutcome, WaitTracker
from airflow_sora.progress import Counts, ProgressReporter
from airflow_sora.services.base import AsyncWatermarkService
from airflow_sora.services.errors import ServiceError
from airflow_sora.services.models import TaskState, TaskStatus

DEFAULT_TIMEOUT = 900.0


class KieWaitEvent(BaseModel):
    """The one event a ``KieTaskTrigger`` yields; validated again when the task resumes."""

    status: Literal["success", "timeout", "error"]
    message: str
    tasks: dict[str, TaskStatus] = {}

    @classmethod
    def from_payload(cls, payload: Any) -> KieWaitEvent:
        """The event the task resumed with, or a clear failure: never a guess at a malformed one."""
        try:
            return cls.model_validate(payload)
        except ValidationError as error:
            raise InvalidTriggerEventError(
                f"the task resumed with an event KieTaskTrigger does not write ({error.error_count()} problem(s): "
                f"{error.errors()[0]['loc']}: {error.errors()[0]['msg']}); clear the task to run it again "
                "(paid tasks are resumed from the state records, not paid again)") from None


class KieTaskTrigger(BaseTrigger):
    """Poll Kie task ids until all are terminal or the wall-clock ``deadline`` (epoch seconds) passes.

    Yields exactly one ``KieWaitEvent``. Serialises only ids, conn id, deadline, polling settings and the
    batch's counts before deferral (for progress lines): the key is read from the connection in the triggerer.
    Up to ``max_consecutive_errors`` poll rounds with transient errors are tolerated; a permanent error (bad
    key, unknown task) ends the wait at once. ``inbox``: the URI of the run's callback inbox (no secret in it);
    without one, every pending task is polled on the schedule, as before callbacks existed.
    """

    def __init__(self, task_ids: list[str], conn_id: str = KieHook.default_conn_name, deadline: float | None = None,
                 poll_schedule: dict[str, float] | None = None,
                 max_consecutive_errors: int = MAX_CONSECUTIVE_ERRORS, max_in_flight: int = 10,
                 progress: dict[str, float] | None = None, inbox: str | None = None) -> None:
        super().__init__()
        self.task_ids = list(dict.fromkeys(task_ids))
        self.conn_id = conn_id
        self.deadline = deadline if deadline is not None else time.time() + DEFAULT_TIMEOUT
        self.poll_schedule = dict(poll_schedule or PollSchedule().as_dict())
        self.max_consecutive_errors = max_consecutive_errors
        self.max_in_flight = max_in_flight
        self.progress = dict(progress or {})
        self.inbox = inbox
        self._reporter = ProgressReporter(self.log)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {"inbox": self.inbox} if self.inbox else {}  # only when callbacks are on
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "task_ids": self.task_ids,
                "conn_id": self.conn_id,
                "deadline": self.deadline,
                "poll_schedule": self.poll_schedule,
                "max_consecutive_errors": self.max_consecutive_errors,
                "max_in_flight": self.max_in_flight,
                "progress": self.progress,
                **kwargs,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        tracker = WaitTracker(self.task_ids, deadline=self.deadline, schedule=PollSchedule(**self.poll_schedule),
                              max_consecutive_errors=self.max_consecutive_errors)
        try:
            client = await KieHook(self.conn_id).aget_conn()
        except (ServiceError, ValueError) as error:
            yield TriggerEvent(self._event(WaitOutcome("error", f"cannot poll Kie: {error}"), tracker))
            return
        async with client:
            outcome = await self._wait(client, tracker)
        self._report(tracker, force=True)
        yield TriggerEvent(self._event(outcome, tracker))

    async def _wait(self, client: AsyncWatermarkService, tracker: WaitTracker) -> WaitOutcome:
        self._report(tracker, force=True)
        watch = self._watch(tracker)
        await self._sleep(tracker.first_delay(), tracker)
        while True:
            to_poll = tracker.pending if watch is None else await self._due(watch, tracker.pending)
            statuses, errors = await self._poll_round(client, to_poll)
            if watch is not None:
                watch.polled(statuses)
            if (outcome := tracker.after_round(statuses, errors)) is not None:
                return outcome
            self._report(tracker)
            listening = watch is not None and not watch.fallback
            await self._sleep(tracker.listen_delay() if listening else tracker.next_delay(), tracker)

    def _watch(self, tracker: WaitTracker) -> CallbackWatch | None:
        if not self.inbox or not tracker.schedule.expects_callbacks:
            return None
        return CallbackWatch(tracker.schedule)

    async def _due(self, watch: CallbackWatch, pending: list[str]) -> list[str]:
        """Hear what the inbox holds (one listing), then ask the watch; a store that fails hears nothing."""
        if not watch.fallback:
            from airflow_sora.plugins.inbox import CallbackInbox

            try:
                watch.hear(await asyncio.to_thread(CallbackInbox.at(str(self.inbox)).heard))
            except Exception as error:  # polling covers a store that cannot be listed right now
                self.log.warning("Could not read the callback inbox, polling covers it: %s", type(error).__name__)
        return watch.due(pending)

    async def _sleep(self, seconds: float, tracker: WaitTracker) -> None:
        """Sleep in slices, so a long back-off still lets a progress line out every interval."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(left, self._reporter.interval / 3))
            self._report(tracker)

    async def _poll_round(self, client: AsyncWatermarkService, pending: list[str]
                          ) -> tuple[dict[str, TaskStatus], list[ServiceError]]:
        """Poll every pending task once, at most ``max_in_flight`` at a time."""
        gate = asyncio.Semaphore(self.max_in_flight)
        statuses: dict[str, TaskStatus] = {}
        errors: list[ServiceError] = []

        async def poll(task_id: str) -> None:
            async with gate:
                try:
                    statuses[task_id] = await client.get_status(task_id)
                except ServiceError as error:
                    errors.append(error)

        await asyncio.gather(*(poll(t) for t in pending))
        return statuses, errors

    def _report(self, tracker: WaitTracker, *, force: bool = False) -> None:
        """A progress line in the batch's terms: the counts from before deferral plus what the polls found."""
        reporter = self._reporter
        if not (force or reporter.due("waiting")):
            return
        base = self.progress
        done = [s for s in tracker.statuses.values() if s.terminal]
        failed = sum(1 for s in done if s.state is TaskState.FAILED)
        counts = Counts(
            total=int(base.get("total", len(self.task_ids))), submitted=int(base.get("submitted", 0)),
            running=len(tracker.pending), finished=int(base.get("finished", 0)) + len(done),
            landed=int(base.get("landed", 0)), skipped=int(base.get("skipped", 0)),
            failed=int(base.get("failed", 0)) + failed, rejected=int(base.get("rejected", 0)),
            not_submitted=int(base.get("not_submitted", 0)),
            credits=float(base.get("credits", 0.0)),
        )
        reporter.update("waiting", counts, force=force)

    def _event(self, outcome: WaitOutcome, tracker: WaitTracker) -> dict[str, Any]:
        return {"status": outcome.status, "message": outcome.message,
                "tasks": {task_id: s.model_dump(mode="json") for task_id, s in tracker.statuses.items()}}
