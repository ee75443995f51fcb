"""The moto S3 server as a process of its own (the sandbox process lives in the package)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.deployment.cluster import free_port, wait_for


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

    def connection(self, endpoint_url: str | None = None) -> str:
        """An Airflow connection to this server (or to a proxy in front of it at ``endpoint_url``)."""
        return json.dumps({"conn_type": "aws", "login": "testing", "password": "testing",
                           "extra": {"endpoint_url": endpoint_url or self.url, "region_name": "us-east-1"}})

    def open_uploads(self, bucket: str, prefix: str = "") -> list[str]:
        """Keys of multipart uploads started and neither completed nor aborted (they hold storage)."""
        listing = self.client().list_multipart_uploads(Bucket=bucket, Prefix=prefix)
        return [upload["Key"] for upload in listing.get("Uploads", [])]

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait(10)

