"""A multipart upload to S3 with several parts in flight.

fsspec's S3 file uploads one part at a time, so the download waits for every part; S3 (and any S3-compatible
store) takes parts in parallel, which is how boto3's own transfer manager gets its speed. The S3 calls come
from a caller (a thread-safe boto3 client in practice), so this module knows nothing of connections. Memory stays at
``concurrency + 1`` parts whatever the file size: a writer blocks until a part slot is free.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from airflow_sora.storeretry import retrying

#: S3's smallest allowed part (but the last) is 5 MiB; 8 MiB parts allow objects up to ~80 GB (10,000 parts).
DEFAULT_PART_SIZE = 8 * 1024 * 1024
DEFAULT_CONCURRENCY = 4


S3Call = Callable[..., Any]
"""``call(method_name, **kwargs)``: one S3 API call, e.g. ``upload_part``, returning the reply as a dict."""


class ConcurrentMultipartUpload:
    """Write sequentially, upload parts concurrently; the object appears only on ``commit``.

    ``discard`` (or any failure) aborts the multipart upload, so nothing is left at the key and the store
    frees the parts. A part that failed raises on the next ``write`` or in ``commit``.
    """

    def __init__(self, call: S3Call, path: str, *, part_size: int = DEFAULT_PART_SIZE,
                 concurrency: int = DEFAULT_CONCURRENCY) -> None:
        if part_size < 5 * 1024 * 1024:
            raise ValueError("S3 parts must be at least 5 MiB")
        self._s3 = call
        self.bucket, _, self.key = path.partition("/")
        self.part_size = part_size
        self._pending: list[bytes] = []  # written but not yet a part
        self._pending_size = 0
        self._parts: list[Future[dict[str, Any]]] = []
        self._slots = threading.BoundedSemaphore(max(1, concurrency))
        self._pool = ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="sora-s3-part")
        self._upload_id: str | None = None
        self._failed: BaseException | None = None  # the first part that failed, set by its upload thread

    def write(self, data: bytes) -> None:
        self._raise_failed_part()
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= self.part_size:
            joined = b"".join(self._pending)  # the one copy a part costs
            cut = len(joined) - len(joined) % self.part_size
            for start in range(0, cut, self.part_size):
                self._start_part(joined[start:start + self.part_size])
            rest = joined[cut:]
            self._pending, self._pending_size = ([rest] if rest else []), len(rest)

    def commit(self) -> None:
        """Upload what is left and make the object visible (one PUT for an object smaller than a part)."""
        try:
            rest = b"".join(self._pending)
            if self._upload_id is None:
                self._call("put_object", Body=rest)
                return
            if rest:
                self._start_part(rest)
            parts = [future.result() for future in self._parts]
            self._call("complete_multipart_upload", UploadId=self._upload_id, MultipartUpload={"Parts": parts})
        except BaseException:
            self.discard()
            raise
        finally:
            self._pool.shutdown(wait=True)

    def discard(self) -> None:
        """Stop, and leave nothing: in-flight parts are awaited, then the upload is aborted at the store."""
        wait(self._parts)
        self._pool.shutdown(wait=True)
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            # outlasts the client's own retries: an abort lost to a failing store leaves the upload in
            # progress (and billed) until a lifecycle rule, if the bucket has one, frees it
            retrying(lambda: self._call("abort_multipart_upload", UploadId=upload_id),
                     store=f"S3 bucket {self.bucket!r}", operation=f"abort_multipart_upload {self.key!r}",
                     outlast=True)

    # internals ------------------------------------------------------------------------------------
    def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        return dict(self._s3(method, Bucket=self.bucket, Key=self.key, **kwargs))

    def _start_part(self, body: bytes) -> None:
        if self._upload_id is None:
            self._upload_id = str(self._call("create_multipart_upload")["UploadId"])
        self._slots.acquire()  # back-pressure: at most ``concurrency`` parts held in memory in flight
        number = len(self._parts) + 1
        try:
            self._parts.append(self._pool.submit(self._upload_part, number, body))
        except BaseException:
            self._slots.release()
            raise

    def _upload_part(self, number: int, body: bytes) -> dict[str, Any]:
        try:
            reply = self._call("upload_part", UploadId=self._upload_id, PartNumber=number, Body=body)
            return {"PartNumber": number, "ETag": reply["ETag"]}
        except BaseException as error:
            self._failed = self._failed or error
            raise
        finally:
            self._slots.release()

    def _raise_failed_part(self) -> None:
        """O(1) per write: a 4 GiB file is thousands of writes and hundreds of parts."""
        if self._failed is not None:
            raise self._failed
