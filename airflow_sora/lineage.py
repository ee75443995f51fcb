"""Lineage names for what the operator reads and writes: the Airflow asset and the OpenLineage datasets.

The landing prefix is named exactly as the provider owning its scheme names it (the amazon provider for
S3: namespace ``s3://bucket``, name the key; the common.io provider for local files: namespace ``file``,
name the absolute path), so lineage joins with the datasets every other operator emits for those objects.
The datasets need the ``openlineage`` extra; the asset does not.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from airflow.sdk import Asset

from airflow_sora.storage import LOCAL_PROTOCOLS

if TYPE_CHECKING:
    from airflow.providers.common.compat.openlineage.facet import Dataset

SORA_NAMESPACE = "https://sora.chatgpt.com"
#: fsspec's aliases, named by the scheme their provider registers.
_SCHEME_ALIASES = {"s3a": "s3", "s3n": "s3", "gcs": "gs"}


def asset_for_output(output_path: str) -> Asset | None:
    """The Asset downstream DAGs can schedule on: the output prefix without any connection id.

    Its scheme is the store's own (``s3``, ``file``...), which the store's provider registers; None while
    the path is still a template. Read from the text alone: DAG files call this while being parsed, where
    building the storage path would look up its connection.
    """
    if "{{" in output_path or "{%" in output_path:
        return None
    parts = urlsplit(output_path)
    if parts.scheme in LOCAL_PROTOCOLS:
        local = os.path.abspath(parts.path if parts.scheme else output_path)
        return Asset(uri=f"file://{local.rstrip('/')}/")
    scheme = _SCHEME_ALIASES.get(parts.scheme, parts.scheme)
    bucket = parts.netloc.rpartition("@")[2]  # without the connection id
    return Asset(uri=f"{scheme}://{bucket}{parts.path.rstrip('/')}/")


def dataset_naming(asset_uri: str) -> tuple[str, str]:
    """(namespace, name) of an asset URI, as the amazon (``s3``) and common.io (``file``) converters name it;
    other object stores the same way as S3 (bucket in the namespace, key as the name)."""
    parts = urlsplit(asset_uri)
    if parts.scheme == "file":
        if parts.path in ("", "/"):
            return "file", "/" + parts.netloc.lstrip("/")
        return (f"file://{parts.netloc}" if parts.netloc else "file"), parts.path
    return f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/") or "/"


def output_dataset(output_path: str) -> Dataset:
    """The landing prefix as an OpenLineage dataset, named as its asset converts."""
    from airflow.providers.common.compat.openlineage.facet import Dataset

    asset = asset_for_output(output_path)
    if asset is None:
        raise ValueError(f"output path {output_path!r} is still a template: render it first")
    namespace, name = dataset_naming(asset.uri)
    return Dataset(namespace=namespace, name=name)


def input_datasets(video_urls: Iterable[str]) -> list[Dataset]:
    """The Sora posts read: one dataset per share link, named by its path on sora.chatgpt.com."""
    from airflow.providers.common.compat.openlineage.facet import Dataset

    return [Dataset(namespace=SORA_NAMESPACE, name=url.split("sora.chatgpt.com", 1)[-1]) for url in video_urls]


def source_datasets(paths: Iterable[str]) -> list[Dataset]:
    """Files or folders read (the local engine's sources), named as the output prefix is; a file's name keeps
    no trailing slash."""
    datasets = []
    for path in paths:
        dataset = output_dataset(path)
        if not path.endswith("/") and dataset.name not in ("", "/"):
            dataset.name = dataset.name.rstrip("/")
        datasets.append(dataset)
    return datasets
