"""``DuePolls``: which running tasks to poll and when, so places under the running cap free as tasks end.

A fake clock; no I/O. The order is oldest first, a task is due once as old as the longest service time seen
lately (bounded by twice the median), one poll interval later while nothing waits for room, and a task found
still running is not looked at again sooner than the schedule allows (Kie: about one look per second per task).
"""

from __future__ import annotations

import random

from airflow_sora.polling import DuePolls, PollSchedule
from airflow_sora.services.models import TaskState, TaskStatus
from tests.unit.clock import Clock


def finished(task_id: str, took: float) -> TaskStatus:
    return TaskStatus(task_id=task_id, state=TaskState.SUCCEEDED, created_at_ms=1_000_000,
                      completed_at_ms=1_000_000 + round(took * 1000))


def running(task_id: str) -> TaskStatus:
    return TaskStatus(task_id=task_id, state=TaskState.RUNNING, created_at_ms=1_000_000)


def polls(clock: Clock | None = None, **schedule: float) -> DuePolls:
    return DuePolls(PollSchedule(**schedule), clock=clock or Clock(100))


def test_before_any_task_finished_the_first_look_is_the_schedules() -> None:
    clock = Clock(100)
    due = polls(clock, first_poll_after=2.0)
    due.add("a")
    clock.now += 1.9
    assert due.due(urgent=True) == []
    clock.now += 0.1
    assert due.due(urgent=True) == ["a"]
    assert due.next_due(urgent=True) == 102.0


def test_a_task_is_due_once_as_old_as_the_longest_service_time_seen_plus_a_margin_that_shrinks() -> None:
    clock = Clock(100)
    due = polls(clock)
    for took in (1.5, 2.5, 2.0):
        due.observe(took)
    assert due.expected_latency() == 2.5 + 1.0 / 2  # few seen: the range's end may be well past the longest
    due.add("a")
    clock.now += 2.75
    assert due.due(urgent=True) == []
    clock.now += 0.25
    assert due.due(urgent=True) == ["a"]
    for _ in range(97):
        due.observe(2.0)
    assert due.expected_latency() == 2.5 + 1.0 / 99


def test_finished_tasks_teach_their_service_time_and_leave() -> None:
    clock = Clock(100)
    due = polls(clock)
    due.add("a")
    clock.now += 2.0
    due.polled("a", finished("a", 1.7))
    assert "a" not in due and len(due) == 0
    assert due.expected_latency() == 2.0  # one seen: not less than the schedule's first look
    due.observe(2.5)
    assert due.expected_latency() == 2.5 + 0.8


def test_a_time_measured_here_is_not_learned_so_late_looks_do_not_push_the_next_ones_later() -> None:
    due = polls(first_poll_after=2.0)
    due.add("a")
    due.polled("a", TaskStatus(task_id="a", state=TaskState.SUCCEEDED))  # no service times in the reply
    assert due.expected_latency() == 2.0


def test_due_tasks_come_oldest_first() -> None:
    clock = Clock(100)
    due = polls(clock)
    due.observe(2.0)
    for name in "abc":
        due.add(name)
        clock.now += 0.5
    due.add("d", created_at=clock.now - 5)  # answered late, created earlier: the order is the order of adding
    clock.now += 2.0
    assert due.due(urgent=True) == ["a", "b", "c", "d"]
    assert due.task_ids == ["a", "b", "c", "d"]
    assert due.next_due(urgent=True) == 96.5 + 2.0 and due.last_due(urgent=True) == 101.0 + 2.0  # "d", "c"


def test_without_a_create_waiting_for_room_a_task_waits_one_more_poll_interval() -> None:
    clock = Clock(100)
    due = polls(clock)
    due.observe(2.0)
    due.add("a")
    clock.now += 2.0
    assert due.due(urgent=True) == ["a"]
    assert due.due(urgent=False) == []
    assert due.next_due(urgent=False) == 100.0 + 2.0 + 1.0  # Kie's one-per-second ceiling, as the schedule has it
    clock.now += 1.0
    assert due.due(urgent=False) == ["a"]


