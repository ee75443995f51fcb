"""The receiver: ``POST <api base>/sora/kie/callback?<names>&k=<token>``, reachable without an Airflow login.

Every request authenticates itself, cheapest check first: the body's size, the URL's token (an HMAC of what
it names), strict JSON, Kie's webhook signature when the connection has a webhook key, then the run's own
state record must name the task. A verified callback is recorded in the run's inbox (``inbox``), never acted
on: the waiting side confirms it with one status call before anything lands. Answers: 200 for a callback
recorded, duplicated, late or about a task the run does not know (Kie retries anything else); 400/413 for a
body that is not a callback; 401 for a missing, stale or wrong signature; 403 for a URL that is not ours or a
task of another run or folder; 503 only when the store could not be read or written in time. Logs name the
task and the outcome, never a token, key or body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from airflow_sora.plugins.inbox import CallbackInbox, state_store, valid_task_id
from airflow_sora.plugins.settings import CallbackSettings, load_settings
from airflow_sora.plugins.signature import signature_problem
from airflow_sora.plugins.tokens import CallbackScope, token_valid
from airflow_sora.services.urls import is_valid_video_url, post_id_from_url
from airflow_sora.storage import read_bytes_or_none

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024  # a record is a few hundred bytes
ANSWER_WITHIN = 0.9  # seconds: Kie waits about 15 s, the issue asks for an answer within one


@dataclass(frozen=True)
class Answer:
    status: int
    outcome: str  # short and safe to log: recorded, duplicate, late, unknown, or why it was refused

    def body(self) -> dict[str, Any]:
        return {"code": self.status, "msg": self.outcome}


@dataclass(frozen=True)
class Callback:
    task_id: str
    code: int | None
    state: str | None
    video_url: str | None


class BadBody(ValueError):
    """The body is not a Kie callback."""


def _no_constants(name: str) -> Any:
    raise BadBody(f"not JSON: {name}")


def parse_callback(body: bytes) -> Callback:
    """Strict: a JSON object (no NaN, no duplicate keys), ``data`` an object with a well-formed task id."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in items]
        if len(keys) != len(set(keys)):
            raise BadBody("duplicate key")
        return dict(items)

    try:
        payload = json.loads(body.decode("utf-8"), parse_constant=_no_constants, object_pairs_hook=pairs)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise BadBody("not JSON") from error
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict):
        raise BadBody("no data object")
    data = payload["data"]
    task_id = data.get("taskId", data.get("task_id"))
    if not valid_task_id(task_id):
        raise BadBody("no task id")
    code = payload.get("code")
    state = data.get("state")
    return Callback(task_id=str(task_id), code=code if isinstance(code, int) and not isinstance(code, bool) else None,
                    state=state if isinstance(state, str) and len(state) <= 32 else None,
                    video_url=_video_url(data.get("param")))


def _video_url(param: Any) -> str | None:
    if isinstance(param, str):
        try:
            param = json.loads(param)
        except ValueError:
            return None
    inputs = param.get("input") if isinstance(param, dict) else None
    url = inputs.get("video_url") if isinstance(inputs, dict) else None
    return url if is_valid_video_url(url) else None


class CallbackHandler:
    """The receiver's decision, free of HTTP: the FastAPI route and the tests call ``handle``."""

    def __init__(self, settings_for: Callable[[str], CallbackSettings] = load_settings, *,
                 clock: Callable[[], float] = time.time, max_body: int = MAX_BODY) -> None:
        self.settings_for = settings_for
        self.clock = clock
        self.max_body = max_body

    def handle(self, query: Mapping[str, str], headers: Mapping[str, str], body: bytes) -> Answer:
        if len(body) > self.max_body:
            return Answer(413, "body too large")
        scope, token = CallbackScope.from_query(query), query.get("k") or ""
        settings = self._settings(scope.conn_id) if scope is not None else None
        if scope is None or settings is None or not settings.callback_secret or not token_valid(
                settings.callback_secret, scope, token):
            return Answer(403, "not a callback URL of this deployment")
        try:
            callback = parse_callback(body)
        except BadBody as error:
            return Answer(400, f"malformed callback: {error}")
        if settings.webhook_secret:
            problem = signature_problem(settings.webhook_secret, callback.task_id,
                                        headers.get("x-webhook-timestamp"), headers.get("x-webhook-signature"),
                                        now=self.clock(), window=settings.replay_window)
            if problem:
                return Answer(401, f"signature refused: {problem}")
        return self._record(scope, callback)

    def _settings(self, conn_id: str) -> CallbackSettings | None:
        try:
            return self.settings_for(conn_id)
        except Exception:  # an unknown or unreadable connection: the URL is not ours
            return None

    def _record(self, scope: CallbackScope, callback: Callback) -> Answer:
        """Only a task this run's state names gets into its inbox; everything else changes nothing."""
        if callback.video_url is None:
            return Answer(200, "unknown task: ignored")
        store = state_store(scope)
        raw = read_bytes_or_none(store.path_for(post_id_from_url(callback.video_url)))
        record = _json_object(raw)
        if record is None or not record.get("task_id"):
            return Answer(200, "unknown task: ignored")
        if record["task_id"] != callback.task_id:
            return Answer(403, "task of another run or folder")
        if record.get("phase") != "submitted":
            return Answer(200, "late: the run already knows the result")
        new = CallbackInbox.for_state(store).record(callback.task_id, code=callback.code, state=callback.state)
        return Answer(200, "recorded" if new else "duplicate: ignored")


def _json_object(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def create_app(handler: CallbackHandler | None = None) -> FastAPI:
    """The FastAPI app the plugin mounts at ``/sora`` (its own docs pages off: nothing to browse)."""
    handler = handler or CallbackHandler()
    app = FastAPI(title="Sora Kie callbacks", docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/kie/callback")
    async def kie_callback(request: Request) -> JSONResponse:
        answer = await _answer(handler, request)
        log.info("Kie callback for %s: %s (%d)", _task_hint(request), answer.outcome, answer.status)
        return JSONResponse(answer.body(), status_code=answer.status)

    return app


async def _answer(handler: CallbackHandler, request: Request) -> Answer:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > handler.max_body):
        return Answer(413, "body too large")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > handler.max_body:
            return Answer(413, "body too large")
    request.state.sora_body = body
    query = {k: v for k, v in request.query_params.items()}
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        return await asyncio.wait_for(asyncio.to_thread(handler.handle, query, headers, body), ANSWER_WITHIN)
    except asyncio.TimeoutError:
        return Answer(503, "the run's state did not answer in time (the record may still land); polling covers it")
    except Exception as error:  # the store failed: not the sender's fault, and polling covers it
        return Answer(503, f"the run's state could not be read or written ({type(error).__name__})")


def _task_hint(request: Request) -> str:
    """The task id for the log line, only when it is well formed (never the body, never the URL's token)."""
    try:
        data = json.loads(getattr(request.state, "sora_body", b"") or b"{}").get("data") or {}
        task_id = data.get("taskId", data.get("task_id"))
    except (ValueError, AttributeError):
        return "an unreadable body"
    return str(task_id) if valid_task_id(task_id) else "no task id"
