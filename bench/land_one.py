"""One landing in a fresh process, so its peak RSS is its own: ``land_one.py KIND URL TARGET``.

KIND is ``plain_copy`` (httpx streamed to a file: the yardstick), ``lander_local`` or ``lander_s3``
(``ResultLander.download``: verified, hashed, published atomically). Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any

import boto3
import httpx
from airflow.sdk import ObjectStoragePath

from airflow_sora.landing import ResultLander
from airflow_sora.storage import bucket_and_key, s3_api_for


def plain_copy(url: str, path: str) -> int:
    size = 0
    with httpx.stream("GET", url, timeout=600) as response, open(path, "wb") as handle:
        for chunk in response.iter_bytes(1 << 20):
            handle.write(chunk)
            size += len(chunk)
    return size


class _StreamReader:
    """A file-like ``read`` over a streamed response, for boto3's multipart upload."""

    def __init__(self, chunks: object) -> None:
        self._chunks = iter(chunks)  # type: ignore[call-overload]
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                break
        data, self._buffer = (self._buffer, b"") if size < 0 else (self._buffer[:size], self._buffer[size:])
        return data


def boto3_client() -> Any:
    conn = json.loads(os.environ["AIRFLOW_CONN_AWS_DEFAULT"])
    return boto3.client("s3", endpoint_url=conn["extra"]["endpoint_url"], region_name="us-east-1",
                        aws_access_key_id=conn["login"], aws_secret_access_key=conn["password"])


def plain_s3(url: str, target: str) -> int:
    """The store's own ceiling: stream straight into boto3's multipart upload (its transfer manager), no checks."""
    bucket, key = bucket_and_key(ObjectStoragePath(target) / "plain.mp4")
    with httpx.stream("GET", url, timeout=600) as response:
        boto3_client().upload_fileobj(_StreamReader(response.iter_bytes(1 << 20)), bucket, key)
        return int(response.headers["content-length"])


def lander(url: str, target: str) -> int:
    output = ObjectStoragePath(target)
    with_lander = ResultLander(output, allow_private_hosts=True, read_timeout=600)
    try:
        return with_lander.download(url, output / "video.mp4").size
    finally:
        with_lander.close()


def main() -> None:
    kind, url, target = sys.argv[1:4]
    if kind == "plain_s3":
        boto3_client()  # imports and credential lookup happen before the clock starts, for both S3 writers
    if kind == "lander_s3":
        s3_api_for(ObjectStoragePath(target))
    started = time.monotonic()
    size = {"plain_copy": plain_copy, "plain_s3": plain_s3}.get(kind, lander)(url, target)
    seconds = time.monotonic() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "mb_per_s": size / seconds / 1e6, "peak_rss_mb": peak_mb, "bytes": size}))


if __name__ == "__main__":
    main()
