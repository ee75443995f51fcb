"""The sandbox in a process of its own, as the demo, the benchmarks and deployment tests run it."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


@dataclass
class SandboxProcess:
    """``python -m airflow_sora.sandbox`` on a free port, with the admin API at hand."""

    url: str
    popen: subprocess.Popen[bytes]

    @classmethod
    def start(cls, accounts: dict[str, float], *args: str, timeout: float = 30.0) -> SandboxProcess:
        port_file = Path(tempfile.mkdtemp()) / "port"
        command = [sys.executable, "-m", "airflow_sora.sandbox", "--port", "0", "--port-file", str(port_file),
                   *[f"--account={key}={credits}" for key, credits in accounts.items()], *args]
        popen = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text()):
            if time.monotonic() > deadline or popen.poll() is not None:
                popen.kill()
                raise RuntimeError("the sandbox did not start")
            time.sleep(0.05)
        return cls(f"http://127.0.0.1:{port_file.read_text()}", popen)

    def summary(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/_sandbox/summary").json())

    def charges(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.url}/_sandbox/charges").json())

    def tasks(self) -> list[dict[str, Any]]:
        """Every Kie task in create order, with its latency, polls and when a poll first saw it finished."""
        return list(httpx.get(f"{self.url}/_sandbox/tasks").json())

    def set_faults(self, **faults: Any) -> None:
        httpx.post(f"{self.url}/_sandbox/faults", json=faults).raise_for_status()

    def reset(self) -> None:
        httpx.post(f"{self.url}/_sandbox/reset").raise_for_status()

    def connection(self, conn_type: str, key: str, **extra: Any) -> str:
        """An ``AIRFLOW_CONN_*`` value pointing at this sandbox (results come from loopback: allowed)."""
        return json.dumps({"conn_type": conn_type, "host": self.url, "password": key,
                           "extra": {"allow_private_result_hosts": True, **extra}})

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait(10)
