"""The sandbox honours the specs: task walk, callbacks (signed), admin API, CLI, fault switches, files."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from airflow_sora.sandbox import SandboxServer
from tests.conftest import KIE_KEY, VIDEO_URLS, fast_config

HEADERS = {"Authorization": f"Bearer {KIE_KEY}"}


def create(url: str, **body: object) -> dict[str, object]:
    return httpx.post(f"{url}/api/v1/jobs/createTask", headers=HEADERS, json={
        "model": "sora-watermark-remover", "input": {"video_url": VIDEO_URLS[0], "upload_method": "s3"}, **body,
    }).json()


def test_task_walks_through_the_documented_states(sandbox: SandboxServer) -> None:
    # Each state lasts 0.5 s or more (not visible, waiting, queuing, generating), so even a slow first request
    # on a busy machine sees every one.
    sandbox.state.config.invisible_for = 0.5
    sandbox.state.config.latency = 5.0
    sandbox.state.config.latency_jitter = 0.0
    task_id = create(sandbox.url)["data"]["taskId"]  # type: ignore[index]
    seen: list[str] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        body = httpx.get(f"{sandbox.url}/api/v1/jobs/recordInfo", params={"taskId": task_id}, headers=HEADERS).json()
        state = body["msg"] if body["code"] == 422 else body["data"]["state"]
        if not seen or seen[-1] != state:
            seen.append(state)
        if state == "success":
            assert json.loads(body["data"]["resultJson"])["resultUrls"][0].startswith(sandbox.url)
            assert json.loads(body["data"]["param"])["input"]["video_url"] == VIDEO_URLS[0]
            break
        time.sleep(0.03)
    assert seen == ["recordInfo is null", "waiting", "queuing", "generating", "success"]


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], dict[str, object]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append((dict(self.headers), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], dict[str, object]]]]]:
    received: list[tuple[dict[str, str], dict[str, object]]] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("R", (_Receiver,), {"received": received}))
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/kie", received
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("fail", [False, True])
def test_signed_callbacks(receiver: tuple, fail: bool) -> None:
    url, received = receiver
    config = fast_config(webhook_key="whsec-test", latency=0.2, latency_jitter=0.0)
    with SandboxServer(config, accounts={KIE_KEY: 100}) as server:
        if fail:
            server.set_faults(task_fail={"count": 1})
        task_id = create(server.url, callBackUrl=url)["data"]["taskId"]  # type: ignore[index]
        for _ in range(100):
            if received:
                break
            time.sleep(0.05)
    headers, body = received[0]
    assert body["code"] == (501 if fail else 200)
    assert body["data"]["taskId"] == task_id and body["data"]["state"] == ("fail" if fail else "success")
    timestamp = headers["X-Webhook-Timestamp"]
    expected = base64.b64encode(hmac.new(b"whsec-test", f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest())
    assert hmac.compare_digest(headers["X-Webhook-Signature"].encode(), expected)
    assert abs(int(timestamp) - time.time()) < 30


def test_unsigned_callbacks_when_no_key(receiver: tuple, sandbox: SandboxServer) -> None:
    url, received = receiver
    create(sandbox.url, callBackUrl=url)
    for _ in range(100):
        if received:
            break
        time.sleep(0.05)
    assert "X-Webhook-Signature" not in received[0][0]


def test_synthetic_large_file_is_exact_and_streamed(sandbox: SandboxServer) -> None:
    size = 5 * 1024 * 1024 + 7
    with httpx.stream("GET", f"{sandbox.url}/_sandbox/synthetic/{size}.mp4") as response:
        assert int(response.headers["content-length"]) == size
        data = b"".join(response.iter_bytes())
    assert len(data) == size and data[4:8] == b"ftyp"


def test_result_links_expire_and_are_signed(sandbox: SandboxServer) -> None:
    good = sandbox._httpd.file_url("/files/x/clean.mp4", 60)
    assert httpx.get(good).status_code == 200
    assert httpx.get(good.replace("sig=", "sig=0")).status_code == 403
    assert httpx.get(sandbox._httpd.file_url("/files/x/clean.mp4", -1)).status_code == 403


def test_cli_with_faults_at_start_and_admin_api_at_run_time(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    process = subprocess.Popen([sys.executable, "-m", "airflow_sora.sandbox", "--port", "0", "--port-file",
                                str(port_file), "--account", f"{KIE_KEY}=50", "--latency", "0.2",
                                "--faults", json.dumps({"error_style": "status", "maintenance": {"count": 1}})],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            if port_file.exists() and port_file.read_text():
                break
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port_file.read_text()}"
        down = httpx.get(f"{url}/api/v1/chat/credit", headers=HEADERS)
        assert down.status_code == 455 and down.json()["code"] == 455
        assert httpx.get(f"{url}/api/v1/chat/credit", headers=HEADERS).json()["data"] == 50
        httpx.post(f"{url}/_sandbox/faults", json={"server_error": {"count": 1}})
        assert httpx.get(f"{url}/api/v1/chat/credit", headers=HEADERS).status_code == 500
        httpx.post(f"{url}/_sandbox/accounts", json={"api_key": "other", "credits": 5, "name": "other"})
        assert create(url)["code"] == 200
        summary = httpx.get(f"{url}/_sandbox/summary").json()
        assert summary["credits_by_video"] == {VIDEO_URLS[0]: 10}
        assert summary["balances"] == {"account-1": 40, "other": 5}
        assert httpx.get(f"{url}/_sandbox/charges").json()[0]["task_id"].startswith("task_")
    finally:
        process.terminate()
        output = process.communicate(timeout=10)
    assert KIE_KEY not in (output[0] + output[1]).decode()


def test_savesora_and_kie_share_one_port(sandbox: SandboxServer) -> None:
    from tests.conftest import SAVESORA_KEY

    body = httpx.post(f"{sandbox.url}/api/v1/credits", json={"api_key": SAVESORA_KEY}).json()
    assert body["data"]["total_credits"] == 1000
    assert httpx.get(f"{sandbox.url}/api/v1/chat/credit", headers=HEADERS).json()["data"] == 10_000
