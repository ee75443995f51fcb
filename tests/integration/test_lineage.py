"""OpenLineage facets: the Sora posts in, the landing prefix out (needs the ``openlineage`` extra)."""

from __future__ import annotations

import pytest

from airflow_sora.operators import SoraWatermarkRemoverOperator
from tests.conftest import VIDEO_URLS

pytest.importorskip("airflow.providers.openlineage", reason="the openlineage extra is not installed")


def test_facets_name_inputs_and_output() -> None:
    operator = SoraWatermarkRemoverOperator(task_id="remove", video_url=VIDEO_URLS[:2],
                                            output_path="s3://aws_default@bucket/clean/")
    lineage = operator.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [
        ("https://sora.chatgpt.com", f"/p/{url.rsplit('/', 1)[1]}") for url in VIDEO_URLS[:2]]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("s3://", "bucket/clean")]


def test_a_static_output_path_becomes_the_asset_outlet() -> None:
    operator = SoraWatermarkRemoverOperator(task_id="remove", video_url=VIDEO_URLS[0],
                                            output_path="s3://aws_default@bucket/clean/")
    assert [o.uri for o in operator.outlets] == ["s3://bucket/clean"]
    templated = SoraWatermarkRemoverOperator(task_id="t", video_url=VIDEO_URLS[0], output_path="{{ var.value.x }}")
    assert templated.outlets == []
