"""moto's S3 server with every request counted at the server, by HTTP verb and by S3 operation.

    python bench/s3_requests.py --port 5000      # 127.0.0.1 only

The counts are the server's own, taken in a WSGI middleware around moto's app before moto sees the request,
so every request any client sends is counted whichever library made it. Two side paths that no bucket can
have (``_`` is not allowed in a bucket name) read and clear them, and are not counted themselves::

    GET  /_counts          {"requests": n, "verbs": {...}, "operations": {...}, "statuses": {...}, "keys": {...}}
    POST /_counts/reset
    POST /_counts/seed     {"bucket": b, "objects": {key: text}}: stored straight into moto's backend, so a
                           benchmark can start from a folder with a long history in seconds, not minutes

``CountingS3`` runs it in a process of its own (as the benchmarks run moto) and reads the counts.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the S3 server helper lives with the tests

from tests.deployment.cluster import free_port, wait_for
from tests.deployment.services import S3Process

COUNTS_PATH = "/_counts"
SEED_PATH = COUNTS_PATH + "/seed"
# what varies from video to video or from run to run in a key: masked so "keys" counts each kind of object once
KEY_PARTS = re.compile(r"s_[0-9a-f]{32}|(?:manual|scheduled|backfill|asset_triggered)__[^/]+"
                       r"|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{16,}")


def s3_operation(method: str, path: str, query: str, headers: dict[str, str]) -> str:
    """The S3 API operation a path-style request is (the only style a 127.0.0.1 endpoint gets)."""
    params = parse_qs(query, keep_blank_values=True)
    bucket, _, key = path.lstrip("/").partition("/")
    copy = "x-amz-copy-source" in headers
    if not bucket:
        return "ListBuckets" if method == "GET" else f"{method} /"
    if not key:
        return {
            "GET": ("ListObjectsV2" if params.get("list-type") == ["2"] else "ListMultipartUploads"
                    if "uploads" in params else "GetBucketLocation" if "location" in params else "ListObjects"),
            "HEAD": "HeadBucket", "PUT": "CreateBucket", "DELETE": "DeleteBucket",
            "POST": "DeleteObjects" if "delete" in params else "POST bucket",
        }.get(method, f"{method} bucket")
    if method == "PUT":
        if "partNumber" in params:
            return "UploadPartCopy" if copy else "UploadPart"
        return "CopyObject" if copy else "PutObject"
    if method == "POST":
        return ("CreateMultipartUpload" if "uploads" in params else "CompleteMultipartUpload"
                if "uploadId" in params else "POST object")
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in params else "DeleteObject"
    if method == "GET":
        return "ListParts" if "uploadId" in params else "GetObjectTagging" if "tagging" in params else "GetObject"
    return "HeadObject" if method == "HEAD" else f"{method} object"


def condition(headers: dict[str, str]) -> str:
    """A conditional request's precondition, named as S3 does (a conditional put is how leases are taken)."""
    found = [name for name in ("if-none-match", "if-match", "if-modified-since", "if-unmodified-since")
             if name in headers]
    return f" ({', '.join(found)})" if found else ""


class CountingApp:
    """WSGI middleware: counts each request by verb, by operation and by operation + status, then calls moto."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.counts: dict[str, Counter[str]] = {name: Counter() for name in ("verbs", "operations", "statuses", "keys")}

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"requests": sum(self.counts["verbs"].values()),
                    **{name: dict(counter) for name, counter in self.counts.items()}}

    def reset(self) -> None:
        with self.lock:
            for counter in self.counts.values():
                counter.clear()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
        if path == SEED_PATH and method == "POST":
            seeded = seed(json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))))
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps({"seeded": seeded}).encode()]
        if path.startswith(COUNTS_PATH):
            if method == "POST":
                self.reset()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps(self.snapshot()).encode()]
        headers = {k[5:].replace("_", "-").lower(): str(v) for k, v in environ.items() if k.startswith("HTTP_")}
        operation = s3_operation(method, path, environ.get("QUERY_STRING", ""), headers)
        with self.lock:
            self.counts["verbs"][method] += 1
            self.counts["operations"][operation] += 1
            self.counts["keys"][f"{operation} {KEY_PARTS.sub('<id>', path)}"] += 1

        def counted_start(status: str, *args: Any) -> Any:
            with self.lock:
                self.counts["statuses"][f"{operation}{condition(headers)} {status.split()[0]}"] += 1
            return start_response(status, *args)

        return self.app(environ, counted_start)


def seed(request: dict[str, Any]) -> int:
    """Objects put straight into moto's in-memory backend (the account every ``testing`` client maps to)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    for key, text in request["objects"].items():
        backend.put_object(request["bucket"], key, text.encode())
    return len(request["objects"])


class CountingS3(S3Process):
    """This script in a process of its own on 127.0.0.1, with the counts at hand."""

    @classmethod
    def start(cls) -> CountingS3:
        import subprocess

        port = free_port()
        popen = subprocess.Popen([sys.executable, __file__, "--port", str(port)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(url + COUNTS_PATH).status_code == 200, 30, "the counting S3 server")
        return cls(url, popen)

    def counts(self) -> dict[str, Any]:
        return dict(httpx.get(self.url + COUNTS_PATH).json())

    def reset_counts(self) -> None:
        httpx.post(f"{self.url}{COUNTS_PATH}/reset").raise_for_status()

    def seed(self, bucket: str, objects: dict[str, str], batch: int = 5000) -> None:
        """Store objects without counting them (nor paying a request each), a batch at a time."""
        items = list(objects.items())
        for start in range(0, len(items), batch):
            httpx.post(self.url + SEED_PATH, json={"bucket": bucket, "objects": dict(items[start:start + batch])},
                       timeout=300).raise_for_status()


def main() -> None:
    import logging
    import signal

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = CountingApp(DomainDispatcherApplication(create_backend_app))
    make_server("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler).serve_forever()


if __name__ == "__main__":
    main()
