"""Progress lines for the local engine, in the style of the service operator's (``airflow_sora.progress``).

A line as each file starts (with the tally of the files before it), at least every ``PROGRESS_INTERVAL`` seconds
while one is cleaned (a ticker thread covers an engine busy between callbacks), and one when all are done::

    Sora local progress [render]: 2/5 files done (1 landed, 1 no mark, 0 failed); file 3/5 s_68e8....mp4:
    render 40/86 frames at 37.9 fps; about 12 s left

The time left is the rest of the work at the pace measured so far, the work being the sources' bytes (a long
file takes longer) and a file's progress its stages' frames, each stage weighted by its usual share of the time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from airflow_sora.local_batch.manifest import FileOutcome, FileStatus
from airflow_sora.progress import PROGRESS_INTERVAL, repeating

#: Each stage's usual share of a file's time, in order: what a file's progress within a stage is worth.
STAGE_WEIGHTS = {"fetch": 0.05, "scan": 0.25, "learn": 0.10, "render": 0.55, "land": 0.05}
_SHOWN = {FileStatus.LANDED: "landed", FileStatus.NO_MARK: "no mark", FileStatus.SKIPPED: "skipped",
          FileStatus.FAILED: "failed"}


@dataclass
class _Current:
    index: int
    name: str
    weight: float
    stage: str = "fetch"
    done: int = 0
    total: int = 0
    stage_started: float = 0.0

    def fraction(self) -> float:
        """How much of this file is done, 0-1, from the stages passed and the current stage's frames."""
        order = list(STAGE_WEIGHTS)
        if self.stage not in STAGE_WEIGHTS:
            return 0.0
        before = sum(STAGE_WEIGHTS[s] for s in order[: order.index(self.stage)])
        within = self.done / self.total if self.total > 0 else 0.0
        return min(1.0, before + STAGE_WEIGHTS[self.stage] * min(1.0, within))


class LocalProgress:
    """Counts files as they settle, follows the engine's callbacks for the current one, writes lines.

    ``log``: any logger with ``info`` (the task's own). ``sizes``: each file's size in bytes, None if unknown.
    """

    def __init__(self, log: Any, sizes: Sequence[int | None], *, interval: float = PROGRESS_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.interval = interval
        self._clock = clock
        known = [s for s in sizes if s]
        typical = sum(known) / len(known) if known else 1.0
        self._weights = [float(s) if s else typical for s in sizes]
        self.total = len(sizes)
        self._work_total = sum(self._weights)
        self._work_done = 0.0
        self._started: float | None = None
        self._counts = {status: 0 for status in FileStatus}
        self._current: _Current | None = None
        self._last_line = float("-inf")
        self._lock = threading.Lock()

    # events ---------------------------------------------------------------------------------------------
    def settled_before_work(self, index: int, outcome: FileOutcome) -> None:
        """A file settled without engine work (already landed): counted, its weight leaves the estimate."""
        with self._lock:
            self._counts[outcome.status] += 1
            self._work_total -= self._weights[index]

    def start_file(self, index: int, name: str) -> None:
        """A line per file, naming it, with the tally of the files before it."""
        with self._lock:
            now = self._clock()
            if self._started is None:
                self._started = now
            self._current = _Current(index, name, self._weights[index], stage_started=now)
        self.write()

    def stage(self, stage: str, done: int = 0, total: int = 0) -> None:
        """The engine's callback (``stage``, ``frames_done``, ``frames_total``), and the operator's own stages."""
        with self._lock:
            current = self._current
            if current is None:
                return
            changed = stage != current.stage
            if changed:
                current.stage, current.stage_started = stage, self._clock()
            current.done, current.total = done, total
            due = self._clock() - self._last_line >= self.interval  # a stage change alone is not worth a line
        if due:
            self.write()

    def finish_file(self, outcome: FileOutcome) -> None:
        """No line: the next file's line carries this one's outcome, and the batch ends with the ``done`` line."""
        with self._lock:
            self._counts[outcome.status] += 1
            current, self._current = self._current, None
            if current is not None:
                self._work_done += current.weight

    # lines ----------------------------------------------------------------------------------------------
    def write(self, stage: str | None = None) -> None:
        with self._lock:
            self._last_line = self._clock()
            line = self.line(stage)
        self.log.info("%s", line)

    def line(self, stage: str | None = None) -> str:
        """The progress line as things stand (call with the lock held, or from a single thread)."""
        settled = sum(self._counts.values())
        tally = ", ".join(f"{self._counts[s]} {_SHOWN[s]}" for s in FileStatus
                          if self._counts[s] or s in (FileStatus.LANDED, FileStatus.FAILED))
        current = self._current
        shown_stage = stage or (current.stage if current else "done" if settled == self.total else "between files")
        parts = [f"Sora local progress [{shown_stage}]: {settled}/{self.total} files done ({tally})"]
        if current is not None:
            where = f"file {current.index + 1}/{self.total} {current.name}: {current.stage}"
            if current.total:
                where += f" {current.done}/{current.total} frames"
                elapsed = self._clock() - current.stage_started
                if elapsed > 0 and current.done:
                    where += f" at {current.done / elapsed:.1f} fps"
            parts.append(where)
        if current is None and settled == self.total:
            return "; ".join(parts)
        left = self.seconds_left()
        parts.append("time left unknown yet" if left is None else f"about {left:.0f} s left")
        return "; ".join(parts)

    def seconds_left(self) -> float | None:
        """The rest of the work at the pace measured since the first file started; None before any pace."""
        if self._started is None:
            return None
        current = self._current
        done = self._work_done + (current.weight * current.fraction() if current else 0.0)
        elapsed = self._clock() - self._started
        if done <= 0 or elapsed <= 0:
            return None
        return max(0.0, self._work_total - done) * elapsed / done

    def ticking(self) -> AbstractContextManager[None]:
        """While the body runs, a line at least every ``interval`` even if the engine is silent."""

        def tick() -> None:
            if self._clock() - self._last_line >= self.interval:
                self.write()

        return repeating(self.interval / 3, tick, name="sora-local-progress")
