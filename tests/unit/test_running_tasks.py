"""``RunningTasks``: the submitter's background poller hands its failures back instead of leaving a create
waiting for room forever."""

from __future__ import annotations

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
