"""Reading the ``{"code", "msg", "data"}`` envelope both services wrap every reply in.

Both error styles occur: HTTP 200 with the error in the body ``code``, or an HTTP status equal to the
code. A reply is an error if the status is not 2xx OR the body code is not 200. Non-JSON bodies (a
Cloudflare page, say) are errors too, never crashes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from airflow_sora.services.errors import RateLimitedError, ServiceProtocolError, ServiceUnavailableError


@dataclass(frozen=True)
class Reply:
    """What came back over the wire, independent of the HTTP library."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes


@dataclass(frozen=True)
class Envelope:
    """A decoded reply. ``code`` is the effective code: the body's, or the HTTP status if the body is OK."""

    status_code: int
    code: int
    message: str
    data: Any
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300 and self.code == 200


def lenient_number(value: Any) -> float | None:
    """A finite number from whatever a service sent (int, float, numeric string), else None. Never raises."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a ``Retry-After`` header (delta or HTTP date); None when absent or unreadable."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from datetime import datetime, timezone

        when = parsedate_to_datetime(value)
        return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return None


def decode_envelope(reply: Reply, *, service: str, operation: str) -> Envelope:
    """Decode a reply into an ``Envelope``, raising only where no envelope can be made.

    Without a JSON envelope the HTTP status is all we have: 429 and 5xx/455 keep their transient meaning,
    anything else is a ``ServiceProtocolError`` naming the operation, status and content type (never the body,
    which could echo a request).
    """
    retry_after = parse_retry_after(reply.headers)
    body = _load_json(reply.content)
    code = body.get("code") if isinstance(body, dict) else None
    if isinstance(code, str) and code.strip().lstrip("-").isdigit():
        code = int(code)
    if not isinstance(body, dict) or not isinstance(code, int) or isinstance(code, bool):
        _raise_for_bare_status(reply, retry_after, service=service, operation=operation)
        content_type = next((v for k, v in reply.headers.items() if k.lower() == "content-type"), "unknown")
        shape = "not JSON" if body is _NOT_JSON else "JSON without an integer 'code'"
        raise ServiceProtocolError(
            f"{operation}: unreadable reply (HTTP {reply.status_code}, content-type {content_type!r}, "
            f"{len(reply.content)} bytes, {shape})",
            service=service,
            code=reply.status_code,
        )
    message = next((m for m in (body.get("msg"), body.get("message")) if isinstance(m, str)), "")
    effective = code
    if code == 200 and not 200 <= reply.status_code < 300:
        effective = reply.status_code
    return Envelope(
        status_code=reply.status_code,
        code=effective,
        message=message,
        data=body.get("data"),
        retry_after=retry_after,
    )


_NOT_JSON = object()


def _load_json(content: bytes) -> Any:
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return _NOT_JSON


def _raise_for_bare_status(reply: Reply, retry_after: float | None, *, service: str, operation: str) -> None:
    status = reply.status_code
    if status == 429:
        raise RateLimitedError(f"{operation}: rate limited (HTTP 429)", service=service, code=429,
                               retry_after=retry_after)
    if status == 455 or status >= 500:
        raise ServiceUnavailableError(f"{operation}: service unavailable (HTTP {status})", service=service,
                                      code=status)
