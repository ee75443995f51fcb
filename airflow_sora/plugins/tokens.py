"""The receiver's URL: what it names (connection, output folder, DAG, run, task, map index) and its token.

Kie learns the URL at create time, before the task id exists, so the URL names the operator try's state and
the token, an HMAC-SHA256 of exactly those names under the deployment's ``callback_secret``, proves a worker
of this deployment built it. Changing any name (another run, another folder) breaks the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

VERSION = "1"
_PARAMS = {"conn_id": "c", "output": "o", "dag_id": "d", "run_id": "r", "task_id": "t", "map_index": "m"}
MAX_PARAM = 1024


@dataclass(frozen=True)
class CallbackScope:
    """The operator try a callback URL belongs to."""

    conn_id: str
    output: str
    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1

    def message(self) -> bytes:
        """What the token covers: every name, length-prefixed so no two scopes share a message."""
        parts = [VERSION, self.conn_id, self.output, self.dag_id, self.run_id, self.task_id, str(self.map_index)]
        return b"".join(f"{len(p)}:{p};".encode() for p in parts)

    def query(self) -> dict[str, str]:
        return {short: str(getattr(self, name)) for name, short in _PARAMS.items()}

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> CallbackScope | None:
        """The scope a URL names, or None when a name is missing, too long or not well formed."""
        values = {name: params.get(short) for name, short in _PARAMS.items()}
        if any(v is None or not v or len(v) > MAX_PARAM for v in values.values()):
            return None
        try:
            map_index = int(str(values["map_index"]))
        except ValueError:
            return None
        return cls(conn_id=str(values["conn_id"]), output=str(values["output"]), dag_id=str(values["dag_id"]),
                   run_id=str(values["run_id"]), task_id=str(values["task_id"]), map_index=map_index)


def token_for(secret: str, scope: CallbackScope) -> str:
    digest = hmac.new(secret.encode(), scope.message(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def token_valid(secret: str, scope: CallbackScope, token: str) -> bool:
    """Constant-time comparison of the token a request carries with the one its names call for."""
    return hmac.compare_digest(token_for(secret, scope).encode(), token.encode())


def callback_url(receiver: str, secret: str, scope: CallbackScope) -> str:
    """The full URL for ``callBackUrl``: the receiver, the names, then ``k``, the token."""
    return f"{receiver}?{urlencode({**scope.query(), 'k': token_for(secret, scope)})}"
