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
share the account through the adaptive bucket. Each account and limit has a file of its own, named by a hash
of service, endpoint and key (never the key), in a directory only this user can use: a ring of the times of
its last ``limit`` creates (8 bytes each) behind the index of the oldest, so a create reads and writes 16
bytes whatever the limit. A process that creates a window file removes the ones unused for a day. Any
failure to use it (no ``flock`` on the file system, a read-only temp dir, a directory or file that is not
this user's, the lock held for more than ``LOCK_TIMEOUT``) hands pacing back to the adaptive bucket with one
warning, as an unreachable Redis does. ``AIRFLOW_SORA_HOST_WINDOW=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import os
import stat
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from airflow_sora.account_window import MIN_WAIT, SharedWindow

#: Environment switch for the host's window (on unless set to 0/false/no/off; always off where ``fcntl`` is
#: missing, on Windows).
HOST_WINDOW_ENV = "AIRFLOW_SORA_HOST_WINDOW"
#: Where the window's file lives (default: a per-user directory under the system's temp dir).
HOST_WINDOW_DIR_ENV = "AIRFLOW_SORA_HOST_WINDOW_DIR"
SUFFIX = ".window"
#: Window files unused for this long are removed by the next process that creates a window file.
STALE_AFTER = 24 * 3600.0
#: The longest a create waits for another process's hold on the file before pacing alone.
LOCK_TIMEOUT = 1.0
_SLOT = struct.Struct("<d")  # a create's time (wall clock)
_HEAD = struct.Struct("<q")  # the index of the oldest slot, at the start of the file


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
        self._checked = False  # the directory was found to be this user's alone

    @property
    def path(self) -> Path:
        return (self._directory or default_directory()) / self._name

    def _take(self) -> float:
        with self._locked() as descriptor:
            now = self._now()
            size = _HEAD.size + self._limit * _SLOT.size
            if os.fstat(descriptor).st_size != size:  # new, or torn by a process killed mid-write: all free
                os.ftruncate(descriptor, 0)
                os.ftruncate(descriptor, size)
            (head,) = _HEAD.unpack(os.pread(descriptor, _HEAD.size, 0))
            head %= self._limit
            offset = _HEAD.size + head * _SLOT.size
            (oldest,) = _SLOT.unpack(os.pread(descriptor, _SLOT.size, offset))
            oldest = min(oldest, now)  # stamped ahead of now (the clock went back): wait one window at most
            if oldest > now - self._window:
                return max(MIN_WAIT, oldest + self._window - now)
            os.pwrite(descriptor, _SLOT.pack(now), offset)
            os.pwrite(descriptor, _HEAD.pack((head + 1) % self._limit), 0)
            return 0.0

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        import fcntl

        path = self.path
        if not self._checked:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _check_private(os.lstat(path.parent), f"{path.parent}", others=0o022)
            if not path.exists():
                _remove_stale(path.parent, self._now())
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            if not self._checked:
                _check_private(os.fstat(descriptor), f"{path}", others=0o077)
                self._checked = True
            deadline = time.monotonic() + LOCK_TIMEOUT
            while True:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{path} stayed locked for {LOCK_TIMEOUT:g} s") from None
                    time.sleep(0.001)
            yield descriptor
        finally:
            os.close(descriptor)  # closing releases the lock

    def _forget_store(self) -> None:
        self._checked = False


def _check_private(info: os.stat_result, what: str, others: int) -> None:
    """The window's directory and file must be this user's: another user who could replace the file, or open
    it to take its lock, could stall or fill the window. ``others``: the permission bits nobody else may have
    (the directory: writing; the file: any access)."""
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & others:
        raise PermissionError(f"{what} is not this user's alone (a link, another owner, or open to others)")


def _remove_stale(directory: Path, now: float) -> None:
    """Window files no process used for a day (accounts gone, endpoints of finished test servers)."""
    for path in directory.glob(f"*{SUFFIX}"):
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime > STALE_AFTER:
                path.unlink()
