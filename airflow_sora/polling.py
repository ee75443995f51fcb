"""When to poll a Kie task, following the spec's guidance.

Kie suggests 2-3 s at first, 5-10 s after 30 s, 15-30 s after 2 minutes, giving up after 10-15 minutes,
and at most about one request per second per task. A task typically takes 1-3 s, so the first look comes
at the expected latency; for the next few seconds, while most tasks finish, we look every second (the
per-task ceiling), then back off as the spec suggests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from airflow_sora.services.errors import ServiceError
from airflow_sora.services.models import TaskStatus

DEFAULT_INTERVAL = 2.0
MAX_CONSECUTIVE_ERRORS = 5


@dataclass(frozen=True)
class PollSchedule:
    first_poll_after: float = 2.0  # the expected latency: most tasks are done at the first look
    interval: float = DEFAULT_INTERVAL
    early_interval: float = 1.0  # the tail right after the expected latency: Kie's one-per-second ceiling
    early_window: float = 10.0
    after_30s: float = 5.0
    after_2min: float = 15.0
    # Callbacks (0: none expected, poll as above). A task with no callback this long after the wait began is
    # polled every ``callback_interval``; if no callback at all came by then, the receiver is presumed down and
    # every task is polled on the schedule above.
    callback_silence: float = 0.0
    callback_interval: float = 30.0

    def delay(self, elapsed: float) -> float:
        """Seconds to wait before the next poll, ``elapsed`` seconds after the wait began."""
        if elapsed < self.early_window and self.interval <= DEFAULT_INTERVAL:  # a slower choice is respected
            return min(self.interval, self.early_interval)
        if elapsed < 30:
            return self.interval
        if elapsed < 120:
            return max(self.interval, self.after_30s)
        return max(self.interval, self.after_2min)

    def as_dict(self) -> dict[str, float]:
        return {"first_poll_after": self.first_poll_after, "interval": self.interval,
                "early_interval": self.early_interval, "early_window": self.early_window,
                "after_30s": self.after_30s, "after_2min": self.after_2min,
                "callback_silence": self.callback_silence, "callback_interval": self.callback_interval}

    @property
    def expects_callbacks(self) -> bool:
        return self.callback_silence > 0


WaitStatus = Literal["success", "timeout", "error"]


@dataclass(frozen=True)
class WaitOutcome:
    status: WaitStatus
    message: str


class WaitTracker:
    """The one poll decision, shared by the worker loop, the trigger and the sensor.

    The loops only do I/O: each round they poll the pending task ids and hand the statuses and errors here.
    The tracker decides the same way everywhere: a permanent error (bad key, unknown task) ends the wait at
    once; up to ``max_consecutive_errors`` rounds in a row in which no poll got through are tolerated; the
    wall-clock ``deadline`` (epoch seconds) ends it with ``timeout``; every task terminal ends it with
    ``success``. A finished task is never polled again.
    """

    def __init__(self, task_ids: Iterable[str], *, deadline: float, schedule: PollSchedule | None = None,
                 max_consecutive_errors: int = MAX_CONSECUTIVE_ERRORS,
                 clock: Callable[[], float] = time.time) -> None:
        self.task_ids = list(dict.fromkeys(task_ids))
        self.deadline = deadline
        self.schedule = schedule or PollSchedule()
        self.max_consecutive_errors = max_consecutive_errors
        self.statuses: dict[str, TaskStatus] = {}
        self.failing_rounds = 0
        self._clock = clock
        self._started = clock()

    @property
    def pending(self) -> list[str]:
        return [t for t in self.task_ids if not (t in self.statuses and self.statuses[t].terminal)]

    def first_delay(self) -> float:
        return self._bounded(self.schedule.first_poll_after)

    def next_delay(self) -> float:
        return self._bounded(self.schedule.delay(self._clock() - self._started))

    def after_round(self, statuses: Mapping[str, TaskStatus], errors: Sequence[ServiceError]) -> WaitOutcome | None:
        """Take in one round's results; an outcome ends the wait, None means poll again after ``next_delay``."""
        self.statuses.update(statuses)
        permanent = [e for e in errors if not e.retryable]
        if permanent:
            return WaitOutcome("error", f"polling stopped: {permanent[0]}")
        if not self.pending:
            return WaitOutcome("success", f"all {len(self.task_ids)} tasks finished")
        if self._clock() >= self.deadline:  # checked after a round: the last look is at the deadline
            return WaitOutcome("timeout", f"{len(self.pending)} of {len(self.task_ids)} tasks were still "
                                          "running at the deadline")
        # A round fails when no poll in it got through: a few errors among many tasks are normal at scale.
        self.failing_rounds = self.failing_rounds + 1 if errors and not statuses else 0
        if self.failing_rounds > self.max_consecutive_errors:
            return WaitOutcome("error", f"{self.failing_rounds} consecutive poll rounds failed: {errors[0]}")
        return None

    def listen_delay(self) -> float:
        """The pause between rounds while callbacks are heard: an inbox listing is cheap, a poll is not."""
        return self._bounded(self.schedule.interval)

    def _bounded(self, delay: float) -> float:
        return max(0.0, min(delay, self.deadline - self._clock()))


