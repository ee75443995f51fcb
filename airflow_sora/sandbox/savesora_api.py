"""The emulated SaveSora API: download (charge, then a clean video or a refund) and credits.

Errors carry SaveSora's own 4xxx/5xxx codes; ``http_status`` maps them to the HTTP status sent under
error_style "status". The server wraps replies in the envelope and applies the shared request faults.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from airflow_sora.sandbox.state import SAVESORA_PRICE, SORA_URL, Account, SandboxState

if TYPE_CHECKING:
    from airflow_sora.sandbox.server import Reply, SandboxHandler

SERVER_ERROR = 5001  # the code the server_error fault answers with
_HTTP_STATUS = {4001: 401, 4002: 400, 4003: 401, 4004: 401, 4005: 403, 4006: 400, 4007: 402,
                5001: 500, 5002: 500}


def http_status(code: int) -> int:
    return _HTTP_STATUS.get(code, code if code < 600 else 500)


def _account(state: SandboxState, body: Any) -> tuple[Account | None, Reply | None]:
    """The account of the body's api_key, or the error SaveSora answers instead."""
    key = body.get("api_key") if isinstance(body, dict) else None
    if not key:
        return None, (4001, "api_key is required")
    account = state.account(key)
    if account is None:
        return None, (4003, "invalid api_key")
    if account.banned:
        return None, (4005, "user account is banned")
    return account, None


def download(request: SandboxHandler, body: Any) -> Reply | None:
    state = request.state
    account, error = _account(state, body)
    if error or account is None:
        return error
    video_url = body.get("video_url")
    if not video_url:
        return 4002, "video_url is required"
    match = SORA_URL.fullmatch(video_url) if isinstance(video_url, str) else None
    if match is None or video_url in state.faults.reject_video_urls:
        return 4006, "invalid video url"
    with state.lock:
        if account.credits < SAVESORA_PRICE:
            return 4007, ("insufficient credits", {"current_credits": account.credits,
                                                   "required_credits": SAVESORA_PRICE})
        charge = state.charge(account, "savesora", video_url, SAVESORA_PRICE)
        fails = video_url in state.faults.fail_video_urls or state.faults.task_fail.fire(state.rng)
    time.sleep(state.config.savesora_latency)
    if fails:
        state.refund(account, charge)
        return 5002, "watermark removal failed"
    post_id = match.group(1)
    ttl = state.config.link_ttl
    file_url = request.server.file_url
    return 200, {
        "post_id": post_id,
        "prompt": f"Sandbox video {post_id}: a calm sea at dawn",
        "thumbnail": file_url(f"/files/{post_id}/thumb.jpg", ttl),
        "download_links": {
            "mp4": file_url(f"/files/{post_id}/clean.mp4", ttl, issue=True),
            "mp4_source": file_url(f"/files/{post_id}/source.mp4", ttl, issue=True),
        },
        "credits_used": SAVESORA_PRICE,
        "remaining_credits": account.credits,
    }


def credits(request: SandboxHandler, body: Any) -> Reply | None:
    account, error = _account(request.state, body)
    if error or account is None:
        return error
    return 200, {"paid_credits": account.credits, "onetime_credits": 0, "total_credits": account.credits}
