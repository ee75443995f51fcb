"""Submit to Kie without waiting, wait with ``KieTaskSensor`` (no worker slot held), then land the result."""

from __future__ import annotations

from _sora_example_settings import DEFAULT_OUTPUT, EXAMPLE_URLS
from airflow.sdk import DAG, ObjectStoragePath, Param, Variable, task

from airflow_sora.hooks import KieHook
from airflow_sora.landing import ResultLander
from airflow_sora.sensors import KieTaskSensor
from airflow_sora.services import RemovalResult, TaskStatus, post_id_from_url

with DAG(
    dag_id="sora_watermark_sensor",
    schedule=None,
    catchup=False,
    params={
        "video_url": Param(EXAMPLE_URLS[0], type="string"),
        "output_path": Param(DEFAULT_OUTPUT, type="string"),
    },
    tags=["sora", "example"],
) as dag:

    @task(retries=0)  # a create is paid: never repeat it blindly (the remove operator keeps state for that)
    def submit(params: dict) -> str:  # type: ignore[type-arg]
        with KieHook().get_conn() as client:
            return client.submit(params["video_url"]).task_id or ""

    wait = KieTaskSensor(task_id="wait_for_kie", kie_task_id="{{ ti.xcom_pull(task_ids='submit') }}",
                         deferrable=True, poke_interval=2, timeout=900)

    @task
    def land(status: dict, params: dict) -> dict:  # type: ignore[type-arg]
        output_path = Variable.get("sora_output_path", default=params["output_path"])
        task_status = TaskStatus.model_validate(status)
        hook = KieHook()
        with hook.get_conn() as client:
            result: RemovalResult = client.result(task_status, params["video_url"])
            lander = ResultLander(ObjectStoragePath(output_path),
                                  allow_private_hosts=client.config.allow_private_result_hosts)
            landed = lander.land(result, provenance={"dag_id": "sora_watermark_sensor"},
                                 refresh=client.refresh_link)
        return {"post_id": post_id_from_url(params["video_url"]), "uri": landed.video.uri,
                "sha256": landed.video.sha256, "sidecar": landed.sidecar_uri}

    task_id = submit()
    task_id >> wait
    land(wait.output)
