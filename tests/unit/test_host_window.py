"""The host's window of creates: processes on one machine share one moving window in a locked file."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from airflow_sora import account_window
from airflow_sora.account_window import RETRY_AFTER, account_digest
from airflow_sora.host_window import HOST_WINDOW_ENV, LOCK_TIMEOUT, STALE_AFTER, HostWindow, host_window_enabled
from airflow_sora.ratelimit import TokenBucket, kie_default_rate, shared_bucket
from tests.unit.clock import Clock

KEY = "host-window-secret-key"
ACCOUNT = account_digest("kie", "http://x", KEY)


def private(tmp_path: Path) -> Path:
    """A directory only this user may write, as the window requires."""
    directory = tmp_path / "windows"
    directory.mkdir(mode=0o700)
    return directory


def test_processes_on_one_host_share_the_window(tmp_path: Path) -> None:
    wall, directory = Clock(5000), private(tmp_path)
    first, second = (HostWindow(ACCOUNT, limit=3, window=10.0, directory=directory, wall_clock=wall)
                     for _ in range(2))
    assert [first.reserve(), second.reserve(), first.reserve()] == [0.0, 0.0, 0.0]
    wall.now += 4.0
    wait = second.reserve()  # the window is full: the first create leaves it 6 s from now
    assert wait is not None and 6.0 <= wait <= 6.1
    wall.now += 6.0
    assert second.reserve() == 0.0


def test_the_file_names_the_account_by_a_hash_and_holds_only_the_last_creates(tmp_path: Path) -> None:
    wall = Clock(5000)
    window = HostWindow(ACCOUNT, limit=2, window=10.0, directory=private(tmp_path), wall_clock=wall)
    for _ in range(3):
        assert window.reserve() == 0.0
        wall.now += 6.0
    assert KEY not in window.path.name and ACCOUNT in window.path.name
    data = window.path.read_bytes()
    assert KEY.encode() not in data and len(data) == 8 + 2 * 8  # the oldest slot's index, then one per create
    assert window.path.stat().st_mode & 0o077 == 0
    wall.now = 5013.0  # the creates at 5006 and 5012 hold both slots; the first leaves the window at 5016
    wait = window.reserve()
    assert wait is not None and 3.0 <= wait <= 3.1


def test_a_torn_file_or_a_clock_gone_back_costs_at_most_one_window(tmp_path: Path) -> None:
    wall = Clock(5000)
    window = HostWindow(ACCOUNT, limit=2, window=10.0, directory=private(tmp_path), wall_clock=wall)
    window.path.write_bytes(b"\x01\x02\x03")  # a process killed mid-write
    window.path.chmod(0o600)
    assert window.reserve() == 0.0 and window.reserve() == 0.0
    assert (window.reserve() or 0) > 0  # both slots now within the window
    wall.now -= 3600  # the clock went back an hour: the slots count as taken now, not an hour ahead
    wait = window.reserve()
    assert wait is not None and 10.0 <= wait <= 10.1


def test_files_unused_for_a_day_are_removed(tmp_path: Path) -> None:
    directory = private(tmp_path)
    stale = directory / f"{'0' * 64}-19-10.window"
    stale.write_bytes(b"")
    os.utime(stale, (time.time() - STALE_AFTER - 60,) * 2)
    fresh = directory / f"{'1' * 64}-19-10.window"
    fresh.write_bytes(b"")
    HostWindow(ACCOUNT, limit=1, window=10.0, directory=directory).reserve()
    assert not stale.exists() and fresh.exists()


@pytest.mark.parametrize("setup", ["others-may-write", "a-link"])
def test_a_directory_another_user_could_change_is_not_used(tmp_path: Path, setup: str) -> None:
    if setup == "others-may-write":
        directory = tmp_path / "shared"
        directory.mkdir()
        directory.chmod(0o777)
    else:
        directory = tmp_path / "link"
        directory.symlink_to(private(tmp_path))
    window = HostWindow(ACCOUNT, limit=1, window=10.0, directory=directory)
    assert window.reserve() is None and not window.in_charge
    assert not any(directory.iterdir())


def test_a_lock_held_too_long_hands_pacing_back(tmp_path: Path) -> None:
    import fcntl

    window = HostWindow(ACCOUNT, limit=1, window=10.0, directory=private(tmp_path))
    assert window.reserve() == 0.0
    with window.path.open("rb") as held:  # another process stopped while holding the lock
        fcntl.flock(held, fcntl.LOCK_EX)
        started = time.monotonic()
        assert window.reserve() is None
        assert LOCK_TIMEOUT <= time.monotonic() - started < LOCK_TIMEOUT + 1.0


def test_a_window_that_cannot_be_used_hands_pacing_back_with_one_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(100)
    blocked = tmp_path / "a-file"
    blocked.write_text("")  # a directory path through a file: the window cannot be created
    window = HostWindow(ACCOUNT, limit=1, window=10.0, directory=blocked / "dir", clock=clock)
    with caplog.at_level(logging.WARNING, logger=account_window.__name__):
        assert window.reserve() is None and not window.in_charge
        clock.now += RETRY_AFTER + 1
        assert window.reserve() is None  # asked again, still unusable: no second warning
    assert len(caplog.records) == 1 and "unavailable" in caplog.records[0].getMessage()


def test_a_refusal_still_slows_a_process_under_the_host_window(tmp_path: Path) -> None:
    """Processes on other hosts are outside the window: a 429 means one of them sent, so the bucket adapts."""
    clock = Clock(100)
    window = HostWindow(ACCOUNT, limit=19, window=10.0, directory=private(tmp_path), clock=clock)
    bucket = TokenBucket(kie_default_rate(), clock=clock, account=window)
    assert bucket.acquire(lambda s: None) == 0.0
    bucket.on_success()
    bucket.on_throttle(0.5)
    assert bucket.rate < kie_default_rate()


def test_without_redis_the_shared_bucket_takes_its_creates_from_the_host_window(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HOST_WINDOW_ENV, raising=False)
    assert host_window_enabled()
    bucket = shared_bucket("kie", "http://host-window", KEY, kie_default_rate())
    assert isinstance(bucket.account, HostWindow)
    monkeypatch.setenv(HOST_WINDOW_ENV, "0")
    assert shared_bucket("kie", "http://host-window", KEY, kie_default_rate()).account is None


def _take_slots(directory: str, count: int, queue: multiprocessing.Queue[float]) -> None:
    window = HostWindow(ACCOUNT, limit=4, window=1.0, directory=Path(directory))
    for _ in range(count):
        window.acquire()
        queue.put(time.time())


def test_separate_processes_never_exceed_the_window_between_them(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[float] = context.Queue()
    directory = private(tmp_path)
    workers = [context.Process(target=_take_slots, args=(str(directory), 4, queue)) for _ in range(3)]
    for worker in workers:
        worker.start()
    taken = sorted(queue.get(timeout=60) for _ in range(12))
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    for start in taken:  # stamped just after each slot was taken, late on a busy host: allow a quarter second
        assert sum(start <= t < start + 0.75 for t in taken) <= 4
    assert taken[-1] - taken[0] >= 2.0  # 12 creates at 4 per second: three windows
