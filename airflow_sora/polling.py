"""When to poll a Kie task, following the spec's guidance.

Kie suggests 2-3 s at first, 5-10 s after 30 s, 15-30 s after 2 minutes, giving up after 10-15 minutes,
and at most about one request per second per task. A task typically takes 1-3 s, so the first look comes
at the expected latency; for the next few seconds, while most tasks finish, we look every second (the
per-task ceiling), then back off as the spec suggests.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
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


class DuePolls:
    """When each running task is worth a status call, and in which order: what frees places under the cap.

    A task is due once it is as old as the longest service time seen lately (``observe``, from the service's
    own create and complete times of finished tasks): looked at then, it has almost always finished, so one
    call learns its end. Before any task finished, the schedule's first look stands in; one slow task does
    not hold everyone back, as the wait is never more than twice the median seen. That is the due time while
    a create waits for room (``urgent``); otherwise a task waits one more poll interval, since nothing waits
    for its place and a later look costs no call. A task found still running is looked at again after the
    schedule's delay for its age (by default at most one look per second per task, Kie's ceiling). Due tasks
    come oldest first, as they end roughly in that order. Pure: the caller polls and reports back.

    Under a running cap a task holds its place until a look finds it finished, so the cap holds at the service
    whatever a task's service time; ``room_at`` tells when that look is due, so a create can be made ready
    just before its place frees.
    """

    def __init__(self, schedule: PollSchedule, *, window: int = 500,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.schedule = schedule
        self._clock = clock
        self._created: dict[str, float] = {}  # task id -> when its create was answered, oldest first
        self._next_look: dict[str, float] = {}  # tasks looked at and still running -> when to look again
        self._recent: deque[float] = deque(maxlen=window)  # service times seen, newest last
        self._ordered: list[float] = []  # the same, sorted

    def __len__(self) -> int:
        return len(self._created)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._created

    @property
    def task_ids(self) -> list[str]:
        """Oldest first."""
        return list(self._created)

    def add(self, task_id: str, created_at: float | None = None) -> None:
        """A task the service just created (``created_at`` on this object's clock; default now)."""
        self._created[task_id] = self._clock() if created_at is None else created_at

    def discard(self, task_id: str) -> None:
        self._created.pop(task_id, None)
        self._next_look.pop(task_id, None)

    def observe(self, seconds: float) -> None:
        """A finished task's service time (create to complete, by the service's clock)."""
        if seconds < 0:
            return
        if len(self._recent) == self._recent.maxlen:
            del self._ordered[bisect.bisect_left(self._ordered, self._recent[0])]
        self._recent.append(seconds)
        bisect.insort(self._ordered, seconds)

    def expected_latency(self) -> float:
        """How old a task is when a look almost surely finds it finished: the longest service time seen lately
        plus the range seen over their count (the usual estimate of a range's end from samples: a wide margin
        while few were seen, none once many were), at most twice their median; until two were seen, not less
        than the schedule's first look."""
        seen = self._ordered
        if len(seen) < 2:
            return max([self.schedule.first_poll_after, *seen])
        longest = seen[-1] + (seen[-1] - seen[0]) / (len(seen) - 1)
        return min(longest, 2 * seen[len(seen) // 2])

    def room_at(self, room: int) -> float | None:
        """When fewer than ``room`` tasks may be running (this object's clock): now if they already are, else
        when the look is due that, finding its task finished, brings the count below ``room`` (the tasks are
        looked at as soon as they fall due while room is wanted); None when no look can (``room`` < 1)."""
        needed = len(self._created) - room  # looks before the one that makes room
        if needed < 0:
            return self._clock()
        looks = sorted(look for _, look in self._looks(urgent=True))
        return looks[needed] if needed < len(looks) else None

    def due(self, *, urgent: bool) -> list[str]:
        """The tasks to poll now, oldest first."""
        now = self._clock()
        return [task_id for task_id, look in self._looks(urgent) if look <= now]

    def next_due(self, *, urgent: bool) -> float | None:
        """When the next task falls due (this object's clock), None when none is running."""
        return min((look for _, look in self._looks(urgent)), default=None)

    def last_due(self, *, urgent: bool) -> float | None:
        """When the last task falls due (this object's clock), None when none is running."""
        return max((look for _, look in self._looks(urgent)), default=None)

    def polled(self, task_id: str, status: TaskStatus | None) -> None:
        """After one status call (``None``: it failed): a finished task leaves, teaching its service time; any
        other is looked at again after the schedule's delay for its age."""
        if task_id not in self._created:
            return
        if status is not None and status.terminal:
            if status.completed_at_ms is not None and status.created_at_ms is not None:
                self.observe((status.completed_at_ms - status.created_at_ms) / 1000)
            self.discard(task_id)
            return
        now = self._clock()
        self._next_look[task_id] = now + self.schedule.delay(now - self._created[task_id])

    def _looks(self, urgent: bool) -> Iterable[tuple[str, float]]:
        wait = self.expected_latency()
        if not urgent:
            wait += self.schedule.delay(wait)
        for task_id, created in self._created.items():
            yield task_id, self._next_look.get(task_id, created + wait)
