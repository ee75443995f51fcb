"""The poll schedule follows Kie's guidance: quick at first, then backing off."""

from __future__ import annotations

from airflow_sora.polling import PollSchedule


def test_default_schedule_matches_the_spec() -> None:
    schedule = PollSchedule()
    assert 1.0 <= schedule.first_poll_after <= 3.0  # a task typically takes 1-3 s
    assert [schedule.delay(t) for t in (0, 5, 9.9)] == [1.0, 1.0, 1.0]  # the tail, at one per second
    assert [schedule.delay(t) for t in (10, 20, 29.9)] == [2.0, 2.0, 2.0]
    assert [schedule.delay(t) for t in (30, 60, 119)] == [5.0, 5.0, 5.0]
    assert [schedule.delay(t) for t in (120, 600)] == [15.0, 15.0]


def test_a_faster_interval_is_kept_in_the_early_window() -> None:
    assert PollSchedule(interval=0.1).delay(0) == 0.1


def test_a_slower_interval_is_never_sped_up_by_the_back_off() -> None:
    schedule = PollSchedule(interval=20.0)
    assert schedule.delay(0) == schedule.delay(60) == schedule.delay(300) == 20.0


def test_round_trip_through_a_dict() -> None:
    schedule = PollSchedule(first_poll_after=0.5, interval=1.0)
    assert PollSchedule(**schedule.as_dict()) == schedule


def test_requests_per_task_stay_at_most_one_per_second_by_default() -> None:
    schedule = PollSchedule()
    assert all(schedule.delay(t) >= 1.0 for t in range(0, 900, 7))
