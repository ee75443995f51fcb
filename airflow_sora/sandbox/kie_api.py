"""The emulated Kie.ai API: create task, record-info, download-url, credit, and the callbacks a task sends.

Endpoints take the request and its JSON body and return ``(code, data)``; the server wraps that in the
envelope and applies the request faults all endpoints share (see ``server``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from airflow_sora.sandbox.state import KIE_PRICE, SORA_URL, Account, KieTask

if TYPE_CHECKING:
    from airflow_sora.sandbox.server import Reply, SandboxHandler, SandboxHTTPServer

SERVER_ERROR = 500  # the code the server_error fault answers with
_NO_ACCESS = "You do not have access permissions"


def http_status(code: int) -> int:
    """Kie's error codes are HTTP statuses already (sent as such under error_style "status")."""
    return code


def _account(request: SandboxHandler) -> Account | None:
    auth = request.headers.get("Authorization") or ""
    return request.state.account(auth[7:].strip()) if auth.startswith("Bearer ") else None


def create_task(request: SandboxHandler, body: Any) -> Reply | None:
    account = _account(request)
    if account is None:
        return 401, _NO_ACCESS
    if not isinstance(body, dict):
        return 400, "Invalid request body"
    if body.get("model") != "sora-watermark-remover":
        return 422, "model is not supported"
    inputs: dict[str, Any] = body["input"] if isinstance(body.get("input"), dict) else {}
    video_url = inputs.get("video_url")
    if not video_url:
        return 422, "input.video_url is required"
    if not isinstance(video_url, str) or len(video_url) > 500 or not SORA_URL.fullmatch(video_url):
        return 422, "input.video_url must be a public sora.chatgpt.com link"
    if video_url in request.state.faults.reject_video_urls:  # e.g. a private post: well-formed, refused
        return 422, "input.video_url must be a public sora.chatgpt.com link"
    if inputs.get("upload_method", "s3") not in ("s3", "oss"):
        return 422, "input.upload_method must be s3 or oss"
    state = request.state
    with state.lock:
        if not state.create_allowed(account, time.time()):
            return 429, "Rate limit exceeded: at most 20 new tasks per 10 seconds"
        if account.credits < KIE_PRICE:
            return 402, "Insufficient credits"
        task = state.create_task(account, video_url, body, body.get("callBackUrl"))
    if task.callback_url:
        schedule_callback(request.server, task)
    return 200, {"taskId": task.task_id}


def record_info(request: SandboxHandler, body: Any) -> Reply | None:
    account = _account(request)
    if account is None:
        return 401, _NO_ACCESS
    task_id = request.query_param("taskId")
    if not task_id:
        return 400, "taskId is required"
    state = request.state
    with state.lock:
        state.polls_by_task[task_id] += 1
    task = state.tasks.get(task_id)
    if task is None or task.account != account.name:
        return 404, "Task not found"
    phase = task.phase(time.time(), state.config.invisible_for)
    if phase == "invisible":
        return 422, "recordInfo is null"
    if phase in ("success", "fail"):
        with state.lock:
            task.seen_done = task.seen_done or time.time()
    return 200, record(request.server, task, phase)


def download_url(request: SandboxHandler, body: Any) -> Reply | None:
    if _account(request) is None:
        return 401, _NO_ACCESS
    url = body.get("url") if isinstance(body, dict) else None
    if not isinstance(url, str):
        return 400, "url is required"
    parts = urlsplit(url)
    if parts.netloc != request.server.netloc or not parts.path.startswith("/files/"):
        return 422, "Only Kie result URLs can be refreshed"
    return 200, request.server.file_url(parts.path, request.state.config.refreshed_link_ttl)


def credit(request: SandboxHandler, body: Any) -> Reply | None:
    account = _account(request)
    if account is None:
        return 401, _NO_ACCESS
    return 200, account.credits


def record(server: SandboxHTTPServer, task: KieTask, phase: str) -> dict[str, Any]:
    """A task as recordInfo and the callbacks show it."""
    done = phase in ("success", "fail")
    result = None
    if phase == "success":
        url = server.file_url(f"/files/{task.task_id}/clean.mp4", server.state.config.link_ttl, issue=True)
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


def schedule_callback(server: SandboxHTTPServer, task: KieTask) -> None:
    timer = threading.Timer(task.latency + 0.05, _send_callbacks, args=(server, task))
    timer.daemon = True
    timer.start()


def _send_callbacks(server: SandboxHTTPServer, task: KieTask) -> None:
    """Like Kie: one callback once the task ends (none under ``callback_drop``, two under
    ``callback_duplicate``), each retried with back-off while the receiver answers no 2xx or nothing."""
    state = server.state
    with state.lock:
        if state.faults.callback_drop.fire(state.rng):
            state.callbacks_sent.append({"task_id": task.task_id, "outcome": "dropped"})
            return
        copies = 2 if state.faults.callback_duplicate.fire(state.rng) else 1
        unsigned = state.faults.callback_unsigned.fire(state.rng)
    for _ in range(copies):
        _deliver(server, task, signed=not unsigned)


def callback_request(server: SandboxHTTPServer, task: KieTask, *, signed: bool = True,
                     now: float | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """The body and headers of a task's callback, as Kie sends them (signed when a webhook key is set)."""
    state = server.state
    phase = task.phase(time.time(), state.config.invisible_for)
    success = phase == "success"
    payload = {"code": 200 if success else 501,
               "msg": "Playground task completed successfully." if success else "Playground task failed.",
               "data": record(server, task, phase)}
    headers = {"Content-Type": "application/json"}
    key = state.config.webhook_key
    if key and signed:
        timestamp = str(int(time.time() if now is None else now))
        digest = hmac.new(key.encode(), f"{task.task_id}.{timestamp}".encode(), hashlib.sha256).digest()
        headers["X-Webhook-Timestamp"] = timestamp
        headers["X-Webhook-Signature"] = base64.b64encode(digest).decode()
    return payload, headers


def _deliver(server: SandboxHTTPServer, task: KieTask, *, signed: bool) -> None:
    """POST one callback, retried; every attempt's outcome is logged in ``callbacks_sent``."""
    state = server.state
    delay = state.config.callback_retry_delay
    for attempt in range(1 + max(0, state.config.callback_retries)):
        if attempt:
            time.sleep(delay)
            delay *= 2
        payload, headers = callback_request(server, task, signed=signed)
        try:
            response = httpx.post(task.callback_url or "", json=payload, headers=headers, timeout=15.0)
            outcome: Any = response.status_code
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
        with state.lock:
            task.callback_sent = True
            state.callbacks_sent.append({"task_id": task.task_id, "outcome": outcome, "attempt": attempt + 1})
        if isinstance(outcome, int) and 200 <= outcome < 300:
            return
