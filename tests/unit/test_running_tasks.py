"""``RunningTasks``: the submitter's background poller hands its failures back instead of leaving a create
waiting for room forever."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any, cast

import pytest

from airflow_sora.batch.ledger import Ledger
from airflow_sora.batch.running import RunningTasks
from airflow_sora.polling import PollSchedule
from airflow_sora.services.base import WatermarkService
from airflow_sora.services.models import TaskState, TaskStatus


class BrokenClient:
    asynchronous = True

    def get_status(self, task_id: str) -> Any:
        raise RuntimeError("a bug in a status parser")


def test_a_poller_that_fails_stops_the_wait_for_room_with_its_error() -> None:
    running = RunningTasks(cast(Ledger, None), cast(WatermarkService, BrokenClient()),
                           PollSchedule(first_poll_after=0.0))
    with pytest.raises(RuntimeError, match="status parser"), running.polling():
        running.add("post", "task")
        while True:  # the submitter's loop: it must not spin forever
            running.wait_for_room(1, timeout=0.05)


class IdleClient:
    asynchronous = True

    def get_status(self, task_id: str) -> Any:
        raise AssertionError("no task is due in this test")


def test_the_wait_for_room_answers_ahead_when_a_look_is_due_within_the_lead() -> None:
    """A create may be made ready while its place is still held: it is told when the look that may free the
    place is due, ahead of it by at most the lead."""
    running = RunningTasks(cast(Ledger, None), cast(WatermarkService, IdleClient()),
                           PollSchedule(first_poll_after=60.0))
    running.due.observe(1.0)
    running.due.observe(1.0)  # tasks take 1 s: a task is looked at 1 s after its create's answer
    answered = time.monotonic() - 0.7  # due ~0.3 s from now
    running.add("post", "task", answered_at=answered)
    assert running.wait_for_room(1, timeout=0.01, lead=0.0) is None  # not due within the timeout
    look_at = running.wait_for_room(1, timeout=5.0, lead=2.0)
    assert look_at == answered + 1.0  # told at once, without waiting for it
    assert time.monotonic() < look_at


class FinishingClient:
    """Every task is found finished at its first look."""

    asynchronous = True

    def __init__(self) -> None:
        self.looked: list[str] = []

    def get_status(self, task_id: str) -> Any:
        self.looked.append(task_id)
        return TaskStatus(task_id=task_id, state=TaskState.SUCCEEDED, created_at_ms=0, completed_at_ms=1)


class Noted:
    """Stands in for the ledger: its videos are past waiting, so a finished look records nothing."""

    def __getitem__(self, post_id: str) -> Any:
        return SimpleNamespace(phase=None)


def test_a_place_is_taken_by_the_create_and_freed_only_by_a_look_finding_its_task_finished() -> None:
    client = FinishingClient()
    running = RunningTasks(cast(Ledger, Noted()), cast(WatermarkService, client), PollSchedule(first_poll_after=0.3))
    running.take_place("p1", cap=2)
    running.take_place("p1", cap=2)  # a second attempt of the same create holds the same place
    running.take_place("p2", cap=2)
    running.add("p1", "t1")  # its task takes over the create's place
    running.release_place("p2")  # a create that made no task gives its place back
    running.take_place("p3", cap=2)
    running.add("p3", "t3")
    taken = threading.Event()
    waiter = threading.Thread(target=lambda: (running.take_place("p4", cap=2), taken.set()))
    waiter.start()
    assert not taken.wait(0.5)  # both places held, and nothing polls the tasks yet: long past their due time
    with running.polling():
        assert taken.wait(5.0)  # a look found a task finished: its place went to the waiting create
    waiter.join()
    assert client.looked[0] == "t1" and len(running) == 0


def test_a_create_waiting_for_its_place_is_not_sent_once_the_submitter_stops() -> None:
    running = RunningTasks(cast(Ledger, Noted()), cast(WatermarkService, IdleClient()),
                           PollSchedule(first_poll_after=60.0))
    assert running.take_place("p1", cap=1)
    running.add("p1", "t1")
    assert running.take_place("resent", cap=5)  # a create whose first attempt got no reply holds a place
    answers: list[bool] = []
    waiter = threading.Thread(target=lambda: answers.append(running.take_place("p2", cap=1)))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive()  # the place is held
    running.stop()  # the submitter is leaving (an error, a timeout): nothing more goes out
    waiter.join(5.0)
    assert answers == [False]
    assert running.take_place("resent", cap=5) is False  # nor its second attempt (on_unknown_submit='resubmit')
