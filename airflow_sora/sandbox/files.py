"""Result files: the signed, expiring links both APIs hand out, and the downloads behind them.

Links are issued and checked here so their format lives in one place. Downloads stream generated MP4s and
are cut short (full Content-Length, connection reset halfway) when the truncate_download fault fires.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_sora.sandbox.media import iter_mp4
from airflow_sora.sandbox.state import SandboxState

if TYPE_CHECKING:
    from airflow_sora.sandbox.server import SandboxHandler

_EXPIRED = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"


def signed_url(state: SandboxState, base_url: str, path: str, ttl: float, *, issue: bool = False) -> str:
    """A signed, expiring link; with ``issue`` the expire_links fault may hand out a dead one."""
    expired = issue and state.faults.expire_links.fire(state.rng)
    expires = int(time.time() - 60 if expired else time.time() + ttl)
    return f"{base_url}{path}?expires={expires}&sig={state.sign(path, expires)}"


def serve_file(request: SandboxHandler, path: str) -> None:
    """``/files/...?expires=&sig=``: the result video, or S3's 403 page once the link is expired or forged."""
    state = request.state
    state.count_request("files")
    try:
        expires = int(request.query_param("expires", "0"))
    except ValueError:
        expires = 0
    if not state.link_valid(path, expires, request.query_param("sig")):
        return request.send_bytes(403, _EXPIRED, "application/xml")
    size = state.config.result_size
    with state.lock:
        truncate = state.faults.truncate_download.fire(state.rng)
    if state.config.media_file:
        data = Path(state.config.media_file).read_bytes()
        _stream(request, [data], len(data), len(data) // 2 if truncate else len(data))
        return None
    _stream_mp4(request, path, size, size // 2 if truncate else size)
    return None


def serve_synthetic(request: SandboxHandler, size: int) -> None:
    """An MP4 of exactly ``size`` bytes, streamed, for benchmarks."""
    _stream_mp4(request, f"synthetic-{size}", size, size)


def _stream_mp4(request: SandboxHandler, seed: str, size: int, limit: int) -> None:
    """Announce and stream an MP4 of ``size`` bytes, resetting the connection after ``limit`` of them."""
    _stream(request, iter_mp4(seed, size), size, limit)


def _stream(request: SandboxHandler, chunks: Iterable[bytes], size: int, limit: int) -> None:
    request.send_response(200)
    request.send_header("Content-Type", "video/mp4")
    request.send_header("Content-Length", str(size))
    request.end_headers()
    sent = 0
    for chunk in chunks:
        if sent + len(chunk) > limit:
            request.wfile.write(chunk[: limit - sent])
            request.wfile.flush()
            request.reset_connection()
        request.wfile.write(chunk)
        sent += len(chunk)
