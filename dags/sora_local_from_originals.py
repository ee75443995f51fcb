"""Fetch Sora originals through SaveSora (``keep_source``), then clean them on the worker with the local engine.

SaveSora lands its clean result as ``<post_id>.mp4`` and, with ``keep_source=True``, the watermarked original
as ``<post_id>.source.mp4``; the local remover takes the originals (``pattern``) and lands its own clean copies,
each with a sidecar saying what the engine found, in another folder. With an empty ``video_urls`` the fetch is
skipped and any folder of Sora downloads in ``originals_path`` is cleaned (set ``pattern`` to ``*.mp4``).
"""

from __future__ import annotations

from _sora_example_settings import DEFAULT_DOWNLOADS, DEFAULT_LOCAL_OUTPUT, EXAMPLE_URLS
from airflow.sdk import DAG, Param, task

from airflow_sora.operators import SoraLocalWatermarkRemoverOperator, SoraWatermarkRemoverOperator

with DAG(
    dag_id="sora_local_from_originals",
    schedule=None,
    catchup=False,
    render_template_as_native_obj=True,
    params={
        "video_urls": Param(EXAMPLE_URLS, type="array", items={"type": "string"},
                            description="Sora share links whose originals to fetch; empty: clean the folder as is"),
        "originals_path": Param(DEFAULT_DOWNLOADS, type="string", description="where the originals land"),
        "pattern": Param("*.source.mp4", type="string", description="which files of that folder to clean"),
        "output_path": Param(DEFAULT_LOCAL_OUTPUT, type="string", description="where the local engine lands"),
        "conn_id": Param("savesora_default", type="string", description="a savesora connection"),
    },
    default_args={"retries": 2},
    tags=["sora", "example", "local"],
) as dag:

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def any_urls(params: dict) -> bool:  # type: ignore[type-arg]
        """Skip the fetch (not the cleaning) when there is nothing to fetch."""
        return bool(params["video_urls"])

    fetch = SoraWatermarkRemoverOperator(
        task_id="fetch_originals",
        video_url="{{ params.video_urls }}",
        output_path="{{ params.originals_path }}",
        conn_id="{{ params.conn_id }}",
        keep_source=True,  # SaveSora: also land the watermarked original as <post_id>.source.mp4
    )

    clean = SoraLocalWatermarkRemoverOperator(
        task_id="clean_locally",
        source="{{ params.originals_path }}",
        pattern="{{ params.pattern }}",
        output_path="{{ params.output_path }}",
        trigger_rule="none_failed",  # runs after a skipped fetch too
    )

    any_urls() >> fetch >> clean
