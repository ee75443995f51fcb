"""A real HTTP server emulating both APIs per the specs, quirks and fault switches included.

Kie.ai and SaveSora share one port (their paths do not collide), with result files under ``/files/`` and an
admin API under ``/_sandbox/`` (charges, faults, accounts) for tests in other processes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import re
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from airflow_sora.sandbox.faults import Faults
from airflow_sora.sandbox.media import iter_mp4
from airflow_sora.sandbox.state import KIE_PRICE, SAVESORA_PRICE, Account, KieTask, SandboxConfig, SandboxState

log = logging.getLogger(__name__)

_SORA_URL = re.compile(r"https://sora\.chatgpt\.com/p/(s_[0-9a-f]{32})(?:[?#].*)?")
_SAVESORA_STATUS = {4001: 401, 4002: 400, 4003: 401, 4004: 401, 4005: 403, 4006: 400, 4007: 402,
                    5001: 500, 5002: 500}
_KIE_ROUTES = {
    ("POST", "/api/v1/jobs/createTask"): "createTask",
    ("GET", "/api/v1/jobs/recordInfo"): "recordInfo",
    ("POST", "/api/v1/common/download-url"): "download-url",
    ("GET", "/api/v1/chat/credit"): "credit",
}
_SAVESORA_ROUTES = {("POST", "/api/v1/download"): "download", ("POST", "/api/v1/credits"): "credits"}
_REQUEST_FAULTS = ("connection_reset", "rate_limit", "maintenance", "server_error", "non_json", "slow_reply",
                   "lost_reply")
_CLOUDFLARE_PAGE = b"<!DOCTYPE html><html><head><title>502 Bad gateway</title></head><body>cloudflare</body></html>"


class _Dropped(Exception):
    """Raised to end a request without any reply (a fault)."""


class SandboxHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: SandboxHTTPServer

    # plumbing -------------------------------------------------------------------------------------
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
                self._serve_file(path)
            elif path.startswith("/_sandbox/"):
                self._admin(method, path)
            elif (method, path) in _KIE_ROUTES:
                self._api("kie", _KIE_ROUTES[(method, path)])
            elif (method, path) in _SAVESORA_ROUTES:
                self._api("savesora", _SAVESORA_ROUTES[(method, path)])
            else:
                self._send_json(404, {"code": 404, "msg": "Not Found", "data": None})
        except _Dropped:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json_body(self) -> Any:
        try:
            return json.loads(self._body() or b"null")
        except ValueError:
            return None

    def _send_bytes(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
                    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), "application/json", headers)

    def _reset_connection(self) -> None:
        """Close with RST, as a dying load balancer would."""
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raise _Dropped()

    # API ----------------------------------------------------------------------------------------------
    def _api(self, service: str, endpoint: str) -> None:
        self.state.count_request(endpoint)
        body = self._json_body() if self.command == "POST" else None
        faults = self.state.faults
        fault = self._pick_fault(faults) if faults.applies_to(endpoint) else None
        if fault == "connection_reset":
            self._reset_connection()
        if fault == "rate_limit":
            return self._error(service, 429, "Too many requests")
        if fault == "maintenance":
            return self._error(service, 455, "Service under maintenance")
        if fault == "server_error":
            return self._error(service, 500 if service == "kie" else 5001, "internal server error")
        if fault == "non_json":
            return self._send_bytes(faults.non_json_status, _CLOUDFLARE_PAGE, "text/html")
        if fault == "slow_reply":
            time.sleep(faults.slow_seconds)
        handler = getattr(self, f"_{service}_{endpoint.replace('-', '_')}")
        reply: tuple[int, Any] | None = handler(body)
        if reply is None:
            return None
        if fault == "lost_reply":
            self._reset_connection()
        code, data = reply
        return self._ok(data) if code == 200 else self._error(service, code, data)

    def _pick_fault(self, faults: Faults) -> str | None:
        """At most one fault per request, so counted faults are consumed one request at a time."""
        with self.state.lock:
            for name in _REQUEST_FAULTS:
                if getattr(faults, name).fire(self.state.rng):
                    return name
        return None

    def _ok(self, data: Any, msg: str = "success") -> None:
        self._send_json(200, {"code": 200, "msg": msg, "data": data})

    def _error(self, service: str, code: int, msg: Any, data: Any = None) -> None:
        headers: dict[str, str] = {}
        retry_after = self.state.faults.retry_after
        if code == 429 and retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
        if isinstance(msg, tuple):  # (message, data)
            msg, data = msg
        status = 200
        if self.state.faults.error_style == "status":
            status = code if service == "kie" else _SAVESORA_STATUS.get(code, code if code < 600 else 500)
        self._send_json(status, {"code": code, "msg": msg, "data": data}, headers)

    def _kie_account(self) -> Account | None:
        auth = self.headers.get("Authorization") or ""
        return self.state.account(auth[7:].strip()) if auth.startswith("Bearer ") else None

    def _kie_createTask(self, body: Any) -> tuple[int, Any] | None:
        account = self._kie_account()
        if account is None:
            return 401, "You do not have access permissions"
        if not isinstance(body, dict):
            return 400, "Invalid request body"
        if body.get("model") != "sora-watermark-remover":
            return 422, "model is not supported"
        inputs: dict[str, Any] = body["input"] if isinstance(body.get("input"), dict) else {}
        video_url = inputs.get("video_url")
        if not video_url:
            return 422, "input.video_url is required"
        if not isinstance(video_url, str) or len(video_url) > 500 or not _SORA_URL.fullmatch(video_url):
            return 422, "input.video_url must be a public sora.chatgpt.com link"
        if inputs.get("upload_method", "s3") not in ("s3", "oss"):
            return 422, "input.upload_method must be s3 or oss"
        with self.state.lock:
            if not self.state.create_allowed(account, time.time()):
                return 429, "Rate limit exceeded: at most 20 new tasks per 10 seconds"
            if account.credits < KIE_PRICE:
                return 402, "Insufficient credits"
            task = self.state.create_task(account, video_url, body, body.get("callBackUrl"))
        if task.callback_url:
            self.server.schedule_callback(task)
        return 200, {"taskId": task.task_id}

    def _kie_recordInfo(self, body: Any) -> tuple[int, Any] | None:
        account = self._kie_account()
        if account is None:
            return 401, "You do not have access permissions"
        task_id = (parse_qs(urlsplit(self.path).query).get("taskId") or [""])[0]
        if not task_id:
            return 400, "taskId is required"
        with self.state.lock:
            self.state.polls_by_task[task_id] += 1
        task = self.state.tasks.get(task_id)
        if task is None or task.account != account.name:
            return 404, "Task not found"
        phase = task.phase(time.time(), self.state.config.invisible_for)
        if phase == "invisible":
            return 422, "recordInfo is null"
        return 200, self.server.record(task, phase)

    def _kie_download_url(self, body: Any) -> tuple[int, Any] | None:
        if self._kie_account() is None:
            return 401, "You do not have access permissions"
        url = body.get("url") if isinstance(body, dict) else None
        if not isinstance(url, str):
            return 400, "url is required"
        parts = urlsplit(url)
        if parts.netloc != self.server.netloc or not parts.path.startswith("/files/"):
            return 422, "Only Kie result URLs can be refreshed"
        return 200, self.server.file_url(parts.path, self.state.config.refreshed_link_ttl)

    def _kie_credit(self, body: Any) -> tuple[int, Any] | None:
        account = self._kie_account()
        if account is None:
            return 401, "You do not have access permissions"
        return 200, account.credits

    def _savesora_account(self, body: Any) -> tuple[Account | None, tuple[int, Any] | None]:
        key = body.get("api_key") if isinstance(body, dict) else None
        if not key:
            return None, (4001, "api_key is required")
        account = self.state.account(key)
        if account is None:
            return None, (4003, "invalid api_key")
        if account.banned:
            return None, (4005, "user account is banned")
        return account, None

    def _savesora_download(self, body: Any) -> tuple[int, Any] | None:
        account, error = self._savesora_account(body)
        if error or account is None:
            return error
        video_url = body.get("video_url")
        if not video_url:
            return 4002, "video_url is required"
        match = _SORA_URL.fullmatch(video_url) if isinstance(video_url, str) else None
        if match is None:
            return 4006, "invalid video url"
        with self.state.lock:
            if account.credits < SAVESORA_PRICE:
                return 4007, ("insufficient credits", {"current_credits": account.credits,
                                                       "required_credits": SAVESORA_PRICE})
            charge = self.state.charge(account, "savesora", video_url, SAVESORA_PRICE)
            fails = (video_url in self.state.faults.fail_video_urls
                     or self.state.faults.task_fail.fire(self.state.rng))
        time.sleep(self.state.config.savesora_latency)
        if fails:
            self.state.refund(account, charge)
            return 5002, "watermark removal failed"
        post_id = match.group(1)
        ttl = self.state.config.link_ttl
        return 200, {
            "post_id": post_id,
            "prompt": f"Sandbox video {post_id}: a calm sea at dawn",
            "thumbnail": self.server.file_url(f"/files/{post_id}/thumb.jpg", ttl),
            "download_links": {
                "mp4": self.server.file_url(f"/files/{post_id}/clean.mp4", ttl, issue=True),
                "mp4_source": self.server.file_url(f"/files/{post_id}/source.mp4", ttl, issue=True),
            },
            "credits_used": SAVESORA_PRICE,
            "remaining_credits": account.credits,
        }

    def _savesora_credits(self, body: Any) -> tuple[int, Any] | None:
        account, error = self._savesora_account(body)
        if error or account is None:
            return error
        return 200, {"paid_credits": account.credits, "onetime_credits": 0, "total_credits": account.credits}

    # files --------------------------------------------------------------------------------------------
    def _serve_file(self, path: str) -> None:
        self.state.count_request("files")
        query = parse_qs(urlsplit(self.path).query)
        try:
            expires = int((query.get("expires") or ["0"])[0])
        except ValueError:
            expires = 0
        if not self.state.link_valid(path, expires, (query.get("sig") or [""])[0]):
            body = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
            return self._send_bytes(403, body, "application/xml")
        size = self.state.config.result_size
        with self.state.lock:
            truncate = self.state.faults.truncate_download.fire(self.state.rng)
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        sent, limit = 0, size // 2 if truncate else size
        for chunk in iter_mp4(path, size):
            if sent + len(chunk) > limit:
                self.wfile.write(chunk[: limit - sent])
                self.wfile.flush()
                self._reset_connection()
            self.wfile.write(chunk)
            sent += len(chunk)
        return None

    def _serve_synthetic(self, size: int) -> None:
        """``/_sandbox/synthetic/<bytes>.mp4``: an MP4 of exactly that size, streamed, for benchmarks."""
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        for chunk in iter_mp4(f"synthetic-{size}", size):
            self.wfile.write(chunk)

    # admin --------------------------------------------------------------------------------------------
    def _admin(self, method: str, path: str) -> None:
        name = path[len("/_sandbox/"):]
        state = self.state
        if method == "GET" and name == "charges":
            return self._send_json(200, state.charge_log())
        if method == "GET" and name == "summary":
            return self._send_json(200, state.summary())
        if method == "GET" and name == "faults":
            return self._send_json(200, state.faults.model_dump())
        if method == "POST" and name == "faults":
            body = self._json_body() or {}
            with state.lock:
                state.faults = Faults.model_validate({**state.faults.model_dump(), **body})
            return self._send_json(200, state.faults.model_dump())
        if method == "POST" and name == "config":
            body = self._json_body() or {}
            with state.lock:
                for key, value in body.items():
                    if not hasattr(state.config, key):
                        return self._send_json(400, {"error": f"unknown setting {key}"})
                    setattr(state.config, key, type(getattr(state.config, key) or value)(value))
            return self._send_json(200, {"ok": True})
        if method == "POST" and name == "accounts":
            body = self._json_body() or {}
            account = state.add_account(body["api_key"], float(body.get("credits", 0)), body.get("name"))
            return self._send_json(200, {"name": account.name, "credits": account.credits})
        if method == "POST" and name == "reset":
            state.reset()
            return self._send_json(200, {"reset": True})
        if method == "GET" and name.startswith("synthetic/") and name.endswith(".mp4"):
            return self._serve_synthetic(int(name[len("synthetic/"):-len(".mp4")]))
        if method == "GET" and name == "health":
            return self._send_json(200, {"ok": True})
        return self._send_json(404, {"error": f"unknown admin call {method} {name}"})


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
        """A signed, expiring link; with ``issue`` the expire_links fault may hand out a dead one."""
        expired = issue and self.state.faults.expire_links.fire(self.state.rng)
        expires = int(time.time() - 60 if expired else time.time() + ttl)
        return f"{self.base_url}{path}?expires={expires}&sig={self.state.sign(path, expires)}"

    def record(self, task: KieTask, phase: str) -> dict[str, Any]:
        done = phase in ("success", "fail")
        result = None
        if phase == "success":
            url = self.file_url(f"/files/{task.task_id}/clean.mp4", self.state.config.link_ttl, issue=True)
            result = json.dumps({"resultUrls": [url]})
        complete_ms = int((task.created + task.latency) * 1000)
        return {
            "taskId": task.task_id,
            "model": "sora-watermark-remover",
            "state": phase,
            "param": json.dumps(task.body),
            "resultJson": result,
            "failCode": "500" if phase == "fail" else ("" if done else None),
            "failMsg": "Internal server error" if phase == "fail" else ("" if done else None),
            "costTime": int(task.latency * 1000) if done else None,
            "createTime": int(task.created * 1000),
            "updateTime": complete_ms if done else int(time.time() * 1000),
            "completeTime": complete_ms if done else None,
        }

    def schedule_callback(self, task: KieTask) -> None:
        timer = threading.Timer(task.latency + 0.05, self._send_callback, args=(task,))
        timer.daemon = True
        timer.start()

    def _send_callback(self, task: KieTask) -> None:
        phase = task.phase(time.time(), self.state.config.invisible_for)
        success = phase == "success"
        payload = {"code": 200 if success else 501,
                   "msg": "Playground task completed successfully." if success else "Playground task failed.",
                   "data": self.record(task, phase)}
        headers = {"Content-Type": "application/json"}
        key = self.state.config.webhook_key
        if key:
            timestamp = str(int(time.time()))
            digest = hmac.new(key.encode(), f"{task.task_id}.{timestamp}".encode(), hashlib.sha256).digest()
            headers["X-Webhook-Timestamp"] = timestamp
            headers["X-Webhook-Signature"] = base64.b64encode(digest).decode()
        try:
            response = httpx.post(task.callback_url or "", json=payload, headers=headers, timeout=15.0)
            outcome: Any = response.status_code
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
        with self.state.lock:
            task.callback_sent = True
            self.state.callbacks_sent.append({"task_id": task.task_id, "outcome": outcome})


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
        with self.state.lock:
            self.state.faults = Faults.model_validate({**self.state.faults.model_dump(), **changes})
            return self.state.faults

    def summary(self) -> dict[str, Any]:
        return self.state.summary()

    def charges(self) -> list[dict[str, Any]]:
        return self.state.charge_log()
