"""The threads that let decoding, the engine's work and encoding overlap: order, errors, early stops."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator

import pytest

from airflow_sora.local.ahead import LOWER_BY, Behind, ahead, yielding


def test_ahead_yields_everything_in_order_from_another_thread() -> None:
    threads: set[str] = set()

    def numbers() -> Iterator[int]:
        for n in range(50):
            threads.add(threading.current_thread().name)
            yield n

    assert list(ahead(numbers(), depth=3)) == list(range(50))
    assert threads == {"sora-local-ahead"}


def test_an_error_in_the_producer_reaches_the_consumer_after_what_came_before() -> None:
    def failing() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("decoding failed at frame 3")

    got: list[int] = []
    with pytest.raises(ValueError, match="frame 3"):
        for item in ahead(failing()):
            got.append(item)
    assert got == [1, 2]


def test_a_consumer_that_stops_early_stops_and_closes_the_producer() -> None:
    closed = threading.Event()
    produced: list[int] = []

    def endless() -> Iterator[int]:
        try:
            n = 0
            while True:
                produced.append(n)
                yield n
                n += 1
        finally:
            closed.set()

    for item in ahead(endless(), depth=2):
        if item == 5:
            break
    assert closed.wait(5), "the producer was left running"
    assert len(produced) <= 5 + 1 + 2 + 1  # never more than the queue's depth ahead of the consumer


def test_behind_consumes_everything_in_order_before_the_block_ends() -> None:
    seen: list[int] = []
    with Behind(seen.append, depth=2) as writer:
        for n in range(100):
            writer.put(n)
    assert seen == list(range(100))


def test_an_error_in_the_consumer_is_raised_in_the_caller() -> None:
    def write(n: int) -> None:
        if n == 3:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"), Behind(write, depth=1) as writer:
        for n in range(1000):
            writer.put(n)


def test_when_the_caller_fails_behind_drops_the_rest_and_the_callers_error_stands() -> None:
    seen: list[int] = []
    with pytest.raises(KeyError), Behind(seen.append, depth=1000) as writer:
        writer.put(1)
        raise KeyError("edit failed")
    assert seen in ([], [1])


def test_frames_in_flight_fit_a_fixed_budget_whatever_the_resolution() -> None:
    from airflow_sora.local.ahead import DEPTH, IN_FLIGHT_BYTES, depth_for

    for width, height in ((640, 360), (1280, 720), (1920, 1080), (3840, 2160)):
        frame_bytes = width * height * 3 // 2
        depth = depth_for(frame_bytes)
        assert depth >= DEPTH
        assert depth == DEPTH or depth * frame_bytes <= IN_FLIGHT_BYTES
    assert depth_for(1280 * 720 * 3 // 2) > depth_for(1920 * 1080 * 3 // 2)


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_yielding_returns_the_work_s_result_from_another_thread() -> None:
    assert yielding(lambda stopped: (threading.current_thread().name, stopped.is_set())) == ("sora-local-work",
                                                                                             False)


def test_an_error_in_yielding_work_is_raised_in_the_caller() -> None:
    def failing(_stopped: threading.Event) -> int:
        raise ValueError("frame 7 could not be edited")

    with pytest.raises(ValueError, match="frame 7"):
        yielding(failing)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priorities are Linux's")
def test_yielding_work_and_the_threads_it_starts_run_below_the_caller_which_keeps_its_own() -> None:
    before = _nice()
    if before >= 19:
        pytest.skip("the tests run at the lowest priority already: nothing is below it")
    seen: dict[str, int] = {}

    def work(_stopped: threading.Event) -> None:
        seen["work"] = _nice()
        started = threading.Thread(target=lambda: seen.setdefault("started", _nice()))
        started.start()
        started.join()

    encoder = threading.Thread(target=lambda: (threading.Event().wait(0.2), seen.setdefault("earlier", _nice())))
    encoder.start()  # started before the work: keeps the caller's priority
    yielding(work)
    encoder.join()
    assert seen["work"] == min(19, before + LOWER_BY) > before
    assert seen["started"] == seen["work"]
    assert seen["earlier"] == before
    assert _nice() == before


def test_an_interrupted_caller_stops_the_yielding_work_and_waits_for_it_to_end() -> None:
    import _thread

    ended = threading.Event()

    def work(stopped: threading.Event) -> None:
        while not stopped.wait(0.01):
            pass
        threading.Event().wait(0.2)  # what the work holds open is still in use for a moment
        ended.set()

    # Ctrl-C's own handler for this test: code run earlier in the session may have replaced it, and
    # interrupt_main does nothing, or raises nothing, under another one
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(0.2, _thread.interrupt_main, args=(signal.SIGINT,)).start()
        with pytest.raises(KeyboardInterrupt):
            yielding(work)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert ended.is_set()
