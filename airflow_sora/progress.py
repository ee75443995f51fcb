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
from contextlib import contextmanager
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


def progress_line(stage: str, counts: Counts, seconds_left: float | None) -> str:
    n = counts.total
    parts = [f"{counts.landed}/{n} landed"]
    if counts.skipped:
        parts.append(f"{counts.skipped} skipped")
    parts.append(f"{counts.failed + counts.rejected} failed")
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
        self.log.info("%s", progress_line(stage, counts, self.seconds_left(counts)))
        return True

    def seconds_left(self, counts: Counts) -> float | None:
        """The rest of the work at the pace measured so far. A video is two halves of work: done at the service,
        then settled (landed, or reported); both count, so the estimate moves while tasks finish."""
        elapsed = self._clock() - self._started
        done = max(counts.finished, counts.settled) + counts.settled
        if not done or elapsed <= 0 or not counts.total:
            return None
        fraction = min(1.0, done / (2 * counts.total))
        return max(0.0, elapsed * (1 - fraction) / fraction)

    @contextmanager
    def ticking(self, stage: Callable[[], str], counts: Callable[[], Counts]) -> Iterator[None]:
        """While the body runs, a line at least every ``interval`` even if no event comes."""
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(self.interval / 3):
                self.update(stage(), counts())

        ticker = threading.Thread(target=tick, name="sora-progress", daemon=True)
        ticker.start()
        try:
            yield
        finally:
            stop.set()
            ticker.join()
