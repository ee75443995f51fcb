"""Part three of a try: wait for the service's tasks in the worker (the trigger does the same when deferred).

The decision of when to stop is ``polling.WaitTracker``'s, shared with the trigger and the sensor; this module
only does the blocking I/O and turns what a poll learns into life-cycle events.
"""

from __future__ import annotations

import logging
import time

from airflow_sora.batch.ledger import Ledger
from airflow_sora.lifecycle import Event, Phase
from airflow_sora.polling import CallbackWatch, PollSchedule, WaitOutcome, WaitTracker
from airflow_sora.services.base import WatermarkService
from airflow_sora.services.errors import ServiceError
from airflow_sora.services.models import TaskState, TaskStatus

log = logging.getLogger(__name__)


def record_status(ledger: Ledger, client: WatermarkService, post_id: str, status: TaskStatus) -> None:
    """A finished task's result (to land) or the service's failure; a running task changes nothing."""
    entry = ledger[post_id]
    if entry.phase is not Phase.SUBMITTED or not status.terminal:
        return
    if status.state is TaskState.FAILED:
        ledger.apply(post_id, Event.TASK_FAILED, error=f"the service failed task {status.task_id}: "
                     f"{status.fail_message} (code {status.fail_code})")
    else:
        ledger.apply(post_id, Event.TASK_SUCCEEDED, result=client.result(status, entry.video.url))
        took = (status.completed_at_ms - status.created_at_ms) / 1000 if (
            status.completed_at_ms and status.created_at_ms) else None
        ledger.observe_latency(post_id, took)


def record_statuses(ledger: Ledger, client: WatermarkService, statuses: dict[str, TaskStatus]) -> None:
    for entry in ledger.unsettled(Phase.SUBMITTED):
        status = statuses.get(entry.record.task_id or "") if entry.record else None
        if status is not None:
            record_status(ledger, client, entry.video.post_id, status)


def waiting_task_ids(ledger: Ledger) -> list[str]:
    return [e.record.task_id for e in ledger.unsettled(Phase.SUBMITTED) if e.record and e.record.task_id]


def wait_in_worker(ledger: Ledger, client: WatermarkService, *, deadline: float,
                   schedule: PollSchedule) -> WaitOutcome:
    """Poll every waiting task until all are finished, a permanent error, or ``deadline`` (epoch seconds).

    What each round learns goes into the ledger at once, so progress lines count finished tasks as they come.
    """
    tracker = WaitTracker(waiting_task_ids(ledger), deadline=deadline, schedule=schedule)
    watch = CallbackWatch(schedule) if schedule.expects_callbacks else None
    time.sleep(tracker.first_delay())
    while True:
        statuses: dict[str, TaskStatus] = {}
        errors: list[ServiceError] = []
        for task_id in tracker.pending if watch is None else callback_due(watch, ledger, tracker.pending):
            try:
                statuses[task_id] = client.get_status(task_id)
            except ServiceError as error:
                errors.append(error)
        record_statuses(ledger, client, statuses)
        if watch is not None:
            watch.polled(statuses)
        if (outcome := tracker.after_round(statuses, errors)) is not None:
            return outcome
        time.sleep(tracker.listen_delay() if watch is not None and not watch.fallback else tracker.next_delay())


def callback_due(watch: CallbackWatch, ledger: Ledger, pending: list[str]) -> list[str]:
    """With callbacks on: what the run's inbox holds (one listing), then the tasks the watch says to poll.

    Shared with the submitter's look for room, so both sides decide by the same rule."""
    if not watch.fallback:
        from airflow_sora.plugins.inbox import CallbackInbox

        try:
            watch.hear(CallbackInbox.for_state(ledger.store).heard())
        except Exception as error:  # polling covers a store that cannot be listed right now
            log.warning("Could not read the callback inbox, polling covers it: %s", type(error).__name__)
    return watch.due(pending)
