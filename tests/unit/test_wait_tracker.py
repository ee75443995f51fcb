"""The one poll decision shared by the worker loop, the trigger and the sensor."""

from __future__ import annotations

from airflow_sora.polling import PollSchedule, WaitTracker
from airflow_sora.services.errors import AuthError, ServiceUnavailableError
from airflow_sora.services.models import TaskState, TaskStatus
from tests.unit.clock import Clock


def status(task_id: str, state: TaskState) -> TaskStatus:
    return TaskStatus(task_id=task_id, state=state)


def test_success_when_every_task_is_terminal_and_finished_tasks_are_not_polled_again() -> None:
    clock = Clock()
    tracker = WaitTracker(["a", "b"], deadline=clock.now + 60, clock=clock)
    assert tracker.after_round({"a": status("a", TaskState.SUCCEEDED), "b": status("b", TaskState.RUNNING)},
                               []) is None
    assert tracker.pending == ["b"]
    outcome = tracker.after_round({"b": status("b", TaskState.FAILED)}, [])
    assert outcome is not None and outcome.status == "success"


def test_transient_errors_are_tolerated_up_to_the_limit_then_end_the_wait() -> None:
    clock = Clock()
    tracker = WaitTracker(["a"], deadline=clock.now + 600, clock=clock, max_consecutive_errors=2)
    error = ServiceUnavailableError("503")
    assert tracker.after_round({}, [error]) is None
    assert tracker.after_round({}, [error]) is None
    outcome = tracker.after_round({}, [error])
    assert outcome is not None and outcome.status == "error" and "3 consecutive" in outcome.message


def test_a_clean_round_resets_the_error_count() -> None:
    clock = Clock()
    tracker = WaitTracker(["a"], deadline=clock.now + 600, clock=clock, max_consecutive_errors=1)
    error = ServiceUnavailableError("503")
    assert tracker.after_round({}, [error]) is None
    assert tracker.after_round({"a": status("a", TaskState.RUNNING)}, []) is None
    assert tracker.after_round({}, [error]) is None


def test_a_permanent_error_ends_the_wait_at_once() -> None:
    clock = Clock()
    tracker = WaitTracker(["a"], deadline=clock.now + 600, clock=clock)
    outcome = tracker.after_round({}, [AuthError("bad key")])
    assert outcome is not None and outcome.status == "error" and "bad key" in outcome.message


def test_deadline_gives_a_last_look_then_times_out() -> None:
    clock = Clock()
    tracker = WaitTracker(["a"], deadline=clock.now + 10, clock=clock, schedule=PollSchedule(interval=30))
    clock.now += 9
    assert tracker.next_delay() <= 1.0  # never sleeps past the deadline
    clock.now += 1
    outcome = tracker.after_round({"a": status("a", TaskState.RUNNING)}, [])
    assert outcome is not None and outcome.status == "timeout" and "1 of 1" in outcome.message
    clock2 = Clock()
    late = WaitTracker(["a"], deadline=clock2.now, clock=clock2)
    finished = late.after_round({"a": status("a", TaskState.SUCCEEDED)}, [])
    assert finished is not None and finished.status == "success"  # the look at the deadline counts


def test_a_few_errors_among_many_polls_do_not_end_the_wait() -> None:
    clock = Clock()
    tracker = WaitTracker([f"t{i}" for i in range(100)], deadline=clock.now + 600, clock=clock,
                          max_consecutive_errors=2)
    for _ in range(10):  # every round, 99 polls answer and one fails
        answered = {f"t{i}": status(f"t{i}", TaskState.RUNNING) for i in range(99)}
        assert tracker.after_round(answered, [ServiceUnavailableError("503")]) is None
