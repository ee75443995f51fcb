"""Apache Airflow provider that removes the visible watermark from OpenAI Sora videos.

``get_provider_info`` is the ``apache_airflow_provider`` entry point. It must stay import-light: Airflow
calls it while discovering providers, so it imports nothing from this package's modules.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_HIDDEN_FIELDS = ["login", "port", "schema"]


def _connection_type(conn_type: str, hook: str, name: str, base_url: str) -> dict[str, Any]:
    return {
        "connection-type": conn_type,
        "hook-class-name": f"airflow_sora.hooks.{hook}",
        "hook-name": name,
        "ui-field-behaviour": {
            "hidden-fields": _HIDDEN_FIELDS,
            "relabeling": {"host": "Base URL", "password": "API key"},
            "placeholders": {
                "host": base_url,
                "password": f"your {name} API key",
                "extra": '{"read_timeout": 120, "allow_private_result_hosts": false}',
            },
        },
        "conn-fields": {
            "read_timeout": {
                "label": "Read timeout (s)",
                "description": "Seconds to wait for a reply before giving up on one request.",
                "schema": {"type": ["integer", "null"], "minimum": 1},
            },
            "allow_private_result_hosts": {
                "label": "Allow private result hosts",
                "description": "Download results from loopback/private addresses and over http. "
                "Only for a local sandbox; leave off in production.",
                "schema": {"type": ["boolean", "null"]},
            },
        },
    }


def get_provider_info() -> dict[str, Any]:
    kie = _connection_type("kie", "KieHook", "Kie.ai", "https://api.kie.ai")
    kie["conn-fields"]["upload_method"] = {
        "label": "Upload method",
        "description": "Where Kie stores results: s3 (default) or oss (better reach from mainland China).",
        "schema": {"type": ["string", "null"], "enum": ["s3", "oss", None]},
    }
    kie["conn-fields"]["rate_limiter_conn_id"] = {
        "label": "Rate limiter (Redis connection id)",
        "description": "A Redis connection holding one window of creates for the whole account, shared by every "
        "worker and run (needs the redis extra). Empty: each process paces itself adaptively.",
        "schema": {"type": ["string", "null"]},
    }
    savesora = _connection_type("savesora", "SaveSoraHook", "SaveSora", "https://savesora.com")
    savesora["conn-fields"]["read_timeout"]["description"] += " SaveSora works synchronously: allow 120 s."
    return {
        "package-name": "airflow-provider-sora",
        "name": "Sora watermark removal",
        "description": "Remove the visible watermark from OpenAI Sora videos through Kie.ai or SaveSora, or "
        "on the worker with the local engine, and land the clean files, with provenance sidecars, in any object "
        "storage.",
        "versions": [__version__],
        "integrations": [
            {"integration-name": "Kie.ai", "external-doc-url": "https://docs.kie.ai", "tags": ["service"]},
            {"integration-name": "SaveSora", "external-doc-url": "https://savesora.com", "tags": ["service"]},
            {"integration-name": "Sora local engine", "tags": ["software"]},
        ],
        "hooks": [
            {"integration-name": "Kie.ai", "python-modules": ["airflow_sora.hooks.kie"]},
            {"integration-name": "SaveSora", "python-modules": ["airflow_sora.hooks.savesora"]},
        ],
        "operators": [
            {"integration-name": "Kie.ai", "python-modules": ["airflow_sora.operators.remove"]},
            {"integration-name": "Sora local engine", "python-modules": ["airflow_sora.operators.local"]},
        ],
        "sensors": [
            {"integration-name": "Kie.ai", "python-modules": ["airflow_sora.sensors.kie"]},
        ],
        "triggers": [
            {"integration-name": "Kie.ai", "python-modules": ["airflow_sora.triggers.kie"]},
        ],
        "extra-links": ["airflow_sora.links.KieTaskLink"],
        # The Kie callback receiver on the API server; it mounts nothing unless [sora] kie_callbacks is true.
        "plugins": [{"name": "sora_kie_callbacks",
                     "plugin-class": "airflow_sora.plugins.kie_callbacks.SoraKieCallbackPlugin"}],
        "connection-types": [kie, savesora],
    }
