"""Clean a folder of watermarked Sora files with the local engine, in chunks shared by all workers.

One task lists the folder (any store: a local path or ``s3://conn@bucket/prefix/``) and cuts the list into
chunks; the local remover is mapped over them, so Celery or Kubernetes workers each take chunks as they free
up. No paid service: the engine runs on the workers (``pip install "airflow-provider-sora[local]"``).
"""

from __future__ import annotations

from _sora_example_settings import DEFAULT_DOWNLOADS, DEFAULT_LOCAL_OUTPUT
from airflow.sdk import DAG, Param, task

from airflow_sora.exceptions import SoraFailedError
from airflow_sora.local_batch import resolve_sources
from airflow_sora.operators import SoraLocalWatermarkRemoverOperator

with DAG(
    dag_id="sora_local_mapped",
    schedule=None,
    catchup=False,
    params={
        "source": Param(DEFAULT_DOWNLOADS, type="string", description="a folder of watermarked Sora files"),
        "output_path": Param(DEFAULT_LOCAL_OUTPUT, type="string", description="file://..., s3://conn@bucket/prefix/"),
        "chunk_size": Param(4, type="integer", minimum=1, description="files per mapped task"),
    },
    default_args={"retries": 2},
    tags=["sora", "example", "local"],
) as dag:

    @task
    def chunks(params: dict) -> list[list[str]]:  # type: ignore[type-arg]
        """Every .mp4 under the folder, in chunks of ``chunk_size`` paths (a path keeps its connection id)."""
        found = resolve_sources([params["source"]])
        if found.problems:
            raise SoraFailedError("; ".join(problem.reason for problem in found.problems))
        paths = [str(video.path) for video in found.videos]
        size = int(params["chunk_size"])
        return [paths[start:start + size] for start in range(0, len(paths), size)]

    SoraLocalWatermarkRemoverOperator.partial(
        task_id="clean_chunk",
        output_path="{{ params.output_path }}",
        preset="veryfast",  # x264 speed preset: faster presets give bigger files at the same quality
        map_index_template="{{ task.source | length }} file(s) from {{ task.source[0].rsplit('/', 1)[-1] }}",
    ).expand(source=chunks())
