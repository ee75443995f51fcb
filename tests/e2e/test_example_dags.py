"""Every example DAG runs green under ``airflow dags test``, against the sandbox and real object storage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_sora.sandbox import SandboxServer
from tests.conftest import KIE_KEY, VIDEO_URLS, connection_env, s3_keys
from tests.e2e.conftest import AirflowCli

pytestmark = pytest.mark.e2e
URLS = VIDEO_URLS[:3]


def landed_ids(folder: Path) -> set[str]:
    return {p.stem for p in folder.glob("s_*.mp4")}


def sidecars(folder: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("s_*.json"))]


def expect_success(run: object) -> None:
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]  # type: ignore[attr-defined]


@pytest.mark.parametrize("deferrable", ["false", "true"])
def test_batch_dag_lands_locally(airflow_home: AirflowCli, dag_env: dict[str, str], e2e_sandbox: SandboxServer,
                                 tmp_path: Path, deferrable: str) -> None:
    out = tmp_path / "out"
    run = airflow_home.dags_test("sora_watermark_batch", {"video_urls": URLS, "output_path": f"file://{out}/"},
                                 extra_env={**dag_env, "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": deferrable})
    expect_success(run)
    assert landed_ids(out) == {u.rsplit("/", 1)[1] for u in URLS}
    assert all(s["ai_generated"] is True and s["service"] == "kie" for s in sidecars(out))
    assert e2e_sandbox.summary()["charges_by_video"] == {u: 1 for u in URLS}


def test_batch_dag_to_s3_with_savesora(airflow_home: AirflowCli, dag_env: dict[str, str],
                                       e2e_sandbox: SandboxServer, s3_server: str, s3_bucket: str) -> None:
    run = airflow_home.dags_test(
        "sora_watermark_batch",
        {"video_urls": URLS, "output_path": f"s3://aws_default@{s3_bucket}/clean/", "conn_id": "savesora_default"},
        extra_env={**dag_env, "AIRFLOW_CONN_AWS_DEFAULT": __import__("os").environ["AIRFLOW_CONN_AWS_DEFAULT"]},
    )
    expect_success(run)
    keys = {k for k in s3_keys(s3_server, s3_bucket) if "/_state/" not in k}
    assert keys == {f"clean/{u.rsplit('/', 1)[1]}{ext}" for u in URLS for ext in (".mp4", ".json")}
    assert e2e_sandbox.summary()["credits_by_video"] == {u: 1.0 for u in URLS}


def test_batch_dag_fails_fast_when_credits_are_short(airflow_home: AirflowCli, dag_env: dict[str, str],
                                                     e2e_sandbox: SandboxServer, tmp_path: Path) -> None:
    e2e_sandbox.add_account("poor-key", credits=15)
    env = {**dag_env, "AIRFLOW_CONN_KIE_DEFAULT": connection_env("kie", e2e_sandbox.url, "poor-key")}
    run = airflow_home.dags_test("sora_watermark_batch", {"video_urls": URLS, "output_path": f"file://{tmp_path}/"},
                                 extra_env=env)
    assert run.returncode != 0
    assert "balance is 15 credits but 3 video(s) cost 30" in run.stdout + run.stderr
    assert e2e_sandbox.summary()["requests"].get("createTask", 0) == 0


def test_mapped_dag(airflow_home: AirflowCli, dag_env: dict[str, str], e2e_sandbox: SandboxServer,
                    tmp_path: Path) -> None:
    run = airflow_home.dags_test("sora_watermark_mapped",
                                 {"video_urls": [*URLS, URLS[0]], "output_path": f"file://{tmp_path}/"},
                                 extra_env=dag_env)
    expect_success(run)
    assert landed_ids(tmp_path) == {u.rsplit("/", 1)[1] for u in URLS}
    assert e2e_sandbox.summary()["charges_by_video"] == {u: 1 for u in URLS}
    assert {s["airflow"]["map_index"] for s in sidecars(tmp_path)} == {0, 1, 2}  # type: ignore[index]


def test_sensor_dag(airflow_home: AirflowCli, dag_env: dict[str, str], e2e_sandbox: SandboxServer,
                    tmp_path: Path) -> None:
    run = airflow_home.dags_test("sora_watermark_sensor", {"video_url": URLS[0], "output_path": f"file://{tmp_path}/"},
                                 extra_env=dag_env)
    expect_success(run)
    assert landed_ids(tmp_path) == {URLS[0].rsplit("/", 1)[1]}


def test_catalog_dag(airflow_home: AirflowCli, dag_env: dict[str, str], tmp_path: Path) -> None:
    first = airflow_home.dags_test("sora_watermark_batch", {"video_urls": URLS, "output_path": f"file://{tmp_path}/"},
                                   extra_env=dag_env)
    expect_success(first)
    run = airflow_home.dags_test("sora_clean_videos_catalog", {},
                                 extra_env={**dag_env, "AIRFLOW_VAR_SORA_OUTPUT_PATH": f"file://{tmp_path}/"})
    expect_success(run)
    catalog = json.loads((tmp_path / "catalog.json").read_text())
    assert catalog["count"] == 3
    assert {v["source_url"] for v in catalog["videos"]} == set(URLS)


def test_provider_cli_and_connection_types(airflow_home: AirflowCli) -> None:
    info = airflow_home.run("providers", "get", "airflow-provider-sora", "--output", "json")
    assert info.returncode == 0, info.stderr[-2000:]
    assert "airflow-provider-sora" in info.stdout
    added = airflow_home.run("connections", "add", "my_kie", "--conn-type", "kie", "--conn-password", KIE_KEY)
    assert added.returncode == 0, added.stderr[-2000:]
    listed = airflow_home.run("connections", "get", "my_kie", "--output", "json")
    assert '"conn_type": "kie"' in listed.stdout.replace("'", '"') or "kie" in listed.stdout
    assert KIE_KEY not in added.stdout + added.stderr
    ss = airflow_home.run("connections", "add", "my_savesora", "--conn-type", "savesora", "--conn-password", "x")
    assert ss.returncode == 0, ss.stderr[-2000:]


def test_secret_keys_absent_from_task_logs(airflow_home: AirflowCli, dag_env: dict[str, str], tmp_path: Path) -> None:
    run = airflow_home.dags_test("sora_watermark_batch", {"video_urls": URLS, "output_path": f"file://{tmp_path}/"},
                                 extra_env=dag_env)
    expect_success(run)
    logs = "".join(p.read_text(errors="replace") for p in (airflow_home.home / "logs").rglob("*") if p.is_file())
    assert "remove_watermarks" in logs + run.stdout
    for text in (run.stdout, run.stderr, logs):
        assert KIE_KEY not in text
    assert all(KIE_KEY not in p.read_text() for p in tmp_path.rglob("*.json"))
