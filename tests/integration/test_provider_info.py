"""The provider registers itself the way Airflow expects, validated against Airflow's own schema."""

from __future__ import annotations

import importlib
import json
from importlib.metadata import entry_points
from pathlib import Path

import airflow
import jsonschema

from airflow_sora import get_provider_info


def _import(path: str) -> object:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_entry_point_points_at_get_provider_info() -> None:
    (entry,) = [e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("airflow_sora")]
    assert entry.load() is get_provider_info


def test_valid_against_the_installed_airflow_schema() -> None:
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_every_class_and_module_path_imports() -> None:
    info = get_provider_info()
    for section in ("hooks", "operators", "sensors", "triggers"):
        for entry in info[section]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
    for link in info["extra-links"]:
        assert isinstance(_import(link), type)
    for conn in info["connection-types"]:
        assert isinstance(_import(conn["hook-class-name"]), type)


def test_connection_types_match_the_hooks() -> None:
    for conn in get_provider_info()["connection-types"]:
        hook = _import(conn["hook-class-name"])
        assert hook.conn_type == conn["connection-type"]  # type: ignore[attr-defined]
        assert hook.hook_name == conn["hook-name"]  # type: ignore[attr-defined]
        assert hook.default_conn_name == f"{conn['connection-type']}_default"  # type: ignore[attr-defined]
        behaviour = conn["ui-field-behaviour"]
        assert behaviour["relabeling"] == {"host": "Base URL", "password": "API key"}
        assert behaviour["placeholders"]["host"] == hook.default_base_url  # type: ignore[attr-defined]
        legacy = hook.get_ui_field_behaviour()  # type: ignore[attr-defined]
        assert legacy["hidden_fields"] == behaviour["hidden-fields"]
        assert legacy["relabeling"] == behaviour["relabeling"]


def test_airflow_providers_manager_sees_both_connection_types() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow-provider-sora" in manager.providers
    for conn_type, hook in (("kie", "KieHook"), ("savesora", "SaveSoraHook")):
        info = manager.hooks[conn_type]
        assert info is not None and info.hook_class_name == f"airflow_sora.hooks.{hook}"


def test_the_ui_connection_form_metadata() -> None:
    """What the UI's "add connection" form is built from: provider info on 3.2+, the legacy methods on 3.1."""
    import subprocess
    import sys

    # A fresh process, as the api-server is: the metadata is cached per process on first use.
    code = ("import json\nfrom airflow.api_fastapi.core_api.services.ui.connections import HookMetaService\n"
            "print(json.dumps({m.connection_type: m.model_dump(mode='json') for m in HookMetaService.hook_meta_data()"
            " if m.connection_type in ('kie', 'savesora')}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    forms = json.loads(out.stdout.strip().splitlines()[-1])
    for conn_type, base_url in (("kie", "https://api.kie.ai"), ("savesora", "https://savesora.com")):
        fields = forms[conn_type]["standard_fields"]
        assert fields["password"]["title"] == "API key" and not fields["password"]["hidden"]
        assert fields["host"] == {"hidden": False, "title": "Base URL", "placeholder": base_url}
        assert all(fields[name]["hidden"] for name in ("login", "port", "url_schema"))
        assert "read_timeout" in forms[conn_type]["extra_fields"]
    assert "upload_method" in forms["kie"]["extra_fields"]
    assert "upload_method" not in forms["savesora"]["extra_fields"]
