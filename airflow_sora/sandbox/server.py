"""A real HTTP server emulating both APIs per the specs, quirks and fault switches included.

Kie.ai and SaveSora share one port (their paths do not collide), with result files under ``/files/`` and an
admin API under ``/_sandbox/`` (charges, faults, accounts) for tests in other processes. This module holds
the plumbing only: the server, the routing table, the request/response helpers and the request faults every
API endpoint shares. Each emulated API reads on its own in ``kie_api``, ``savesora_api``, ``files`` and
``admin``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

from airflow_sora.sandbox import admin, files, kie_api, savesora_api
from airflow_sora.sandbox.faults import Faults
from airflow_sora.sandbox.state import Account, SandboxConfig, SandboxState

log = logging.getLogger(__name__)

# An endpoint's answer: (200, data), or (error code, message) / (error code, (message, data)).
Reply = tuple[int, Any]
Endpoint = Callable[["SandboxHandler", Any], "Reply | None"]


class _Api(NamedTuple):
    """What differs between the two APIs' envelopes."""

    server_error: int  # the code the server_error fault answers with
    http_status: Callable[[int], int]  # the HTTP status of an error code under error_style "status"


_KIE = _Api(kie_api.SERVER_ERROR, kie_api.http_status)
_SAVESORA = _Api(savesora_api.SERVER_ERROR, savesora_api.http_status)
# (method, path) -> the API, the endpoint name (as fault scopes and request counts know it), the endpoint
_ROUTES: dict[tuple[str, str], tuple[_Api, str, Endpoint]] = {
    ("POST", "/api/v1/jobs/createTask"): (_KIE, "createTask", kie_api.create_task),
    ("GET", "/api/v1/jobs/recordInfo"): (_KIE, "recordInfo", kie_api.record_info),
    ("POST", "/api/v1/common/download-url"): (_KIE, "download-url", kie_api.download_url),
    ("GET", "/api/v1/chat/credit"): (_KIE, "credit", kie_api.credit),
    ("POST", "/api/v1/download"): (_SAVESORA, "download", savesora_api.download),
    ("POST", "/api/v1/credits"): (_SAVESORA, "credits", savesora_api.credits),
}
_REQUEST_FAULTS = ("connection_reset", "rate_limit", "maintenance", "server_error", "non_json", "slow_reply",
                   "lost_reply")
_CLOUDFLARE_PAGE = b"<!DOCTYPE html><html><head><title>502 Bad gateway</title></head><body>cloudflare</body></html>"


class _Dropped(Exception):
    """Raised to end a request without any reply (a fault)."""


class SandboxHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # A reply's headers and body go out in two writes: with Nagle's algorithm on, the body waits for the
    # client's delayed ACK of the headers (40 ms on Linux) on every kept-alive connection, a stall no real
    # service adds. Real servers (nginx, Cloudflare) send with TCP_NODELAY too.
    disable_nagle_algorithm = True
    server: SandboxHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("sandbox: " + format, *args)  # the request line only: never headers or bodies

    @property
    def state(self) -> SandboxState:
        return self.server.state

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        try:
            if path.startswith("/files/"):
                files.serve_file(self, path)
            elif path.startswith("/_sandbox/"):
                admin.handle(self, method, path[len("/_sandbox/"):])
            elif (method, path) in _ROUTES:
                self._api(*_ROUTES[(method, path)])
            else:
                self.send_json(404, {"code": 404, "msg": "Not Found", "data": None})
        except (_Dropped, BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # request and response helpers -------------------------------------------------------------------
    def query_param(self, name: str, default: str = "") -> str:
        return (parse_qs(urlsplit(self.path).query).get(name) or [default])[0]

    def json_body(self) -> Any:
        """The request body as JSON; None when absent or not JSON."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads((self.rfile.read(length) if length else b"") or b"null")
        except ValueError:
            return None

    def send_bytes(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
                   ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.send_bytes(status, json.dumps(payload).encode(), "application/json", headers)

    def reset_connection(self) -> None:
        """Close with RST, as a dying load balancer would, and end the request."""
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raise _Dropped()

    # the API envelope and the request faults ----------------------------------------------------------
    def _api(self, api: _Api, endpoint: str, handle: Endpoint) -> None:
        self.state.count_request(endpoint)
        body = self.json_body() if self.command == "POST" else None
        faults = self.state.faults
        fault = self._pick_fault(faults) if faults.applies_to(endpoint) else None
        if fault == "connection_reset":
            self.reset_connection()
        if fault == "rate_limit":
            return self._error(api, 429, "Too many requests")
        if fault == "maintenance":
            return self._error(api, 455, "Service under maintenance")
        if fault == "server_error":
            return self._error(api, api.server_error, "internal server error")
        if fault == "non_json":
            return self.send_bytes(faults.non_json_status, _CLOUDFLARE_PAGE, "text/html")
        if fault == "slow_reply":
            time.sleep(faults.slow_seconds)
        reply = handle(self, body)
        if reply is None:
            return None
        if fault == "lost_reply":
            self.reset_connection()
        code, data = reply
        if code == 200:
            return self.send_json(200, {"code": 200, "msg": "success", "data": data})
        return self._error(api, code, data)

    def _pick_fault(self, faults: Faults) -> str | None:
        """At most one fault per request, so counted faults are consumed one request at a time."""
        with self.state.lock:
            for name in _REQUEST_FAULTS:
                if getattr(faults, name).fire(self.state.rng):
                    return name
        return None

    def _error(self, api: _Api, code: int, msg: Any) -> None:
        headers: dict[str, str] = {}
        retry_after = self.state.faults.retry_after
        if code == 429 and retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
        data = None
        if isinstance(msg, tuple):  # (message, data)
            msg, data = msg
        status = api.http_status(code) if self.state.faults.error_style == "status" else 200
        self.send_json(status, {"code": code, "msg": msg, "data": data}, headers)


class SandboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], state: SandboxState) -> None:
        super().__init__(address, SandboxHandler)
        self.state = state

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def netloc(self) -> str:
        return urlsplit(self.base_url).netloc

    def file_url(self, path: str, ttl: float, *, issue: bool = False) -> str:
        """A signed, expiring link to ``path`` on this server (see ``files.signed_url``)."""
        return files.signed_url(self.state, self.base_url, path, ttl, issue=issue)


class SandboxServer:
    """Run the sandbox in a background thread: ``with SandboxServer() as sandbox: sandbox.url``."""

    def __init__(self, config: SandboxConfig | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 faults: Faults | None = None, accounts: dict[str, float] | None = None) -> None:
        self.state = SandboxState(config or SandboxConfig(), faults)
        for key, credits in (accounts or {}).items():
            self.state.add_account(key, credits)
        self._httpd = SandboxHTTPServer((host, port), self.state)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self._httpd.base_url

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> SandboxServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="sora-sandbox",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # conveniences for tests ---------------------------------------------------------------------------
    def add_account(self, api_key: str, credits: float = 1000.0, name: str | None = None) -> Account:
        return self.state.add_account(api_key, credits, name)

    def set_faults(self, **changes: Any) -> Faults:
        return self.state.update_faults(changes)

    def summary(self) -> dict[str, Any]:
        return self.state.summary()

    def charges(self) -> list[dict[str, Any]]:
        return self.state.charge_log()
