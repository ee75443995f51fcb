"""The Airflow plugin that mounts the Kie callback receiver on the API server, when asked.

Registered through the provider info (``plugins``), so installing the provider is enough; the app is only
built where ``[sora] kie_callbacks`` is true and the process is the API server (the pattern of Airflow's
edge3 provider), so schedulers, workers and triggerers load the plugin without importing FastAPI.
"""

from __future__ import annotations

import sys
from typing import Any

from airflow.plugins_manager import AirflowPlugin

from airflow_sora.plugins.settings import ROUTE_PREFIX, receiver_enabled

PLUGIN_NAME = "sora_kie_callbacks"


def running_on_api_server() -> bool:
    return len(sys.argv) > 1 and sys.argv[1] == "api-server"


def fastapi_app() -> dict[str, Any]:
    from airflow_sora.plugins.receiver import create_app

    return {"app": create_app(), "url_prefix": ROUTE_PREFIX, "name": "Sora Kie callbacks"}


class SoraKieCallbackPlugin(AirflowPlugin):
    """Kie callbacks at ``POST <[api] base_url>/sora/kie/callback``; each request authenticates itself."""

    name = PLUGIN_NAME
    fastapi_apps = [fastapi_app()] if receiver_enabled() and running_on_api_server() else []
