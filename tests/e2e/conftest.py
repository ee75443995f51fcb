"""``airflow dags test`` on a real SQLite Airflow home, with the sandbox and the S3 server over real sockets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from airflow_sora.host_window import HOST_WINDOW_DIR_ENV
from airflow_sora.sandbox import SandboxServer
from tests.conftest import KIE_KEY, SAVESORA_KEY, connection_env, fast_config

REPO = Path(__file__).resolve().parents[2]


@dataclass
class AirflowCli:
    home: Path
    env: dict[str, str]

    def run(self, *args: str, extra_env: dict[str, str] | None = None, timeout: float = 240
            ) -> subprocess.CompletedProcess[str]:
        window = {HOST_WINDOW_DIR_ENV: os.environ[HOST_WINDOW_DIR_ENV]}  # the running test's own (tests/conftest.py)
        return subprocess.run([sys.executable, "-m", "airflow", *args],
                              env={**self.env, **window, **(extra_env or {})},
                              capture_output=True, text=True, timeout=timeout)

    def dags_test(self, dag_id: str, conf: dict[str, object], extra_env: dict[str, str] | None = None
                  ) -> subprocess.CompletedProcess[str]:
        return self.run("dags", "test", dag_id, "--conf", json.dumps(conf), extra_env=extra_env)


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> AirflowCli:
    home = tmp_path_factory.mktemp("airflow-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": str(REPO),
    })
    cli = AirflowCli(home, env)
    migrated = cli.run("db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    return cli


@pytest.fixture(scope="module")
def e2e_sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(fast_config(), accounts={KIE_KEY: 100_000, SAVESORA_KEY: 10_000}) as server:
        yield server


@pytest.fixture
def dag_env(e2e_sandbox: SandboxServer) -> dict[str, str]:
    """Connections for the DAG run's processes, pointing at the sandbox."""
    e2e_sandbox.state.reset()
    return {
        "AIRFLOW_CONN_KIE_DEFAULT": connection_env("kie", e2e_sandbox.url, KIE_KEY),
        "AIRFLOW_CONN_SAVESORA_DEFAULT": connection_env("savesora", e2e_sandbox.url, SAVESORA_KEY),
    }
