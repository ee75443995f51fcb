"""A person watching the task log sees progress with counts before the run ends, and a dashboard receives the
``sora.`` metrics: both from real ``airflow dags test`` runs against the sandbox."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_sora.sandbox import SandboxServer
from tests.conftest import VIDEO_URLS
from tests.e2e.conftest import AirflowCli

pytestmark = pytest.mark.e2e
URLS = VIDEO_URLS[20:26]
PROGRESS = re.compile(r"Sora progress \[(?P<stage>\w+)\]: (?P<landed>\d+)/(?P<total>\d+) landed.*"
                      r"(?P<submitted>\d+)/\d+ submitted, (?P<running>\d+) running.*credits charged")


def stream_dags_test(cli: AirflowCli, dag_id: str, conf: dict[str, object], env: dict[str, str]
                     ) -> tuple[int, list[tuple[float, str]]]:
    """Run ``airflow dags test`` and keep each output line with the moment it arrived."""
    proc = subprocess.Popen([sys.executable, "-m", "airflow", "dags", "test", dag_id, "--conf", json.dumps(conf)],
                            env={**cli.env, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = [(time.monotonic(), line.rstrip("\n")) for line in proc.stdout]
    return proc.wait(timeout=240), lines


@pytest.mark.parametrize("deferrable", ["false", "true"])
def test_progress_lines_with_counts_come_while_the_batch_runs(
        airflow_home: AirflowCli, dag_env: dict[str, str], e2e_sandbox: SandboxServer, tmp_path: Path,
        deferrable: str) -> None:
    e2e_sandbox.state.config.latency = 3.0  # long enough to be seen waiting
    try:
        code, lines = stream_dags_test(
            airflow_home, "sora_watermark_batch", {"video_urls": URLS, "output_path": f"file://{tmp_path}/out/"},
            {**dag_env, "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": deferrable})
    finally:
        e2e_sandbox.state.config.latency = 0.4
    text = "\n".join(line for _, line in lines)
    assert code == 0, text[-4000:]
    progress = [(at, m) for at, line in lines if (m := PROGRESS.search(line))]
    assert progress, text[-4000:]
    assert all(int(m["total"]) == len(URLS) for _, m in progress)
    stages = [m["stage"] for _, m in progress]
    assert "submitting" in stages and "waiting" in stages and "landing" in stages and stages[-1] == "done"
    final_at, final = next((at, line) for at, line in reversed(lines) if "Sora watermark removal" in line)
    assert "finished successfully: 6 landed" in final and "60 credits charged" in final
    during = [m for at, m in progress if int(m["landed"]) < len(URLS) and at < final_at - 1.0]
    assert during, "no progress line came before the batch had landed everything"
    assert any(int(m["running"]) > 0 for m in during)  # seen while tasks ran at the service
    if deferrable == "true":
        deferred_at = next(at for at, line in lines if "Deferring:" in line)
        assert any(at > deferred_at and m["stage"] == "waiting" for at, m in progress)  # the trigger's lines


@pytest.fixture
def statsd_listener() -> Iterator[tuple[int, list[str]]]:
    """A real StatsD server: a UDP socket on loopback that keeps every metric line it receives."""
    received: list[str] = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            try:
                data = sock.recv(65535)
            except TimeoutError:
                continue
            received.extend(data.decode(errors="replace").splitlines())

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    yield sock.getsockname()[1], received
    stop.set()
    thread.join()
    sock.close()


def test_sora_metrics_reach_a_statsd_server(airflow_home: AirflowCli, dag_env: dict[str, str],
                                            e2e_sandbox: SandboxServer, tmp_path: Path,
                                            statsd_listener: tuple[int, list[str]]) -> None:
    port, received = statsd_listener
    env = {**dag_env, "AIRFLOW__METRICS__STATSD_ON": "True", "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
           "AIRFLOW__METRICS__STATSD_PORT": str(port), "AIRFLOW__METRICS__STATSD_PREFIX": "airflow"}
    urls = URLS[:3]
    e2e_sandbox.set_faults(endpoints=["createTask"], rate_limit={"count": 1}, retry_after=0.2)
    run = airflow_home.dags_test("sora_watermark_batch",
                                 {"video_urls": urls, "output_path": f"file://{tmp_path}/out/"}, extra_env=env)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    time.sleep(0.5)
    sora = {}
    for line in received:
        name, _, value = line.partition(":")
        if name.startswith("airflow.sora."):
            sora.setdefault(name, []).append(value)
    assert "airflow.sora.videos.landed" in sora and sora["airflow.sora.videos.landed"][0].startswith("3|c")
    assert "airflow.sora.creates.rate_limited" in sora and "airflow.sora.errors.rate_limited" in sora
    charged = sum(int(v.split("|")[0]) for v in sora["airflow.sora.credits.charged"])
    assert charged == 30  # 3 Kie tasks at 10 credits
    assert all(v.endswith("|ms") for v in sora["airflow.sora.service.latency"])
    assert "airflow.sora.landing.bytes" in sora and "airflow.sora.landing.throughput" in sora
    balance = float(sora["airflow.sora.balance"][-1].split("|")[0])
    assert balance in e2e_sandbox.summary()["balances"].values()
