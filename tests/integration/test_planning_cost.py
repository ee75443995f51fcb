"""Planning's cost follows the run, not the output folder's history (moto's S3 server over HTTP).

The folder is seeded with earlier landings straight into the server's store (the same process), then a run
asks about its own videos. Its S3 calls are counted at the provider's client: a small run into a large folder
looks its videos up instead of listing the folder, and what it decides (skipped, landed by this run,
verdicts) is exactly what a full listing decides.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_sora import landing, storage
from airflow_sora.landing import ResultLander
from airflow_sora.operators import SoraWatermarkRemoverOperator
from airflow_sora.sandbox import SandboxServer
from airflow_sora.storage import read_listed, read_present
from tests.conftest import VIDEO_URLS
from tests.integration.harness import TaskInstanceStandIn, run_try
from tests.integration.test_retry_safety import WorkerKilled, kill_on_sidecar

HISTORY = 600  # earlier landings: 1,200 objects, more than a listing page
PREFIX = "out/"


def history_id(i: int) -> str:
    return f"s_{10**9 + i:032x}"


def sidecar(post_id: str, size: int, run_id: str = "scheduled__2026-01-01T00:00:00+00:00",
            named: str | None = None) -> bytes:
    """A provenance sidecar as a landing by another run writes it."""
    return json.dumps({
        "schema": "airflow-provider-sora/provenance/v1", "source_url": f"https://sora.chatgpt.com/p/{post_id}",
        "post_id": named or post_id, "service": "kie", "task_id": f"task-{post_id}", "file": f"{post_id}.mp4",
        "sha256": "0" * 64, "size": size, "watermark_removed_by": "kie", "landed_at": "2026-01-01T00:00:00+00:00",
        "provider": "airflow-provider-sora",
        "airflow": {"dag_id": "sora_test", "task_id": "remove", "run_id": run_id, "map_index": -1}}).encode()


def seed(bucket: str, objects: dict[str, bytes]) -> None:
    """Straight into the in-process server's store: thousands of objects in a moment, no request counted."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    for key, body in objects.items():
        backend.put_object(bucket, key, body)


def earlier_landings(count: int = HISTORY) -> dict[str, bytes]:
    objects: dict[str, bytes] = {}
    for i in range(count):
        post_id = history_id(i)
        objects[f"{PREFIX}{post_id}.mp4"] = b"\0" * 16
        objects[f"{PREFIX}{post_id}.json"] = sidecar(post_id, 16)
    return objects


@pytest.fixture
def history(s3_server: str, s3_bucket: str) -> str:
    seed(s3_bucket, earlier_landings())
    return s3_bucket


@pytest.fixture
def calls() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Every S3 call the provider makes through its client for ``aws_default``, with its parameters."""
    made: list[tuple[str, dict[str, Any]]] = []
    client = storage._s3_client("aws_default")

    def count(model: Any, params: dict[str, Any], **_: Any) -> None:
        made.append((model.name, params))

    client.meta.events.register("before-parameter-build.s3", count, unique_id="planning-cost")
    try:
        yield made
    finally:
        client.meta.events.unregister("before-parameter-build.s3", unique_id="planning-cost")


def operations(made: list[tuple[str, dict[str, Any]]]) -> Counter[str]:
    return Counter(name for name, _ in made)


def output_listings(made: list[tuple[str, dict[str, Any]]]) -> int:
    return sum(1 for name, params in made if name == "ListObjectsV2" and params.get("Prefix") == PREFIX)


@pytest.fixture(params=["lookups", "whole listing"])
def planning(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each decision test runs twice: as planning now works, and with the output folder listed whole (as it
    was before), so both must decide the same."""
    if request.param == "whole listing":
        monkeypatch.setattr(landing, "listing_budget", lambda names, at_least=0: 10**9)
    return str(request.param)


def test_a_run_into_a_folder_with_history_decides_as_a_whole_listing_does(
        sandbox_connections: SandboxServer, history: str, planning: str,
        calls: list[tuple[str, dict[str, Any]]]) -> None:
    """Skipped (landed by another run), a sidecar that lies about its video (paid and landed again), a video
    the service rejected in an earlier run (held back), and new videos (paid, landed)."""
    urls = VIDEO_URLS[:5]
    ids = [url.rsplit("/", 1)[1] for url in urls]
    verdict = {"schema_version": 1, "post_id": ids[2], "video_url": urls[2], "service": "kie", "kind": "rejected",
               "reason": "invalid video url", "at": "2026-01-01T00:00:00+00:00",
               "run": {"dag_id": "sora_test", "run_id": "scheduled__2026-01-01T00:00:00+00:00"}}
    seed(history, {f"{PREFIX}{ids[0]}.mp4": b"\0" * 16, f"{PREFIX}{ids[0]}.json": sidecar(ids[0], 16),
                   f"{PREFIX}{ids[1]}.mp4": b"\0" * 16, f"{PREFIX}{ids[1]}.json": sidecar(ids[1], 99),
                   f"{PREFIX}_state/_verdicts/{ids[2]}.json": json.dumps(verdict).encode()})
    output = f"s3://aws_default@{history}/{PREFIX}"
    result = run_try(SoraWatermarkRemoverOperator(task_id="remove", video_url=urls, output_path=output,
                                                  poll_interval=0.1, deferrable=False, fail_on_error=False))
    assert result.error is None, result.error
    statuses = {v["post_id"]: v["status"] for v in result.value["videos"]}
    assert statuses == {ids[0]: "skipped", ids[1]: "landed", ids[2]: "failed", ids[3]: "landed", ids[4]: "landed"}
    (held,) = [v for v in result.value["videos"] if v["post_id"] == ids[2]]
    assert "rejected it as invalid" in held["error"] and held["credits_charged"] == 0
    assert sandbox_connections.summary()["charges_by_video"] == {urls[1]: 1, urls[3]: 1, urls[4]: 1}
    if planning == "lookups":
        assert output_listings(calls) == 0  # the 1,200 objects of history were never listed
    else:
        assert output_listings(calls) >= 2


