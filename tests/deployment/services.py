"""The sandbox and the moto S3 server as processes of their own, as a deployment would reach them."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.deployment.cluster import free_port, wait_for


@dataclass
class SandboxProcess:
    url: str
    popen: subprocess.Popen[bytes]

    @classmethod
    def start(cls, accounts: dict[str, float], *args: str) -> SandboxProcess:
        port_file = Path(tempfile.mkdtemp()) / "port"
        command = [sys.executable, "-m", "airflow_sora.sandbox", "--port", "0", "--port-file", str(port_file),
                   *[f"--account={key}={credits}" for key, credits in accounts.items()], *args]
        popen = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: port_file.exists() and port_file.read_text(), 30, "the sandbox")
        return cls(f"http://127.0.0.1:{port_file.read_text()}", popen)

    def summary(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/_sandbox/summary").json())

    def charges(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.url}/_sandbox/charges").json())

    def set_faults(self, **faults: Any) -> None:
        httpx.post(f"{self.url}/_sandbox/faults", json=faults).raise_for_status()

    def reset(self) -> None:
        httpx.post(f"{self.url}/_sandbox/reset").raise_for_status()

    def connection(self, conn_type: str, key: str, **extra: Any) -> str:
        return json.dumps({"conn_type": conn_type, "host": self.url, "password": key,
                           "extra": {"allow_private_result_hosts": True, **extra}})

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait(10)


@dataclass
class S3Process:
    url: str
    popen: subprocess.Popen[bytes]

    @classmethod
    def start(cls) -> S3Process:
        port = free_port()
        popen = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p",
                                  str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(url).status_code < 500, 30, "the S3 server")
        return cls(url, popen)

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1", aws_access_key_id="testing",
                            aws_secret_access_key="testing")

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str) -> dict[str, int]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}

    def read(self, bucket: str, key: str) -> bytes:
        return bytes(self.client().get_object(Bucket=bucket, Key=key)["Body"].read())

    def connection(self) -> str:
        return json.dumps({"conn_type": "aws", "login": "testing", "password": "testing",
                           "extra": {"endpoint_url": self.url, "region_name": "us-east-1"}})

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait(10)

