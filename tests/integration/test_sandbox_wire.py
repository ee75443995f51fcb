"""The sandbox's wire format, byte for byte where clients depend on it: envelopes, statuses, admin answers, files."""

from __future__ import annotations

import httpx
import pytest

from airflow_sora.sandbox import SandboxServer
from tests.conftest import KIE_KEY, SAVESORA_KEY, VIDEO_URLS

HEADERS = {"Authorization": f"Bearer {KIE_KEY}"}


def test_unknown_route_gets_the_envelope(sandbox: SandboxServer) -> None:
    response = httpx.get(f"{sandbox.url}/api/v1/nowhere")
    assert response.status_code == 404
    assert response.json() == {"code": 404, "msg": "Not Found", "data": None}


@pytest.mark.parametrize("style", ["body", "status"])
def test_savesora_error_carries_data_and_maps_status(sandbox: SandboxServer, style: str) -> None:
    sandbox.set_faults(error_style=style)
    sandbox.add_account("poor", 0.5)
    response = httpx.post(f"{sandbox.url}/api/v1/download", json={"api_key": "poor", "video_url": VIDEO_URLS[0]})
    assert response.status_code == (402 if style == "status" else 200)
    assert response.json() == {"code": 4007, "msg": "insufficient credits",
                               "data": {"current_credits": 0.5, "required_credits": 1.0}}
    missing = httpx.post(f"{sandbox.url}/api/v1/credits", json={})
    assert (missing.status_code, missing.json()["code"]) == ((401 if style == "status" else 200), 4001)


def test_request_faults_answer_in_each_apis_codes(sandbox: SandboxServer) -> None:
    sandbox.set_faults(error_style="status", server_error={"count": 2}, rate_limit={"count": 1}, retry_after=1.5)
    kie = httpx.get(f"{sandbox.url}/api/v1/chat/credit", headers=HEADERS)
    assert (kie.status_code, kie.json()["code"], kie.headers["retry-after"]) == (429, 429, "1.5")
    kie = httpx.get(f"{sandbox.url}/api/v1/chat/credit", headers=HEADERS)
    assert (kie.status_code, kie.json()) == (500, {"code": 500, "msg": "internal server error", "data": None})
    savesora = httpx.post(f"{sandbox.url}/api/v1/credits", json={"api_key": SAVESORA_KEY})
    assert (savesora.status_code, savesora.json()["code"]) == (500, 5001)
    sandbox.set_faults(non_json={"count": 1})
    page = httpx.get(f"{sandbox.url}/api/v1/chat/credit", headers=HEADERS)
    assert page.status_code == 502 and page.headers["content-type"] == "text/html"
    assert sandbox.summary()["requests"] == {"credit": 3, "credits": 1}


def test_download_url_refreshes_only_own_files(sandbox: SandboxServer) -> None:
    def refresh(url: str) -> dict[str, object]:
        return httpx.post(f"{sandbox.url}/api/v1/common/download-url", headers=HEADERS, json={"url": url}).json()

    fresh = refresh(f"{sandbox.url}/files/task_1/clean.mp4?expires=1&sig=x")
    assert fresh["code"] == 200 and httpx.get(str(fresh["data"])).status_code == 200
    assert refresh("https://example.com/files/a.mp4")["code"] == 422


def test_truncated_download_announces_the_full_length(sandbox: SandboxServer) -> None:
    sandbox.set_faults(truncate_download={"count": 1})
    link = sandbox._httpd.file_url("/files/x/clean.mp4", 60)
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream("GET", link) as response:
        assert int(response.headers["content-length"]) == sandbox.state.config.result_size
        response.read()
    assert len(httpx.get(link).content) == sandbox.state.config.result_size


def test_admin_answers(sandbox: SandboxServer) -> None:
    admin = f"{sandbox.url}/_sandbox"
    assert httpx.get(f"{admin}/health").json() == {"ok": True}
    faults = httpx.post(f"{admin}/faults", json={"maintenance": {"count": 2}}).json()
    assert faults["maintenance"] == {"rate": 0.0, "count": 2} and httpx.get(f"{admin}/faults").json() == faults
    assert httpx.post(f"{admin}/config", json={"latency": 1}).json() == {"ok": True}
    assert sandbox.state.config.latency == 1.0 and isinstance(sandbox.state.config.latency, float)
    unknown = httpx.post(f"{admin}/config", json={"nope": 1})
    assert (unknown.status_code, unknown.json()) == (400, {"error": "unknown setting nope"})
    assert httpx.post(f"{admin}/reset").json() == {"reset": True}
    assert sandbox.state.faults.maintenance.count == 0
    missing = httpx.get(f"{admin}/nope")
    assert (missing.status_code, missing.json()) == (404, {"error": "unknown admin call GET nope"})