def test_a_task_still_running_is_not_looked_at_again_within_a_second() -> None:
    clock = Clock(100)
    due = polls(clock)
    due.observe(2.0)
    due.add("a")
    due.add("b")
    clock.now += 2.0
    due.polled("a", running("a"))
    due.polled("b", None)  # the poll failed: says nothing, look again later
    assert due.due(urgent=True) == []
    clock.now += 0.99
    assert due.due(urgent=True) == []
    clock.now += 0.01
    assert due.due(urgent=True) == ["a", "b"]


def test_an_old_task_backs_off_as_the_spec_says() -> None:
    clock = Clock(100)
    due = polls(clock)
    due.add("slow")
    clock.now += 45
    due.polled("slow", running("slow"))
    assert due.next_due(urgent=True) == clock.now + 5.0  # 5-10 s after 30 s
    clock.now += 100
    due.polled("slow", running("slow"))
    assert due.next_due(urgent=True) == clock.now + 15.0  # 15-30 s after 2 minutes


def test_a_task_holds_its_place_until_a_look_finds_it_finished() -> None:
    """Room comes when the look that frees it is due; a task a look finds still running (slower than any seen)
    keeps its place until a later look, so the cap holds at the service."""
    clock = Clock(100)
    due = polls(clock, first_poll_after=2.0)
    due.add("a")
    assert len(due) == 1 and due.room_at(1) == 102.0  # before any service time: the schedule's first look
    clock.now += 60
    assert len(due) == 1 and due.room_at(1) == 102.0  # long past its look: still held until a look says
    due.polled("a", running("a"))
    assert len(due) == 1 and due.room_at(1) == clock.now + PollSchedule().delay(60)
    due.polled("a", finished("a", 61.0))
    assert len(due) == 0 and due.room_at(1) == clock.now


def test_room_is_found_as_many_looks_ahead_as_the_room_asked_for_needs() -> None:
    """Creates made ready ahead take the next places: the one after them must look past those looks, not
    wait for each to pass before it is made ready itself."""
    clock = Clock(100)
    due = polls(clock)
    for _ in range(101):
        due.observe(2.0)
    for offset in (0.0, 0.3, 0.1, 0.2):  # answered out of order: due at 102.0, 102.1, 102.2, 102.3
        due.add(f"t{offset}", created_at=100 + offset)
    assert due.room_at(5) == 100  # room now
    assert due.room_at(4) == 102.0
    assert due.room_at(3) == 102.1  # one create already waits for the first look
    assert due.room_at(2) == 102.2
    assert due.room_at(1) == 102.3
    assert due.room_at(0) is None  # no look gets below none
    clock.now = 102.1
    due.polled("t0.1", running("t0.1"))  # found running: its place frees at a later look, after the others
    assert due.room_at(2) == 102.3 and due.room_at(1) == 102.1 + PollSchedule().delay(2.0)


def test_one_slow_task_does_not_hold_back_the_rest() -> None:
    due = polls()
    for _ in range(50):
        due.observe(2.0)
    due.observe(60.0)
    assert due.expected_latency() == 4.0  # twice the median, not the outlier and its range


def test_only_recent_service_times_count() -> None:
    due = DuePolls(PollSchedule(), window=10)
    for _ in range(10):
        due.observe(9.0)
    for _ in range(10):
        due.observe(2.0)
    assert due.expected_latency() == 2.0  # the window holds only the newest ten


def test_polling_at_the_due_time_costs_about_one_status_call_per_task() -> None:
    """A simulated batch at the cap (tasks take 2 s +/- 0.5 s): the due time finds almost every task finished at
    the first look, so status calls stay within a few of one per task, and a finished task goes unseen for less
    than the spread of the service times."""
    rng = random.Random(7)
    clock = Clock(100)
    due = polls(clock)
    took: dict[str, float] = {}
    created: dict[str, float] = {}
    calls = 0
    unseen: list[float] = []
    for k in range(2000):
        task_id = f"t{k}"
        due.add(task_id)
        created[task_id], took[task_id] = clock.now, rng.uniform(1.5, 2.5)
        clock.now += 0.02
        for looked in due.due(urgent=True):
            calls += 1
            if clock.now >= created[looked] + took[looked]:
                unseen.append(clock.now - created[looked] - took[looked])
                due.polled(looked, finished(looked, took[looked]))
            else:
                due.polled(looked, running(looked))
    assert calls <= 2000 * 1.01
    assert max(unseen) <= 1.0 + 0.02

