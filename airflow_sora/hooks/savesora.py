"""Hook for SaveSora connections (conn type ``savesora``)."""

from __future__ import annotations

from typing import Any

from airflow_sora.hooks.base import SoraServiceHook
from airflow_sora.services.savesora import DEFAULT_BASE_URL, AsyncSaveSoraClient, SaveSoraClient


class SaveSoraHook(SoraServiceHook):
    """SaveSora: host = base URL override, password = API key (sent in the body, never logged)."""

    conn_name_attr = "savesora_conn_id"
    default_conn_name = "savesora_default"
    conn_type = "savesora"
    hook_name = "SaveSora"
    default_base_url = DEFAULT_BASE_URL
    default_read_timeout = 150.0  # one synchronous call does the whole job: the spec asks for >= 120 s
    client_class = SaveSoraClient
    async_client_class = AsyncSaveSoraClient

    def __init__(self, savesora_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(savesora_conn_id, **kwargs)

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Legacy form metadata for Airflow 3.1 (3.2+ reads it from the provider info)."""
        return cls._ui_field_behaviour()

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        return cls._form_widgets(with_upload_method=False)
