"""The landing lease on a local folder and on moto's S3 server: one holder at a time, and no lease outlives
its holder by more than its time to live."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_sora.lease import LandingBusyError, LandingLease
from airflow_sora.storage import create_exclusive


@pytest.fixture(params=["local", "s3"])
def folder(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStoragePath:
    if request.param == "local":
        return ObjectStoragePath(f"file://{tmp_path}/")
    bucket = request.getfixturevalue("s3_bucket")
    return ObjectStoragePath(f"s3://aws_default@{bucket}/out/")


def test_create_exclusive_writes_only_where_nothing_is(folder: ObjectStoragePath) -> None:
    target = folder / "_state" / "one.json"
    assert create_exclusive(target, b"first")
    assert not create_exclusive(target, b"second")
    assert target.read_bytes() == b"first"


def test_a_second_holder_waits_for_the_first(folder: ObjectStoragePath) -> None:
    path = folder / "lease.json"
    order: list[str] = []
    first = LandingLease(path, "run-a", poll=0.02)
    with first.held():
        second = threading.Thread(target=lambda: _hold(LandingLease(path, "run-b", poll=0.02), order))
        second.start()
        time.sleep(0.5)
        order.append("a done")
    second.join(10)
    assert order == ["a done", "b held"]
    assert not path.exists()  # released


def _hold(lease: LandingLease, order: list[str]) -> None:
    with lease.held():
        order.append("b held")


def test_an_expired_lease_is_broken_and_an_earlier_try_taken_over(folder: ObjectStoragePath) -> None:
    path = folder / "lease.json"
    path.write_bytes(json.dumps({"holder": "dead-run", "token": "x", "expires_at": time.time() - 1}).encode())
    with LandingLease(path, "run-b", wait=0.5).held():
        assert LandingLease(path, "run-c").read()["holder"] == "run-b"  # type: ignore[index]
    path.write_bytes(json.dumps({"holder": "run-b", "token": "y", "expires_at": time.time() + 600}).encode())
    started = time.monotonic()
    with LandingLease(path, "run-b", wait=5).held():  # the same task's next try: no wait for its own lease
        assert time.monotonic() - started < 2


def test_a_live_lease_is_renewed_and_a_waiter_gives_up_with_a_clear_error(folder: ObjectStoragePath) -> None:
    path = folder / "lease.json"
    busy = r"another run \(dag/run-a/land/-1\).*a retry lands it"
    # Waits twice the time to live: only renewal (every ttl/3, slack for a busy machine) keeps the lease alive.
    with LandingLease(path, "dag/run-a/land/-1", ttl=2.0).held(), pytest.raises(LandingBusyError, match=busy):
        LandingLease(path, "run-b", wait=4.0, poll=0.1).acquire()
    assert not path.exists()


def test_release_never_removes_another_holders_lease(folder: ObjectStoragePath) -> None:
    path = folder / "lease.json"
    mine = LandingLease(path, "run-a")
    mine.acquire()
    path.write_bytes(json.dumps({"holder": "run-b", "token": "theirs", "expires_at": time.time() + 60}).encode())
    mine.release()
    assert json.loads(path.read_bytes())["token"] == "theirs"
