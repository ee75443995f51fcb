"""Overlapping batch runs on the Celery workers share one account through the Redis window.

Three runs of 16 videos start at once on the ``kie_shared`` connection (4 creates per 2 s, the
account-wide window in the cluster's Redis) while the sandbox enforces that same limit: the account's limit
holds (no create refused), every video is paid exactly once and lands. Each run alone may send at the full
rate, so without the shared window the three would meet at 429s.
"""

from __future__ import annotations

import itertools

import httpx
import pytest

from tests.deployment import test_chaos as chaos
from tests.deployment.conftest import Cluster

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(600)]


def set_account_limit(cluster: Cluster, limit: int, window: float) -> None:
    httpx.post(f"{cluster.sandbox.url}/_sandbox/config",
               json={"create_limit": limit, "create_window": window}).raise_for_status()


def test_overlapping_runs_share_the_account_through_redis(cluster: Cluster) -> None:
    urls = chaos.case_urls(48)  # 16 a run: 8 s of creates each at the full rate, so the runs overlap
    batches = [urls[i::3] for i in range(3)]
    prefix = "shared_pacing/"
    set_account_limit(cluster, 4, 2.0)
    try:
        creates_before = cluster.sandbox.summary()["requests"].get("createTask", 0)
        runs = [chaos.trigger(cluster, chaos.BATCH, batch, prefix, {"conn_id": "kie_shared"}) for batch in batches]
        states = [cluster.deployment.wait_for_run(chaos.BATCH, run_id) for run_id in runs]
        creates = cluster.sandbox.summary()["requests"].get("createTask", 0) - creates_before
    finally:
        set_account_limit(cluster, 20, 10.0)
    row = chaos.check_invariants(cluster, "shared_pacing", chaos.BATCH, runs, urls, prefix,
                                 faults="three runs at once, one account-wide window in Redis")
    assert states == ["success"] * 3, row
    assert row["charged"] == row["landed"] == len(urls) and set(chaos.paid(cluster, urls).values()) == {1}, row
    charged_at = {c["video_url"]: c["at"] for c in cluster.sandbox.charges() if c["video_url"] in urls}
    spans = sorted((min(charged_at[u] for u in b), max(charged_at[u] for u in b)) for b in batches)
    assert all(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans)), f"runs did not overlap: {spans}"
    assert creates == len(urls), f"{creates - len(urls)} creates refused: the account's limit did not hold"