def test_a_retry_finds_what_it_landed_itself_by_lookups(sandbox_connections: SandboxServer, history: str,
                                                        planning: str, monkeypatch: pytest.MonkeyPatch,
                                                        calls: list[tuple[str, dict[str, Any]]]) -> None:
    """A try killed after a sidecar landed, before the record said so: the retry finds the sidecar of this run
    (by a lookup in a large folder) and reports the video landed without paying or landing it again."""
    urls = VIDEO_URLS[5:8]
    output = f"s3://aws_default@{history}/{PREFIX}"
    with monkeypatch.context() as patch:
        kill_on_sidecar(patch, before=False, nth=1)
        with pytest.raises(WorkerKilled):
            run_try(SoraWatermarkRemoverOperator(task_id="remove", video_url=urls, output_path=output,
                                                 poll_interval=0.1, deferrable=False))
    calls.clear()
    retry = run_try(SoraWatermarkRemoverOperator(task_id="remove", video_url=urls, output_path=output,
                                                 poll_interval=0.1, deferrable=False),
                    TaskInstanceStandIn(try_number=2))
    assert retry.error is None, retry.error
    assert retry.value["counts"]["landed"] == 3
    assert sandbox_connections.summary()["charges_by_video"] == {url: 1 for url in urls}
    if planning == "lookups":
        assert output_listings(calls) == 0


def test_lookups_and_a_whole_listing_agree_on_every_kind_of_leftover(history: str, monkeypatch: pytest.MonkeyPatch,
                                                                      calls: list[tuple[str, dict[str, Any]]]) -> None:
    """A video without its sidecar, a sidecar without its video, a sidecar naming another post, one that does
    not parse, sizes that disagree: none counts as landed, either way; the landed ones do."""
    odd = [f"s_{0xabc000 + i:032x}" for i in range(6)]
    seed(history, {f"{PREFIX}{odd[0]}.mp4": b"\0" * 16,
                   f"{PREFIX}{odd[1]}.json": sidecar(odd[1], 16),
                   f"{PREFIX}{odd[2]}.mp4": b"\0" * 16, f"{PREFIX}{odd[2]}.json": sidecar(odd[2], 16, named=odd[3]),
                   f"{PREFIX}{odd[3]}.mp4": b"\0" * 16, f"{PREFIX}{odd[3]}.json": b"{not json",
                   f"{PREFIX}{odd[4]}.mp4": b"\0" * 16, f"{PREFIX}{odd[4]}.json": sidecar(odd[4], 17)})
    asked = [*odd, history_id(0), history_id(HISTORY - 1), "s_" + "f" * 32]
    lander = ResultLander(ObjectStoragePath(f"s3://aws_default@{history}/{PREFIX}"))
    looked_up = lander.landed_copies(asked)
    assert operations(calls) == Counter({"GetObject": len(asked), "HeadObject": 2 + 2})  # 2 landed, odd[1], odd[4]
    monkeypatch.setattr(landing, "listing_budget", lambda names, at_least=0: 10**9)
    listed = lander.landed_copies(asked)
    assert set(looked_up) == set(listed) == {history_id(0), history_id(HISTORY - 1)}
    assert looked_up == listed


def test_a_listing_stopped_at_its_budget_answers_what_it_reached(history: str,
                                                                  calls: list[tuple[str, dict[str, Any]]]) -> None:
    """One page of a 1,200-object folder: the names it reached are answered from it (absent ones cost
    nothing), the names past it are read; together exactly what the whole listing answers."""
    folder = ObjectStoragePath(f"s3://aws_default@{history}/{PREFIX}")
    names = [f"{history_id(i)}.json" for i in range(0, HISTORY, 7)] + [f"{history_id(i)}.gone" for i in range(9)]
    names += ["zz-after-everything.json"]
    found = read_present(folder, names, pages=1)
    counted = operations(calls)
    assert counted["ListObjectsV2"] == 1
    whole = read_listed(folder, names)
    assert found == whole and len(found) == len(range(0, HISTORY, 7))
    # the first page holds the first 1,000 keys (500 videos): only names past it, or present, were read
    past_page = [n for n in names if n > f"{history_id(499)}.mp4"]
    present_in_page = [n for n in names if n <= f"{history_id(499)}.mp4" and n.endswith(".json")]
    assert counted["GetObject"] == len(past_page) + len(present_in_page)
