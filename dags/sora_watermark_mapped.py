"""The same as ``sora_watermark_batch`` with dynamic task mapping: one task (and one retry budget) per video."""

from __future__ import annotations

from _sora_example_settings import DEFAULT_OUTPUT, EXAMPLE_URLS, OUTPUT_PATH, SORA_CLEAN_VIDEOS
from airflow.sdk import DAG, Param, task

from airflow_sora.operators import SoraWatermarkRemoverOperator

with DAG(
    dag_id="sora_watermark_mapped",
    schedule=None,
    catchup=False,
    params={
        "video_urls": Param(EXAMPLE_URLS, type="array", items={"type": "string"}),
        "output_path": Param(DEFAULT_OUTPUT, type="string"),
        "conn_id": Param("kie_default", type="string"),
    },
    default_args={"retries": 2},
    tags=["sora", "example"],
) as dag:

    @task
    def video_urls(params: dict) -> list[str]:  # type: ignore[type-arg]
        return list(dict.fromkeys(params["video_urls"]))

    SoraWatermarkRemoverOperator.partial(
        task_id="remove_watermark",
        output_path=OUTPUT_PATH,
        conn_id="{{ params.conn_id }}",
        outlets=[SORA_CLEAN_VIDEOS],
        map_index_template="{{ task.video_url }}",
        # one video takes ~2 s: waiting that long in the worker beats a deferral round trip
        wait_before_defer=3.0,
    ).expand(video_url=video_urls())
