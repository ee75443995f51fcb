"""A real HTTP proxy in front of an S3 server that answers a share of requests the way S3 does when it is
throttling (``503 SlowDown``) or failing inside (``500 InternalError``).

A faulted request is answered without being forwarded, as S3 refuses it before doing anything; every other
request goes to the server and its reply comes back unchanged. The share can change while clients use it.
"""

from __future__ import annotations

import http.client
import random
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection",
               "expect", "content-length"}
FAULTS = {503: ("SlowDown", "Please reduce your request rate."),
          500: ("InternalError", "We encountered an internal error. Please try again.")}


class S3FaultProxy:
    """``with S3FaultProxy(upstream) as proxy:``; set ``proxy.rate`` (0..1) at any time, and ``proxy.doomed`` (a
    test of method and path) to fail every matching call while ``rate`` is above 0."""

    def __init__(self, upstream: str, *, rate: float = 0.0, seed: int | None = None) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rate = rate
        self.counts: Counter[str] = Counter()  # "forwarded", "SlowDown", "InternalError"
        self._trip: tuple[Callable[[str, str], bool], float] | None = None
        self.doomed: Callable[[str, str], bool] | None = None
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                proxy._handle(self)

            do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), daemon=True)

    def start(self) -> S3FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> S3FaultProxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def trip(self, when: Callable[[str, str], bool], rate: float = 1.0) -> None:
        """From the first request ``when(method, path)`` is true for (that one included), fault at ``rate``."""
        self._trip = (when, rate)

    def _fault(self, method: str, path: str) -> int | None:
        with self._lock:
            if self._trip is not None and self._trip[0](method, path):
                self.rate, self._trip = self._trip[1], None
            doomed = self.rate > 0 and self.doomed is not None and self.doomed(method, path)
            if not doomed and self._random.random() >= self.rate:
                self.counts["forwarded"] += 1
                return None
            status = self._random.choice(sorted(FAULTS))
            self.counts[FAULTS[status][0]] += 1
            return status

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = _read_body(handler)
        status = self._fault(handler.command, handler.path)
        if status is not None:
            code, message = FAULTS[status]
            reply = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}'
                     f"</Message><RequestId>proxy</RequestId></Error>").encode()
            _reply(handler, status, [("Content-Type", "application/xml")], reply)
            return
        upstream = http.client.HTTPConnection(*self.upstream, timeout=120)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            upstream.request(handler.command, handler.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            length = response.getheader("Content-Length") if handler.command == "HEAD" else None
            _reply(handler, response.status, kept, data, length=length)
        finally:
            upstream.close()


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def _reply(handler: BaseHTTPRequestHandler, status: int, headers: list[tuple[str, str]], body: bytes,
           *, length: str | None = None) -> None:
    handler.send_response(status)
    for key, value in headers:
        handler.send_header(key, value)
    handler.send_header("Content-Length", length if length is not None else str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)
