"""One window of paid creates for every process on this host, kept in a locked file: pacing without Redis.

Without a shared store, processes on one account can only find their shares by meeting 429s: a run that
starts while others send is refused until they slow down, and the room a finished run leaves is found only
by probing into a full window. Most deployments without Redis run their tasks on one machine (the
LocalExecutor; several runs, mapped tasks and retries are processes on it). Those processes share a disk, so
they share one moving window in a file there: each create takes a slot under an exclusive ``flock``, and the
processes on this host never send more than ``limit`` creates per ``window`` seconds between them, whenever
they start, as with the Redis window.

The window is per host, not per account: a process on another host is outside it, so a 429 here still slows
this process as it would without the window (``account_wide`` is False), and processes on several hosts
share the account through the adaptive bucket. Each account's window is a file of its own, named by a hash
of service, endpoint and key (never the key) and holding only the times of its last ``limit`` creates, one
8-byte slot each (a create takes the oldest slot, if that one has left the window), in a directory only this
user can use; files unused for a day are removed. Any failure to use it (no ``flock`` on the file system, a
read-only temp dir) hands pacing back to the adaptive bucket with one warning, as an unreachable Redis does.
``AIRFLOW_SORA_HOST_WINDOW=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path

from airflow_sora.account_window import MIN_WAIT, SharedWindow

#: Environment switch for the host's window (on unless set to 0/false/no/off; always off where ``fcntl`` is
#: missing, on Windows).
HOST_WINDOW_ENV = "AIRFLOW_SORA_HOST_WINDOW"
#: Where the window's file lives (default: a per-user directory under the system's temp dir).
HOST_WINDOW_DIR_ENV = "AIRFLOW_SORA_HOST_WINDOW_DIR"
SUFFIX = ".window"
#: Window files unused for this long are removed when a process first uses the directory.
STALE_AFTER = 24 * 3600.0


def host_window_enabled() -> bool:
    if os.environ.get(HOST_WINDOW_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        import fcntl  # noqa: F401
    except ImportError:
        return False
    return True


def default_directory() -> Path:
    configured = os.environ.get(HOST_WINDOW_DIR_ENV)
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"airflow-sora-{os.getuid()}"


class HostWindow(SharedWindow):
    """At most ``limit`` creates in any ``window`` seconds for one account, across this host's processes."""

    account_wide = False

    def __init__(self, account: str, limit: int, window: float, *, directory: Path | None = None,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time,
                 label: str = "") -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit must be >= 1 and window > 0")
        super().__init__(clock=clock, label=label or "The host's window of creates")
        self._name = f"{account}-{limit}-{window:g}{SUFFIX}"
        self._limit = limit
        self._window = window
        self._directory = directory
        self._now = wall_clock  # shared by every process on the host, unlike a monotonic clock
        self._checked = False  # the directory was found to be this user's

    @property
    def path(self) -> Path:
        return (self._directory or default_directory()) / self._name

    def _take(self) -> float:
        with self._locked() as descriptor:
            now = self._now()
            slots = _read(descriptor, self._limit)
            if max(slots) > now + self._window:  # stamped further ahead than a window: the clock went back
                slots = array("d", (0.0 if t > now + self._window else t for t in slots))
            taken = min(slots)
            if taken > now - self._window:
                return max(MIN_WAIT, taken + self._window - now)
            os.pwrite(descriptor, array("d", [now]).tobytes(), slots.index(taken) * slots.itemsize)
            return 0.0

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        import fcntl

        path = self.path
        if not self._checked:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if path.parent.stat().st_uid != os.getuid():  # another user made it first: not a window to trust
                raise PermissionError(f"{path.parent} belongs to another user")
            if not path.exists():
                _remove_stale(path.parent, self._now())
            self._checked = True
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield descriptor
        finally:
            os.close(descriptor)  # closing releases the lock

    def _forget_store(self) -> None:
        self._checked = False


def _read(descriptor: int, limit: int) -> array[float]:
    """The window's ``limit`` slots; a new file, or one written by a process killed midway, reads as free slots."""
    data = os.pread(descriptor, limit * 8, 0)
    slots = array("d")
    slots.frombytes(data[: len(data) - len(data) % slots.itemsize])
    slots.extend([0.0] * (limit - len(slots)))
    return slots


def _remove_stale(directory: Path, now: float) -> None:
    """Window files no process used for a day (accounts gone, endpoints of finished test servers)."""
    for path in directory.glob(f"*{SUFFIX}"):
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime > STALE_AFTER:
                path.unlink()
