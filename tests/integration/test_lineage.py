"""Lineage: the Sora posts in, the landing prefix out, named as the amazon and common.io providers name them,
so the datasets join with those every other operator emits (needs the ``openlineage`` extra)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import Asset

from airflow_sora.lineage import asset_for_output, output_dataset
from tests.conftest import VIDEO_URLS

pytest.importorskip("airflow.providers.openlineage", reason="the openlineage extra is not installed")

REPO = Path(__file__).resolve().parents[2]


def providers() -> Any:
    """What the installed providers register (task-sdk's registry since Airflow 3.2, core's before)."""
    try:
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime
    except ImportError:
        from airflow.providers_manager import ProvidersManager

        return ProvidersManager()
    return ProvidersManagerTaskRuntime()


def amazon_naming(bucket: str, key: str) -> tuple[str, str]:
    """How the amazon provider names an S3 prefix: its own asset factory, then its own converter."""
    from airflow.providers.amazon.aws.assets.s3 import convert_asset_to_openlineage, create_asset

    dataset = convert_asset_to_openlineage(create_asset(bucket=bucket, key=key), None)
    return dataset.namespace, dataset.name


def common_io_naming(path: str) -> tuple[str, str]:
    """How the common.io provider names a local path: its own asset factory, then its own converter."""
    from airflow.providers.common.io.assets.file import convert_asset_to_openlineage, create_asset

    dataset = convert_asset_to_openlineage(create_asset(path=path), None)
    return dataset.namespace, dataset.name


def naming(output_path: str) -> tuple[str, str]:
    dataset = output_dataset(output_path)
    return dataset.namespace, dataset.name


@pytest.mark.parametrize(("output_path", "bucket", "key"), [
    ("s3://aws_default@bucket/clean/", "bucket", "clean/"),
    ("s3://bucket/sora/clean/videos", "bucket", "sora/clean/videos"),
    ("s3://my_conn@bucket.with.dots/a/b/", "bucket.with.dots", "a/b"),
    ("s3://bucket/", "bucket", ""),
])
def test_s3_outputs_are_named_as_the_amazon_provider_names_them(output_path: str, bucket: str, key: str) -> None:
    assert naming(output_path) == amazon_naming(bucket, key)
    assert naming(output_path)[0] == f"s3://{bucket}"


def test_local_outputs_are_named_as_the_common_io_provider_names_them(tmp_path: Path) -> None:
    assert naming("file:///tmp/x/") == common_io_naming("/tmp/x/") == ("file", "/tmp/x")
    assert naming(f"{tmp_path}/out") == common_io_naming(f"file://{tmp_path}/out") == ("file", f"{tmp_path}/out")
    assert naming(f"{tmp_path}/out/") == naming(f"file://{tmp_path}/out")


@pytest.mark.parametrize("output_path", ["s3://aws_default@bucket/clean/", "file:///tmp/x/", "/tmp/x"])
def test_the_output_dataset_is_what_openlineage_makes_of_the_output_asset(output_path: str) -> None:
    """The operator's outlet asset, converted by the provider registered for its scheme, gives our dataset."""
    asset = asset_for_output(output_path)
    assert asset is not None
    scheme = asset.uri.split("://", 1)[0]
    convert = providers().asset_to_openlineage_converters[scheme]
    converted = convert(asset, None)
    assert (converted.namespace, converted.name) == naming(output_path)


def test_facets_name_inputs_and_output() -> None:
    from airflow_sora.operators import SoraWatermarkRemoverOperator

    operator = SoraWatermarkRemoverOperator(task_id="remove", video_url=VIDEO_URLS[:2],
                                            output_path="s3://aws_default@bucket/clean/")
    lineage = operator.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [
        ("https://sora.chatgpt.com", f"/p/{url.rsplit('/', 1)[1]}") for url in VIDEO_URLS[:2]]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("s3://bucket", "clean")]


def test_a_static_output_path_becomes_the_asset_outlet() -> None:
    from airflow_sora.operators import SoraWatermarkRemoverOperator

    operator = SoraWatermarkRemoverOperator(task_id="remove", video_url=VIDEO_URLS[0],
                                            output_path="s3://aws_default@bucket/clean/")
    assert [o.uri for o in operator.outlets] == ["s3://bucket/clean"]
    templated = SoraWatermarkRemoverOperator(task_id="t", video_url=VIDEO_URLS[0], output_path="{{ var.value.x }}")
    assert templated.outlets == []


def test_the_example_asset_uses_a_registered_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO / "dags"))
    spec = importlib.util.spec_from_file_location("_sora_example_settings", REPO / "dags" / "_sora_example_settings.py")
    assert spec is not None and spec.loader is not None
    settings = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(settings)
    asset: Asset = settings.SORA_CLEAN_VIDEOS
    assert asset.name == "sora_clean_videos"
    assert asset.uri.split("://", 1)[0] in providers().asset_uri_handlers
    default = asset_for_output(settings.DEFAULT_OUTPUT)
    assert default is not None and asset.uri == default.uri  # where the example DAGs land by default
