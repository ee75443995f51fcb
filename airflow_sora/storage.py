"""Small object-storage helpers: atomic writes and reads on any ``ObjectStoragePath``.

Local paths publish by ``os.replace`` of a temporary file in the same folder; remote stores (S3 and friends)
write through fsspec with ``autocommit=False`` and commit only once everything is verified, so an aborted
write never leaves a partial object at the final key.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import IO, Any

from airflow.sdk import ObjectStoragePath

LOCAL_PROTOCOLS = {"file", "local", ""}
#: Multipart part size for remote stores: bounds the memory a landing holds, whatever the file size.
PART_SIZE = 8 * 1024 * 1024


def protocol_of(path: ObjectStoragePath) -> str:
    """The storage protocol (``s3``, ``file``...); fsspec may report several aliases, the first is canonical."""
    protocol = path.protocol
    if isinstance(protocol, (tuple, list)):
        protocol = protocol[0] if protocol else ""
    return str(protocol)


def is_local(path: ObjectStoragePath) -> bool:
    return protocol_of(path) in LOCAL_PROTOCOLS


def fs_path(path: ObjectStoragePath) -> str:
    """The path as the underlying fsspec filesystem names it (``bucket/key`` for S3)."""
    return str(path.path)


class Publication:
    """A write that becomes visible at its final key only on ``commit``; ``discard`` leaves nothing there."""

    def __init__(self, target: ObjectStoragePath) -> None:
        self.target = target
        self._local = is_local(target)
        if self._local:
            final = fs_path(target)
            os.makedirs(os.path.dirname(final) or ".", exist_ok=True)
            self._temp = os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.{uuid.uuid4().hex}.part")
            self.handle: IO[bytes] = open(self._temp, "wb")  # noqa: SIM115 - closed in commit/discard
        else:
            self.handle = target.fs.open(fs_path(target), "wb", autocommit=False, block_size=PART_SIZE)

    def write(self, data: bytes) -> None:
        self.handle.write(data)

    def commit(self) -> None:
        if self._local:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            os.replace(self._temp, fs_path(self.target))
        else:
            self.handle.close()  # uploads the last part; with autocommit=False nothing is visible yet
            self.handle.commit()  # type: ignore[attr-defined]

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            if self._local:
                self.handle.close()
                os.unlink(self._temp)
            else:
                self.handle.discard()  # type: ignore[attr-defined]  # aborts the multipart upload
                self.handle.closed = True  # type: ignore[misc]  # nothing left to flush


@contextlib.contextmanager
def publish(target: ObjectStoragePath) -> Iterator[Publication]:
    """Commit on a clean exit, discard on any exception."""
    publication = Publication(target)
    try:
        yield publication
    except BaseException:
        publication.discard()
        raise
    publication.commit()


def write_atomic(target: ObjectStoragePath, data: bytes) -> None:
    with publish(target) as publication:
        publication.write(data)


def read_bytes_or_none(path: ObjectStoragePath) -> bytes | None:
    try:
        return bytes(path.read_bytes())
    except FileNotFoundError:
        return None


def size_or_none(path: ObjectStoragePath) -> int | None:
    try:
        info: dict[str, Any] = path.fs.info(fs_path(path))
    except FileNotFoundError:
        return None
    return int(info.get("size") or 0)
