"""Hook for Kie.ai connections (conn type ``kie``)."""

from __future__ import annotations

from typing import Any

from airflow_sora.hooks.base import SoraServiceHook
from airflow_sora.services.kie import DEFAULT_BASE_URL, AsyncKieClient, KieClient


class KieHook(SoraServiceHook):
    """Kie.ai: host = base URL override, password = API key, extras = timeouts and ``upload_method``."""

    conn_name_attr = "kie_conn_id"
    default_conn_name = "kie_default"
    conn_type = "kie"
    hook_name = "Kie.ai"
    default_base_url = DEFAULT_BASE_URL
    default_read_timeout = 30.0
    client_class = KieClient
    async_client_class = AsyncKieClient

    def __init__(self, kie_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(kie_conn_id, **kwargs)

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Legacy form metadata for Airflow 3.1 (3.2+ reads it from the provider info)."""
        return cls._ui_field_behaviour()

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        return cls._form_widgets(with_upload_method=True)
