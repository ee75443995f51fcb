"""What the two service hooks share: connection -> ``ServiceConfig`` -> client, sync and async."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from airflow.sdk import BaseHook
from pydantic import SecretStr

from airflow_sora.ratelimit import KIE_WINDOW_SECONDS, SAFETY_MARGIN, create_burst
from airflow_sora.services.base import (
    DEFAULT_UPLOAD_METHOD,
    UPLOAD_METHODS,
    AsyncWatermarkService,
    ServiceConfig,
    WatermarkService,
)
from airflow_sora.services.errors import AuthError, ServiceError
from airflow_sora.services.transport import RetryPolicy

_TRUE = {"1", "true", "yes", "on"}


def _extras(conn: Any, conn_type: str) -> dict[str, Any]:
    """Connection extras, accepting both plain keys and the UI's ``extra__<type>__<field>`` form."""
    raw = conn.extra_dejson if hasattr(conn, "extra_dejson") else json.loads(conn.extra or "{}")
    prefix = f"extra__{conn_type}__"
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in raw.items() if v not in (None, "")}


def _base_url(conn: Any, default: str) -> str:
    host = (conn.host or "").strip()
    if not host:
        return default
    if "://" not in host:
        scheme = conn.schema if conn.schema in ("http", "https") else "https"
        host = f"{scheme}://{host}"
    if conn.port and host.count(":") < 2:
        host = f"{host.rstrip('/')}:{conn.port}"
    return host.rstrip("/")


def config_from_connection(conn: Any, *, conn_type: str, default_base_url: str,
                           default_read_timeout: float, retry: RetryPolicy | None = None) -> ServiceConfig:
    """Build a ``ServiceConfig`` from an Airflow connection; a missing key is an ``AuthError`` now, not later."""
    if not conn.password:
        raise AuthError(
            f"Connection {conn.conn_id!r} has no API key: put the key in the connection's password field "
            f"(`airflow connections add {conn.conn_id} --conn-type {conn_type} --conn-password ...`)."
        )
    extras = _extras(conn, conn_type)
    upload_method = str(extras.get("upload_method", DEFAULT_UPLOAD_METHOD)).lower()
    if upload_method not in UPLOAD_METHODS:
        raise ValueError(f"Connection {conn.conn_id!r}: upload_method must be one of {UPLOAD_METHODS}, "
                         f"got {upload_method!r}")
    policy = retry or RetryPolicy()
    if "max_retries" in extras:
        policy = RetryPolicy(max_attempts=int(extras["max_retries"]) + 1, initial_delay=policy.initial_delay,
                             max_delay=policy.max_delay, budget_seconds=policy.budget_seconds)
    return ServiceConfig(
        base_url=_base_url(conn, default_base_url),
        api_key=SecretStr(conn.password),
        connect_timeout=float(extras.get("connect_timeout", 10.0)),
        read_timeout=float(extras.get("read_timeout", default_read_timeout)),
        upload_method=upload_method,
        allow_private_result_hosts=str(extras.get("allow_private_result_hosts", "false")).lower() in _TRUE,
        retry=policy,
        create_rate=_create_rate(extras),
        create_burst=create_burst(float(extras["create_limit"])) if "create_limit" in extras else 1.0,
        create_window=float(extras.get("create_window", KIE_WINDOW_SECONDS)),
        rate_limiter_conn_id=str(extras["rate_limiter_conn_id"]) if "rate_limiter_conn_id" in extras else None,
    )


def _create_rate(extras: dict[str, Any]) -> float | None:
    """``create_limit`` creates per ``create_window`` seconds (extras), when the account's limit differs."""
    if "create_limit" not in extras:
        return None
    window = float(extras.get("create_window", KIE_WINDOW_SECONDS))
    return float(extras["create_limit"]) / window * SAFETY_MARGIN


class SoraServiceHook(BaseHook):
    """Base of ``KieHook`` and ``SaveSoraHook``: reads the connection, builds the service client."""

    conn_name_attr = "conn_id"
    default_conn_name: ClassVar[str]
    conn_type: ClassVar[str]
    hook_name: ClassVar[str]
    default_base_url: ClassVar[str]
    default_read_timeout: ClassVar[float] = 60.0
    client_class: ClassVar[type[WatermarkService]]
    async_client_class: ClassVar[type[AsyncWatermarkService]]

    def __init__(self, conn_id: str | None = None, *, retry: RetryPolicy | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id or self.default_conn_name
        self.retry = retry

    def _config(self, conn: Any) -> ServiceConfig:
        return config_from_connection(conn, conn_type=self.conn_type, default_base_url=self.default_base_url,
                                      default_read_timeout=self.default_read_timeout, retry=self.retry)

    def service_config(self) -> ServiceConfig:
        return self._config(self.get_connection(self.conn_id))

    async def aservice_config(self) -> ServiceConfig:
        """Read the connection with Airflow 3's async API: safe inside the triggerer's event loop."""
        return self._config(await self.aget_connection(self.conn_id))

    def get_conn(self) -> WatermarkService:
        return self.client_class(self.service_config())

    async def aget_conn(self) -> AsyncWatermarkService:
        return self.async_client_class(await self.aservice_config())

    def test_connection(self) -> tuple[bool, str]:
        """Check the key with the free credits call and report the balance."""
        try:
            with self.get_conn() as client:
                balance = client.credits()
                base_url = client.config.base_url
        except (ServiceError, ValueError) as error:
            return False, f"{self.hook_name}: {error}"
        return True, f"Connected to {self.hook_name} at {base_url}: balance {balance.balance:g} credits"

    @classmethod
    def _ui_field_behaviour(cls) -> dict[str, Any]:
        """The provider info's declaration (what Airflow 3.2+ reads), in the legacy method's shape."""
        from airflow_sora import get_provider_info

        (declared,) = [c for c in get_provider_info()["connection-types"] if c["connection-type"] == cls.conn_type]
        behaviour = declared["ui-field-behaviour"]
        return {"hidden_fields": list(behaviour["hidden-fields"]), "relabeling": dict(behaviour["relabeling"]),
                "placeholders": dict(behaviour["placeholders"])}

    @classmethod
    def _form_widgets(cls, with_upload_method: bool) -> dict[str, Any]:
        from wtforms import BooleanField, IntegerField, StringField  # only where the legacy form renders

        widgets: dict[str, Any] = {
            "read_timeout": IntegerField("Read timeout (s)"),
            "allow_private_result_hosts": BooleanField("Allow private result hosts"),
        }
        if with_upload_method:
            widgets["upload_method"] = StringField("Upload method (s3 or oss)")
            widgets["rate_limiter_conn_id"] = StringField("Rate limiter (Redis connection id)")
        return widgets
