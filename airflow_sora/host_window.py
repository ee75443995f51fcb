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
share the account through the adaptive bucket. The file holds only timestamps under a hash of service,
endpoint and key (never the key), lives in a directory only this user can read, and is pruned on every
write. Any failure to use it (no ``flock`` on the file system, a read-only temp dir) hands pacing back to the
adaptive bucket with one warning, as an unreachable Redis does. ``AIRFLOW_SORA_HOST_WINDOW=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from airflow_sora.account_window import MIN_WAIT, SharedWindow

#: Environment switch for the host's window (on unless set to 0/false/no/off; always off where ``fcntl`` is
#: missing, on Windows).
HOST_WINDOW_ENV = "AIRFLOW_SORA_HOST_WINDOW"
#: Where the window's file lives (default: a per-user directory under the system's temp dir).
HOST_WINDOW_DIR_ENV = "AIRFLOW_SORA_HOST_WINDOW_DIR"
FILE_NAME = "create-windows.json"


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
        self._name = f"{account}/{limit}/{window:g}"
        self._limit = limit
        self._window = window
        self._directory = directory
        self._now = wall_clock  # shared by every process on the host, unlike a monotonic clock

    @property
    def path(self) -> Path:
        return (self._directory or default_directory()) / FILE_NAME

    def _take(self) -> float:
        with self._locked() as handle:
            now = self._now()
            windows = _read(handle)
            # prune every account's window, so the file holds only the last window's creates
            windows = {name: kept for name, sent in windows.items()
                       if (kept := [t for t in sent if now - self._window < t <= now + self._window])}
            mine = windows.setdefault(self._name, [])
            if len(mine) >= self._limit:
                mine.sort()
                return max(MIN_WAIT, mine[-self._limit] + self._window - now)
            mine.append(now)
            _write(handle, windows)
            return 0.0

    @contextlib.contextmanager
    def _locked(self) -> Iterator[IO[str]]:
        import fcntl

        path = self.path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.parent.stat().st_uid != os.getuid():  # another user made it first: not a window to trust
            raise PermissionError(f"{path.parent} belongs to another user")
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(descriptor, "r+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield handle
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _read(handle: IO[str]) -> dict[str, list[float]]:
    handle.seek(0)
    text = handle.read()
    if not text.strip():
        return {}
    try:
        loaded = json.loads(text)
    except ValueError:  # a half-written file (a process killed mid-write): start the window afresh
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {str(name): [float(t) for t in sent if isinstance(t, (int, float))]
            for name, sent in loaded.items() if isinstance(sent, list)}


def _write(handle: IO[str], windows: dict[str, list[float]]) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(windows, separators=(",", ":")))
    handle.flush()
