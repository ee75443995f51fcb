"""Every metric the code can emit is listed, word for word, in the README and on the metrics page."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_sora.metrics import METRICS

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("page", ["README.md", "docs/metrics.md"])
def test_every_metric_is_listed_with_its_meaning(page: str) -> None:
    text = (REPO / page).read_text()
    for name, (kind, meaning) in METRICS.items():
        assert f"| `{name}` | {kind} | {meaning} |" in text, f"{page} does not list {name} as the code does"


def test_every_emitted_name_is_in_the_list() -> None:
    """The names the package passes to ``metrics.incr/gauge/timing`` all match a listed pattern."""
    import re

    listed = [re.compile(re.escape(n[len("sora."):]).replace("<status>", r"\w+").replace("<kind>", r"\w+") + "$")
              for n in METRICS]
    emitted = set()
    for path in (REPO / "airflow_sora").rglob("*.py"):
        for match in re.finditer(r"metrics\.(?:incr|gauge|timing)\(\s*f?\"([^\"]+)\"", path.read_text()):
            emitted.add(re.sub(r"\{[^}]+\}", "x", match.group(1)))
    assert emitted, "no metric emission found"
    for name in emitted:
        assert any(p.match(name) for p in listed), f"{name} is emitted but not listed in METRICS"
