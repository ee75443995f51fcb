"""One real deployment for the whole deployment suite: Celery workers, PostgreSQL, Redis, sandbox, S3."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from airflow_sora.sandbox.process import SandboxProcess
from tests.deployment.cluster import REDIS, Deployment, missing_services
from tests.deployment.services import S3Process
from tests.s3proxy import S3FaultProxy

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
BUCKET = "chaos"
#: What the cluster's sandbox starts with; cases that change a setting put it back to this.
SANDBOX_SETTINGS = {"latency": 1.0, "latency_jitter": 0.3, "invisible_for": 0.3, "result_size": 32 * 1024}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = missing_services()
    for item in items:
        if "tests/deployment/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.deployment)
            if reason:
                item.add_marker(pytest.mark.skip(reason=f"deployment tests need PostgreSQL and Redis: {reason}"))


@dataclass
class Cluster:
    deployment: Deployment
    sandbox: SandboxProcess
    s3: S3Process
    results: list[dict[str, Any]] = field(default_factory=list)
    trigger_rows: list[dict[str, Any]] = field(default_factory=list)
    runs: list[tuple[str, str]] = field(default_factory=list)
    proxy: S3FaultProxy | None = None  # in front of ``s3``: the ``aws_faulty`` connection goes through it

    @property
    def keys(self) -> dict[str, str]:
        return self.deployment.api_keys


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    deployment = Deployment(executor="CeleryExecutor", workers=2, worker_concurrency=4)
    keys = deployment.api_keys
    sandbox = SandboxProcess.start({keys["kie"]: 1_000_000, keys["savesora"]: 100_000},
                                   *[f"--{key.replace('_', '-')}={value}" for key, value in SANDBOX_SETTINGS.items()])
    s3 = S3Process.start()
    s3.create_bucket(BUCKET)
    proxy = S3FaultProxy(s3.url, seed=17).start()  # no fault until a case sets its rate
    deployment.extra_env.update({
        "AIRFLOW_CONN_KIE_DEFAULT": sandbox.connection("kie", keys["kie"], max_retries=8),
        # creates paced at 2/s: a worker killed "while creating" is almost always between two creates
        "AIRFLOW_CONN_KIE_PACED": sandbox.connection("kie", keys["kie"], create_limit=4, create_window=2),
        # every worker takes its creates from one account-wide window in the cluster's Redis
        "AIRFLOW_CONN_KIE_SHARED": sandbox.connection("kie", keys["kie"], create_limit=4, create_window=2,
                                                      rate_limiter_conn_id="sora_limiter"),
        "AIRFLOW_CONN_SORA_LIMITER": json.dumps({"conn_type": "redis", "host": REDIS[0], "port": REDIS[1],
                                                 "extra": {"db": deployment.redis_db}}),
        "AIRFLOW_CONN_SAVESORA_DEFAULT": sandbox.connection("savesora", keys["savesora"]),
        "AIRFLOW_CONN_AWS_DEFAULT": s3.connection(),
        "AIRFLOW_CONN_AWS_FAULTY": s3.connection(endpoint_url=proxy.url),
    })
    try:
        deployment.start()
        for dag_id in ("sora_watermark_batch", "sora_watermark_mapped"):
            deployment.wait_for_dag(dag_id)
        state = Cluster(deployment, sandbox, s3, proxy=proxy)
        yield state
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "chaos-results.json").write_text(json.dumps(state.results, indent=2))
    finally:
        time.sleep(0.5)
        deployment.stop()
        sandbox.stop()
        proxy.stop()
        s3.stop()
