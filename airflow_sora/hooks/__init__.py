"""Airflow hooks: an Airflow connection in, a configured service client out."""

from __future__ import annotations

from airflow_sora.hooks.base import SoraServiceHook
from airflow_sora.hooks.kie import KieHook
from airflow_sora.hooks.savesora import SaveSoraHook

HOOKS_BY_CONN_TYPE: dict[str, type[SoraServiceHook]] = {"kie": KieHook, "savesora": SaveSoraHook}


def hook_for_connection(conn_id: str) -> SoraServiceHook:
    """The hook matching the connection's type, so the service follows the connection."""
    conn = SoraServiceHook.get_connection(conn_id)
    return _hook_for_type(conn.conn_type, conn_id)


async def ahook_for_connection(conn_id: str) -> SoraServiceHook:
    conn = await SoraServiceHook.aget_connection(conn_id)
    return _hook_for_type(conn.conn_type, conn_id)


def _hook_for_type(conn_type: str | None, conn_id: str) -> SoraServiceHook:
    try:
        hook_class = HOOKS_BY_CONN_TYPE[(conn_type or "").lower()]
    except KeyError:
        raise ValueError(
            f"Connection {conn_id!r} has type {conn_type!r}; use a 'kie' or 'savesora' connection."
        ) from None
    return hook_class(conn_id)


__all__ = ["HOOKS_BY_CONN_TYPE", "KieHook", "SaveSoraHook", "SoraServiceHook", "ahook_for_connection",
           "hook_for_connection"]