class CallbackWatch:
    """Which waiting tasks to poll when callbacks are expected: the one decision, shared like ``WaitTracker``.

    A callback is only a wake-up (its body is not signed), so a task heard of is polled once to confirm, again
    with a growing pause if it was not finished yet. A task not heard of is polled only once it is past its
    expected time (``callback_silence`` after the wait began, or twice the longest service time seen), then
    every ``callback_interval``. If nothing at all was heard by ``callback_silence``, the receiver is presumed
    down: ``fallback`` turns true and the caller polls every pending task on the plain schedule, as without
    callbacks.
    """

    def __init__(self, schedule: PollSchedule, *, clock: Callable[[], float] = time.time) -> None:
        self.schedule = schedule
        self.heard: set[str] = set()
        self.longest_latency = 0.0
        self._clock = clock
        self._started = clock()
        self._next_look: dict[str, float] = {}  # task id -> when it may be polled again
        self._confirms: dict[str, int] = {}

    @property
    def fallback(self) -> bool:
        return not self.heard and self._clock() - self._started >= self.schedule.callback_silence

    def hear(self, task_ids: Iterable[str]) -> None:
        """Take in the task ids the inbox holds; a task heard of for the first time is due at once."""
        for task_id in task_ids:
            if task_id not in self.heard:
                self.heard.add(task_id)
                self._next_look[task_id] = 0.0

    def due(self, pending: Sequence[str]) -> list[str]:
        """The pending tasks to poll now (all of them in fallback)."""
        if self.fallback:
            return list(pending)
        now = self._clock()
        quiet_until = self._started + max(self.schedule.callback_silence, 2 * self.longest_latency)
        due = []
        for task_id in pending:
            if (task_id in self.heard or now >= quiet_until) and now >= self._next_look.get(task_id, quiet_until):
                due.append(task_id)
        return due

    def polled(self, statuses: Mapping[str, TaskStatus]) -> None:
        """After a round: when each task polled and not finished may be looked at again."""
        now = self._clock()
        for task_id, status in statuses.items():
            if status.terminal:
                if status.completed_at_ms is not None and status.created_at_ms is not None:
                    took = (status.completed_at_ms - status.created_at_ms) / 1000
                    self.longest_latency = max(self.longest_latency, took)
                continue
            if task_id in self.heard:  # heard of but not finished yet: the record may lag the callback
                tries = self._confirms[task_id] = self._confirms.get(task_id, 0) + 1
                pause = min(self.schedule.interval * 2 ** (tries - 1), self.schedule.callback_interval)
            else:
                pause = self.schedule.callback_interval
            self._next_look[task_id] = now + pause
