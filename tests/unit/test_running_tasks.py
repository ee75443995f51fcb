"""``RunningTasks``: the submitter's background poller hands its failures back instead of leaving a create
waiting for room forever."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest

from airflow_sora.batch.ledger import Ledger
from airflow_sora.batch.running import RunningTasks
from airflow_sora.polling import PollSchedule
from airflow_sora.services.base import WatermarkService


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


def test_the_wait_for_room_answers_ahead_when_a_place_frees_within_the_lead() -> None:
    """A create may be made ready while its place is still held; it is told when the place frees, and that
    moment is the release itself, never earlier."""
    running = RunningTasks(cast(Ledger, None), cast(WatermarkService, IdleClient()),
                           PollSchedule(first_poll_after=60.0))
    running.due.observe(1.0)
    running.due.observe(1.0)  # tasks take 1 s: a place frees 1 s after its create's answer
    answered = time.monotonic() - 0.7  # frees ~0.3 s from now
    running.add("post", "task", answered_at=answered)
    assert running.wait_for_room(1, timeout=5.0, lead=0.0) is not None
    assert time.monotonic() >= answered + 1.0  # without a lead: woken once the place is free
    answered = time.monotonic() - 0.5  # frees ~0.5 s from now
    running.add("post-2", "task-2", answered_at=answered)
    send_at = running.wait_for_room(1, timeout=5.0, lead=2.0)
    assert send_at == answered + 1.0  # told the release at once, without waiting for it
    assert time.monotonic() < send_at
    assert running.wait_for_room(1, timeout=0.01, lead=0.0) is None  # no room within the timeout
