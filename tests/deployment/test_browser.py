"""The "add connection" form for both connection types, in a real browser against the real api-server."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.deployment.conftest import ARTIFACTS, Cluster

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.deployment,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed"),
]
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.parametrize(("conn_type", "label", "base_url", "extras"), [
    ("kie", "Kie.ai", "https://api.kie.ai", {"read_timeout", "allow_private_result_hosts", "upload_method"}),
    ("savesora", "SaveSora", "https://savesora.com", {"read_timeout", "allow_private_result_hosts"}),
])
def test_add_connection_form(cluster: Cluster, tmp_path: Path, conn_type: str, label: str, base_url: str,
                             extras: set[str]) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    api = cluster.deployment.api_url
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(f"{api}/auth/token/login?next={api}/connections")
        page.get_by_role("button", name="Add Connection").click()
        page.wait_for_load_state("networkidle")
        page.get_by_role("combobox").first.click(force=True)
        page.keyboard.type(label)
        page.get_by_role("option", name=label, exact=True).click()
        page.locator("input[name='password']").wait_for()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"add-connection-{conn_type}.png"), full_page=True)

        password = page.locator("input[name='password']")
        assert password.get_attribute("type") == "password"
        assert password.get_attribute("placeholder") == f"your {label} API key"
        host = page.locator("input[name='host']")
        assert host.get_attribute("placeholder") == base_url
        labels = page.locator("label").all_inner_texts()
        assert any(text.strip() == "API key" for text in labels) and any(t.strip() == "Base URL" for t in labels)
        for hidden in ("login", "port", "schema"):
            assert page.locator(f"input[name='{hidden}']").count() == 0, f"{hidden} should be hidden"
        names = {n for n in page.locator("input").evaluate_all("els => els.map(e => e.name)") if n}
        assert {f"element_{e}" for e in extras} <= names
        if conn_type == "savesora":
            assert "element_upload_method" not in names
        browser.close()
