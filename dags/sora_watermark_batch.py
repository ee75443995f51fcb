"""Remove the watermark from a list of Sora videos in ONE task, after checking the credits cover it."""

from __future__ import annotations

from datetime import timedelta

from _sora_example_settings import DEFAULT_OUTPUT, EXAMPLE_URLS, OUTPUT_PATH, SORA_CLEAN_VIDEOS
from airflow.sdk import DAG, Param, task

from airflow_sora._compat import AirflowFailException
from airflow_sora.hooks import hook_for_connection
from airflow_sora.operators import SoraWatermarkRemoverOperator
from airflow_sora.services import is_valid_video_url

with DAG(
    dag_id="sora_watermark_batch",
    schedule=None,
    catchup=False,
    render_template_as_native_obj=True,
    params={
        "video_urls": Param(EXAMPLE_URLS, type="array", items={"type": "string"},
                            description="Sora share links, https://sora.chatgpt.com/p/s_<32 hex>"),
        "output_path": Param(DEFAULT_OUTPUT, type="string", description="file://..., s3://conn@bucket/prefix/"),
        "conn_id": Param("kie_default", type="string", description="a kie or savesora connection"),
    },
    default_args={"retries": 2, "retry_delay": timedelta(seconds=10)},
    tags=["sora", "example"],
) as dag:

    @task
    def check_credits(params: dict) -> dict:  # type: ignore[type-arg]
        """Fail fast, before anything is spent, if the balance cannot pay for the whole list."""
        urls = {u for u in params["video_urls"] if is_valid_video_url(u)}
        hook = hook_for_connection(params["conn_id"])
        with hook.get_conn() as client:
            balance = client.credits().balance
            cost = len(urls) * client.credits_per_video
        if balance < cost:
            raise AirflowFailException(
                f"{client.service_name} balance is {balance:g} credits but {len(urls)} video(s) cost {cost:g}; "
                "top up or shorten the list"
            )
        return {"balance": balance, "cost": cost, "videos": len(urls)}

    remove = SoraWatermarkRemoverOperator(
        task_id="remove_watermarks",
        video_url="{{ params.video_urls }}",
        output_path=OUTPUT_PATH,
        conn_id="{{ params.conn_id }}",
        outlets=[SORA_CLEAN_VIDEOS],
    )

    check_credits() >> remove
