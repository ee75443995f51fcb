"""When progress lines are written, what they say, and the time-left estimate."""

from __future__ import annotations

import logging
import time

import pytest

from airflow_sora.progress import Counts, ProgressReporter, progress_line
from tests.unit.clock import Clock


def test_a_line_at_every_stage_change_and_at_least_every_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(0.0)
    reporter = ProgressReporter(logging.getLogger("t"), interval=15, clock=clock)
    counts = Counts(total=500, submitted=40, running=40, credits=400)
    with caplog.at_level(logging.INFO, "t"):
        assert reporter.update("submitting", counts)
        clock.now = 14.9
        assert not reporter.update("submitting", counts)  # same stage, too soon
        assert reporter.update("waiting", counts)  # a stage change always writes
        clock.now = 30.0
        assert reporter.update("waiting", counts)
    assert len(caplog.records) == 3


def test_the_line_gives_counts_out_of_n_credits_and_time_left() -> None:
    clock = Clock(0.0)
    reporter = ProgressReporter(logging.getLogger("t"), clock=clock)
    reporter.update("submitting", Counts(total=500, submitted=100, running=80, finished=60, landed=20))
    clock.now = 10.0
    counts = Counts(total=500, submitted=500, running=100, finished=400, landed=37, failed=3, credits=5000)
    line = progress_line("landing", counts, reporter.seconds_left(counts))
    # settling is the slowest stage: 20 settled in 10 s, 460 to go, about 230 s
    assert line == ("Sora progress [landing]: 37/500 landed, 3 failed, 500/500 submitted, 100 running, "
                    "400/500 finished at the service; 5000 credits charged; about 230 s left")


def test_while_submitting_the_pace_of_submission_sets_the_estimate() -> None:
    """Videos settled before the first line (a URL rejected before any call) are not pace."""
    clock = Clock(0.0)
    reporter = ProgressReporter(logging.getLogger("t"), clock=clock)
    reporter.update("submitting", Counts(total=62, rejected=1))
    assert reporter.seconds_left(Counts(total=62, rejected=1)) is None  # nothing has moved yet
    clock.now = 15.0
    assert reporter.seconds_left(Counts(total=62, rejected=1, submitted=30, running=30)) == pytest.approx(15.5)


def test_no_estimate_before_anything_settled() -> None:
    reporter = ProgressReporter(logging.getLogger("t"), clock=Clock(0.0))
    assert reporter.seconds_left(Counts(total=10, submitted=3)) is None


def test_the_ticker_writes_while_nothing_happens(caplog: pytest.LogCaptureFixture) -> None:
    reporter = ProgressReporter(logging.getLogger("t"), interval=0.1)
    with caplog.at_level(logging.INFO, "t"), reporter.ticking(lambda: "landing", lambda: Counts(total=1)):
        time.sleep(0.45)
    assert len(caplog.records) >= 3
