"""One writer at a time per landed video: a lease object created only if absent.

Two runs (a scheduled run and a manual one, or two DAGs sharing a folder) may land the same post id into the
same output at once. Each publishes two objects, the video and then its sidecar; interleaved, what stays can be
one run's video and the other's sidecar, whose checksum then lies about the file beside it. Holding a lease
while both are written keeps every pair whole.

The lease names its holder (dag, run, task, map index) and an expiry that a background thread renews while the
holder lives. A lease past its expiry is broken, so a worker killed mid-landing blocks others for at most
``ttl``; a later try of the same task takes its own lease over at once (Airflow runs one try at a time).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from airflow.sdk import ObjectStoragePath

from airflow_sora.exceptions import ResultDownloadError
from airflow_sora.storage import (
    create_exclusive,
    delete_if_present,
    has_exclusive_create,
    read_bytes_or_none,
    write_atomic,
)

log = logging.getLogger(__name__)

LEASE_TTL = 120.0
LEASE_WAIT = 1800.0


class LandingBusyError(ResultDownloadError):
    """Another live writer held the video's lease for longer than this one would wait (retryable)."""


class LandingLease:
    """``with lease.held():`` runs its body while no other holder of the same lease path runs theirs."""

    def __init__(self, path: ObjectStoragePath, holder: str, *, ttl: float = LEASE_TTL,
                 wait: float = LEASE_WAIT, poll: float = 0.2, token: str | None = None) -> None:
        self.path = path
        self.holder = holder
        self.ttl = ttl
        self.wait = wait
        self.poll = poll
        self.token = token or uuid.uuid4().hex  # given: a lease this holder already took (a claim)
        self._atomic = has_exclusive_create(path)  # the create's answer is final: no read-back needed

    @contextmanager
    def held(self, *, acquired: bool = False, mark_landed: bool = False, keep_on_failure: bool = False
             ) -> Iterator[None]:
        """``acquired``: this holder took the lease earlier (its claim before paying), under ``token``.
        ``mark_landed``: when the body succeeds, leave a "landed" mark instead of deleting the lease, so a run
        that planned before this landing and claims the video just after it learns it is landed, not free.
        ``keep_on_failure``: a claim outlives a failed landing, so no other run pays while a retry of this one
        can still land the paid result (it expires if this run never comes back)."""
        if not acquired:
            self.acquire()
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew_until, args=(stop,), name="sora-lease", daemon=True)
        renewer.start()
        landed = False
        try:
            yield
            landed = mark_landed
        finally:
            stop.set()
            renewer.join()
            if landed or not keep_on_failure:
                self.release_quietly(landed=landed)

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait
        while (current := self.try_acquire()) is not None:
            if time.monotonic() >= deadline:
                raise LandingBusyError(
                    f"{self.path.name}: another run ({current.get('holder')}) has been landing the same video "
                    f"into this folder for over {self.wait:.0f} s; a retry lands it once that run is done")
            time.sleep(self.poll)

    def try_acquire(self, *, landed_after: float | None = None) -> dict[str, Any] | None:
        """Take the lease if it is free, expired or an earlier try's; otherwise return the live holder's.

        ``landed_after`` (epoch seconds): a "landed" mark from that time on is returned like a live holder's
        (the video landed after the caller looked); an older one, or any with ``landed_after=None``, is free.
        """
        while True:
            if create_exclusive(self.path, self._body()) and (self._atomic or self._mine(self.read())):
                return None
            current = self.read()
            if current is None:
                continue  # released between our create and our read: try again at once
            if current.get("landed") and landed_after is not None and float(current["landed"]) >= landed_after:
                return current
            if current.get("holder") == self.holder or float(current.get("expires_at", 0)) < time.time():
                log.info("Taking over the landing lease %s from %s (%s)", self.path, current.get("holder"),
                         "an earlier try" if current.get("holder") == self.holder else "expired")
                self._delete_if(current)
                continue
            return current

    def release(self, *, landed: bool = False) -> None:
        """Delete the lease (or mark it landed) only if it is still ours (a later try of the same task may have
        taken it over). A landed mark has expired already: anyone may take it, but a run that planned before it
        was written sees that the video landed meanwhile."""
        if not self._mine(self.read()):
            return
        if landed:
            write_atomic(self.path, json.dumps({"holder": self.holder, "token": self.token, "landed": time.time(),
                                                "expires_at": 0}).encode())
        else:
            delete_if_present(self.path)

    def release_quietly(self, *, landed: bool = False) -> None:
        """``release``, but a store that fails it only delays others: the lease expires by itself, and a landing
        (or its failure) is never reported differently because its lease could not be put down."""
        try:
            self.release(landed=landed)
        except Exception as error:
            log.warning("Could not release the landing lease %s (%s: %s); it expires by itself", self.path,
                        type(error).__name__, error)

    def read(self) -> dict[str, Any] | None:
        raw = read_bytes_or_none(self.path)
        if raw is None:
            return None
        try:
            return dict(json.loads(raw))
        except ValueError:
            return {}  # unreadable: treated as expired (no expiry)

    # internals ------------------------------------------------------------------------------------
    def _body(self) -> bytes:
        return json.dumps({"holder": self.holder, "token": self.token,
                           "expires_at": time.time() + self.ttl}).encode()

    def _mine(self, lease: dict[str, Any] | None) -> bool:
        return bool(lease) and lease.get("token") == self.token  # type: ignore[union-attr]

    def _delete_if(self, lease: dict[str, Any]) -> None:
        """Delete the lease if it is still the one read (narrows the window where a fresh lease goes too)."""
        if self.read() == lease:
            delete_if_present(self.path)

    def _renew_until(self, stop: threading.Event) -> None:
        while not stop.wait(self.ttl / 3):
            try:
                if not self._mine(self.read()):
                    log.warning("The landing lease %s was taken over while this worker held it", self.path)
                    return
                write_atomic(self.path, self._body())
            except Exception as error:  # a store hiccup: the next renewal (ttl/3 later) tries again
                log.warning("Renewing the landing lease %s failed: %s", self.path, type(error).__name__)
