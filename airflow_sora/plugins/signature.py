"""Kie's webhook signature: base64(HMAC-SHA256(key, taskId + "." + timestamp)), with our own replay window.

The signature covers the task id and the time, not the body: a verified callback proves Kie sent *a*
callback for that task recently, never what the task's result is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac


def signature_for(key: str, task_id: str, timestamp: str) -> str:
    digest = hmac.new(key.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def signature_problem(key: str, task_id: str, timestamp: str | None, signature: str | None, *, now: float,
                      window: float) -> str | None:
    """Why the signature does not hold (a short reason, nothing secret), or None when it does."""
    if not timestamp or not signature:
        return "unsigned"
    if not timestamp.isdigit() or len(timestamp) > 12:
        return "bad timestamp"
    if abs(now - int(timestamp)) > window:
        return "stale timestamp"
    try:
        given = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        return "bad signature"
    expected = base64.b64decode(signature_for(key, task_id, timestamp))
    return None if hmac.compare_digest(given, expected) else "bad signature"
