"""Settings shared by the example DAGs (a module, not a DAG: the name starts with an underscore)."""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import Asset

from airflow_sora.lineage import asset_for_output

#: Local folder by default (``./output/`` beside the dags folder); S3 by the param or the Variable
#: ``sora_output_path``, e.g. ``s3://aws_default@my-bucket/sora/clean/``.
DEFAULT_OUTPUT = os.environ.get("SORA_OUTPUT_PATH") or f"file://{Path(__file__).resolve().parents[1] / 'output'}/"

#: Downstream DAGs schedule on this; the remove tasks attach the actual output path to each event. Its URI is
#: the default output's (a ``file://`` or ``s3://`` URI, schemes their providers register).
SORA_CLEAN_VIDEOS = Asset(name="sora_clean_videos", uri=asset_for_output(DEFAULT_OUTPUT).uri)  # type: ignore[union-attr]
OUTPUT_PATH = "{{ var.value.get('sora_output_path', params.output_path) }}"

EXAMPLE_URLS = [
    "https://sora.chatgpt.com/p/s_68e83bd7eee88191be79d2ba7158516f",
    "https://sora.chatgpt.com/p/s_6902318491e88191893d935b08d8c428",
    "https://sora.chatgpt.com/p/s_68dc40f1f5a481919a01594fef247dd4",
]

#: The local engine's examples: a folder of watermarked Sora files (``SORA_DOWNLOADS_PATH``, the param
#: ``source`` or any ``s3://conn@bucket/prefix/``) and where their clean copies land (``./output/local/``).
DEFAULT_DOWNLOADS = (os.environ.get("SORA_DOWNLOADS_PATH")
                     or f"file://{Path(__file__).resolve().parents[1] / 'downloads'}/")
DEFAULT_LOCAL_OUTPUT = os.environ.get("SORA_LOCAL_OUTPUT_PATH") or f"{DEFAULT_OUTPUT.rstrip('/')}/local/"
