"""Progress lines a person watching the task log can read: counts out of N, credits, and the time left.

The worker and the trigger both write them, at every stage change and at least every ``PROGRESS_INTERVAL``
seconds while work is in flight (a ticker thread covers long stretches with no event, such as one big
download). Every line has the same shape, so a log search or a dashboard can parse them::

    Sora progress [waiting]: 37/500 landed, 2 failed, 500/500 submitted, 61 running, 439/500 finished at
    the service; 5000 credits charged; about 25 s left
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

PROGRESS_INTERVAL = 15.0


@dataclass(frozen=True)
class Counts:
    """How far a batch has got. ``finished`` counts videos the service is done with (landed or not yet)."""

    total: int
    submitted: int = 0
    running: int = 0
    finished: int = 0
    landed: int = 0
    skipped: int = 0
    failed: int = 0
    rejected: int = 0
    not_submitted: int = 0
    credits: float = 0.0

    @property
    def settled(self) -> int:
        return self.landed + self.skipped + self.failed + self.rejected + self.not_submitted


def _stage_progress(counts: Counts) -> tuple[int, int, int]:
    """Videos past each stage of the pipeline: submitted, finished at the service, settled."""
    no_service = counts.skipped + counts.rejected + counts.not_submitted
    return (min(counts.total, counts.submitted + no_service), min(counts.total, counts.finished + no_service),
            counts.settled)


def progress_line(stage: str, counts: Counts, seconds_left: float | None) -> str:
    n = counts.total
    parts = [f"{counts.landed}/{n} landed"]
    if counts.skipped:
        parts.append(f"{counts.skipped} skipped")
    parts.append(f"{counts.failed} failed")
    if counts.rejected:  # named as the closing line names them
        parts.append(f"{counts.rejected} rejected")
    if counts.not_submitted:
        parts.append(f"{counts.not_submitted} not submitted")
    parts.append(f"{counts.submitted}/{n} submitted")
    parts.append(f"{counts.running} running")
    parts.append(f"{counts.finished}/{n} finished at the service")
    eta = "time left unknown yet" if seconds_left is None else f"about {seconds_left:.0f} s left"
    return f"Sora progress [{stage}]: {', '.join(parts)}; {counts.credits:g} credits charged; {eta}"


class ProgressReporter:
    """Decides when to write a progress line and estimates the time left from the measured pace.

    ``log`` is any logger with ``info`` (the task's own, so lines land in the task log).
    """

    def __init__(self, log: Any, *,
                 interval: float = PROGRESS_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.interval = interval
        self._clock = clock
        self._started = clock()
        self._stage: str | None = None
        self._baseline: Counts | None = None  # the counts at the first line: pace is measured from there
        self._last_line = float("-inf")
        self._lock = threading.Lock()

    def due(self, stage: str) -> bool:
        """Whether ``update`` would write now: lets callers skip counting when it would not."""
        return stage != self._stage or self._clock() - self._last_line >= self.interval

    def update(self, stage: str, counts: Counts, *, force: bool = False) -> bool:
        """Write a line if the stage changed, ``force`` is set, or ``interval`` passed; True if written."""
        with self._lock:
            now = self._clock()
            if not force and stage == self._stage and now - self._last_line < self.interval:
                return False
            self._stage, self._last_line = stage, now
            if self._baseline is None:
                self._baseline, self._started = counts, now
        self.log.info("%s", progress_line(stage, counts, self.seconds_left(counts)))
        return True

    def seconds_left(self, counts: Counts) -> float | None:
        """The rest of the work at the pace measured since the first line.

        A batch is a pipeline of three stages (submitted, finished at the service, settled), and the slowest one
        sets the end: each stage that has moved is projected at its own pace, and the estimate is the latest of
        them. Videos that needed no service work (skipped, rejected, held back) count as done in every stage.
        Work done before the first line (an earlier try, videos settled while planning) is not pace.
        """
        base = self._baseline
        elapsed = self._clock() - self._started
        if base is None or elapsed <= 0:
            return None
        estimates: list[float] = []
        for now_done, then_done in zip(_stage_progress(counts), _stage_progress(base), strict=True):
            remaining, moved = counts.total - now_done, now_done - then_done
            if remaining <= 0:
                continue
            if moved <= 0:
                if not estimates:  # the first unfinished stage has not moved yet: too early to tell
                    return None
                continue  # a later stage that has not started follows the one before it
            estimates.append(remaining * elapsed / moved)
        return max(estimates, default=0.0)

    def ticking(self, stage: Callable[[], str], counts: Callable[[], Counts]) -> AbstractContextManager[None]:
        """While the body runs, a line at least every ``interval`` even if no event comes."""
        return repeating(self.interval / 3, lambda: self.update(stage(), counts()), name="sora-progress")


@contextmanager
def repeating(period: float, action: Callable[[], object], *, name: str) -> Iterator[None]:
    """Calls ``action`` every ``period`` seconds on a daemon thread while the body runs: progress lines keep
    coming while the work itself is silent."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(period):
            action()

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
