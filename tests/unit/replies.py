"""Helpers to build raw replies as the services send them, in both error styles."""

from __future__ import annotations

import json
from typing import Any

from airflow_sora.services.envelope import Reply


def reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Reply(status_code=status, headers={"content-type": "application/json", **(headers or {})},
                 content=content)


def error_reply(code: int, msg: str, style: str, data: Any = None, status_for_code: int | None = None) -> Reply:
    """``style`` 'body': HTTP 200 with the code in the body; 'status': the HTTP status matches the code."""
    status = 200 if style == "body" else (status_for_code or code)
    return reply({"code": code, "msg": msg, "data": data}, status=status)
