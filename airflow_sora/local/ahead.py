"""Stages on threads of their own, so decoding, the engine's work and encoding overlap.

PyAV releases the GIL while FFmpeg decodes and encodes, and NumPy and OpenCV release it for their array work,
so a decoder running ahead of the engine, and an encoder running behind it, use the second core while the
engine thinks about one frame. Each hand-over is a short bounded queue: memory stays a few frames, whatever
the video's length. An error in a stage reaches the caller; a caller that stops early stops the stage.

The encoder is the slowest stage and the others have frames in hand to spare: ``yielding`` runs the others at
a lower priority, so when the cores are busy the encoder's threads go first.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
DEPTH = 2  # items in flight between two stages, at the least
LOWER_BY = 10  # nice steps below the rest of the process (a thread at +10 gets about a tenth of a busy core)
IN_FLIGHT_BYTES = 8 * 2**20  # frames in flight between two stages, at the most: six at 720p, two at 1080p


def depth_for(frame_bytes: int) -> int:
    """How many frames two stages may hand over at once: enough to ride out a slow frame in either, within a
    fixed memory budget."""
    return max(DEPTH, min(6, IN_FLIGHT_BYTES // max(1, frame_bytes)))


_DONE = object()
_POLL = 0.1  # seconds a blocked stage waits before checking whether it was stopped


def yielding(work: Callable[[threading.Event], T]) -> T:
    """``work(stopped)`` on a thread of its own at a lower priority than the caller's, its result or error
    returned or raised here. Threads it starts (a decoder running ahead) inherit the priority; threads started
    before it (an encoder behind) keep theirs. The calling thread's own priority never changes. If it is
    interrupted, ``stopped`` is set, and the interruption is raised once ``work`` has ended (it should end
    soon): what ``work`` uses, such as an open file, is not closed under it. A second interruption while it
    ends is not held back."""
    stopped, ended = threading.Event(), threading.Event()
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        _lower_this_thread()
        try:
            outcome.append(work(stopped))
        except BaseException as exc:  # raised in the caller's thread
            failure.append(exc)
        finally:
            ended.set()

    thread = threading.Thread(target=run, name="sora-local-work", daemon=True)
    thread.start()
    try:
        while not ended.wait(_POLL):  # an event, not a join: an interrupted join may not wait again
            pass
    except BaseException:
        stopped.set()
        ended.wait()
        raise
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def _lower_this_thread() -> None:
    """Linux gives each thread a nice value of its own; elsewhere (where a thread id is no process id) this does
    nothing rather than risk another process."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError):
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + LOWER_BY))


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def ahead(items: Iterator[T], depth: int = DEPTH) -> Iterator[T]:
    """Yield what ``items`` yields, produced on a thread of its own up to ``depth`` items ahead."""
    handover: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _put(handover, item, stop):
                    return
            _put(handover, _DONE, stop)
        except BaseException as exc:  # handed to the consumer, raised there
            _put(handover, _Failed(exc), stop)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="sora-local-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = handover.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        _drain(handover)
        thread.join()


class Behind(Generic[T]):
    """Hands items to ``consume`` on a thread of its own, up to ``depth`` behind the caller.

    Use as a context manager: leaving it waits for every item to be consumed and raises the first error
    ``consume`` raised (also raised by ``put`` as soon as it is known, so a failing encoder stops the work).
    """

    def __init__(self, consume: Callable[[T], None], depth: int = DEPTH) -> None:
        self._consume = consume
        self._handover: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sora-local-behind", daemon=True)

    def __enter__(self) -> Behind[T]:
        self._thread.start()
        return self

    def put(self, item: T) -> None:
        self._raise()
        if not _put(self._handover, item, self._stop):
            self._raise()

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        if error is not None:  # the caller failed: drop what is queued
            self._stop.set()
            _drain(self._handover)
        else:
            _put(self._handover, _DONE, self._stop)
        self._thread.join()
        if error is None:
            self._raise()

    def _run(self) -> None:
        while True:
            try:
                item = self._handover.get(timeout=_POLL)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if item is _DONE or self._stop.is_set():
                return
            try:
                self._consume(item)  # type: ignore[arg-type]
            except BaseException as exc:  # raised in the caller's thread
                self._error = exc
                self._stop.set()
                _drain(self._handover)
                return

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error


def _put(handover: queue.Queue[object], item: object, stop: threading.Event) -> bool:
    """Put ``item``, waiting for room; False if the other side stopped meanwhile."""
    while not stop.is_set():
        try:
            handover.put(item, timeout=_POLL)
            return True
        except queue.Full:
            continue
    return False


def _drain(handover: queue.Queue[object]) -> None:
    while True:
        try:
            handover.get_nowait()
        except queue.Empty:
            return
