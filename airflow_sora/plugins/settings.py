"""What the callback path reads from the Kie connection and Airflow's configuration.

The secrets live in the connection's extras under names Airflow masks (``..._secret``), so they never show in
task logs; the trigger and XCom only ever see the URL's derived token and the inbox's path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_sora.exceptions import SoraFailedError

CONFIG_SECTION = "sora"
RECEIVER_OPTION = "kie_callbacks"  # AIRFLOW__SORA__KIE_CALLBACKS=True on the API server turns the receiver on
ROUTE_PREFIX = "/sora"
ROUTE = "/kie/callback"
DEFAULT_REPLAY_WINDOW = 300.0
AUTO = "auto"


@dataclass(frozen=True)
class CallbackSettings:
    """The callback extras of one Kie connection.

    ``callback_secret`` keys the URL tokens (per deployment: the workers sign, the API server checks);
    ``webhook_secret`` is the account's webhook key from Kie's settings (signatures required when set);
    ``callback_url`` is ``auto`` (the API server's ``[api] base_url``) or the public base URL the receiver is
    reached at, when an ingress exposes it elsewhere.
    """

    conn_id: str
    callback_secret: str | None = field(default=None, repr=False)
    webhook_secret: str | None = field(default=None, repr=False)
    replay_window: float = DEFAULT_REPLAY_WINDOW
    callback_url: str | None = None


def _extras(conn: Any) -> dict[str, Any]:
    raw = conn.extra_dejson if hasattr(conn, "extra_dejson") else json.loads(conn.extra or "{}")
    prefix = "extra__kie__"
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in raw.items() if v not in (None, "")}


def settings_from_connection(conn: Any) -> CallbackSettings:
    extras = _extras(conn)
    try:
        window = float(extras.get("webhook_window", DEFAULT_REPLAY_WINDOW))
    except (TypeError, ValueError):
        raise SoraFailedError(f"Connection {conn.conn_id!r}: webhook_window must be a number of seconds") from None
    return CallbackSettings(
        conn_id=conn.conn_id, callback_secret=_text(extras.get("callback_secret")),
        webhook_secret=_text(extras.get("webhook_secret")), replay_window=window,
        callback_url=_text(extras.get("callback_url")),
    )


def _text(value: Any) -> str | None:
    return str(value).strip() or None if value is not None else None


def load_settings(conn_id: str) -> CallbackSettings:
    """The connection's callback settings (in the API server, a worker or the triggerer alike)."""
    from airflow.sdk import BaseHook

    return settings_from_connection(BaseHook.get_connection(conn_id))


def receiver_enabled() -> bool:
    from airflow.configuration import conf

    return conf.getboolean(CONFIG_SECTION, RECEIVER_OPTION, fallback=False)


def receiver_base(setting: str | None) -> str:
    """The receiver's absolute URL (no query) for ``auto`` (``[api] base_url``) or a given base URL."""
    if setting is None or setting == AUTO:
        from airflow.configuration import conf

        base = conf.get("api", "base_url", fallback="") or ""
        where = "[api] base_url"
    else:
        base, where = setting, "the connection's callback_url"
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SoraFailedError(
            f"callback_url='auto' needs an absolute http(s) URL in {where} (the address Kie can reach the API "
            f"server at), got {base!r}; nothing was spent")
    return base.rstrip("/") + ROUTE_PREFIX + ROUTE
