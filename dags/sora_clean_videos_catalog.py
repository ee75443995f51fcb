"""Runs whenever clean videos land: reads every provenance sidecar and writes ``catalog.json`` beside them."""

from __future__ import annotations

import json

from _sora_example_settings import DEFAULT_OUTPUT, SORA_CLEAN_VIDEOS
from airflow.sdk import DAG, ObjectStoragePath, Variable, task

from airflow_sora.sidecar import Sidecar

with DAG(
    dag_id="sora_clean_videos_catalog",
    schedule=[SORA_CLEAN_VIDEOS],
    catchup=False,
    tags=["sora", "example"],
) as dag:

    @task
    def write_catalog(triggering_asset_events: dict | None = None) -> dict:  # type: ignore[type-arg]
        outputs = sorted({
            event.extra["output_path"]
            for events in (triggering_asset_events or {}).values() for event in events
            if event.extra and event.extra.get("output_path")
        }) or [Variable.get("sora_output_path", default=DEFAULT_OUTPUT)]  # a manual run catalogs the default
        written = {}
        for output in outputs:
            root = ObjectStoragePath(output)
            entries = []
            for path in sorted(root.glob("s_*.json")):
                sidecar = Sidecar.parse(path.read_bytes())
                if sidecar is None:  # not a provenance sidecar: never catalogued as one
                    continue
                entries.append(sidecar.model_dump(mode="json", include={
                    "post_id", "file", "source_url", "service", "task_id", "sha256", "size", "ai_generated",
                    "generator", "landed_at", "prompt"}))
            (root / "catalog.json").write_text(json.dumps({"videos": entries, "count": len(entries)}, indent=2))
            written[output] = len(entries)
        return written

    write_catalog()
