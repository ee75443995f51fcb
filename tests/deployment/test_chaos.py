"""Chaos on a real deployment: faults at the service, killed processes, operator actions.

After every case the invariants are checked from the sandbox's charge log and the bucket listing: each video
is charged at most once per logical run (exactly once when it landed), ends landed or reported with a reason,
no partial or zero-byte object sits at a final key, every landed object has a sidecar whose sha256 matches,
and the run's final state is what the faults justify. The money guard rails are checked across runs into one
folder: runs at once pay once per video, a later run does not pay again for what the service failed, and a
budget is never exceeded.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import signal
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest

from airflow_sora.sandbox.faults import Faults
from airflow_sora.services.kie import CREDITS_PER_TASK
from tests.deployment.cluster import wait_for
from tests.deployment.conftest import BUCKET, SANDBOX_SETTINGS, Cluster
from tests.deployment.services import S3Process

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(900)]
BATCH, MAPPED = "sora_watermark_batch", "sora_watermark_mapped"
_case_numbers = itertools.count(1)


def case_urls(count: int = 6) -> list[str]:
    number = next(_case_numbers)
    return [f"https://sora.chatgpt.com/p/s_{number:04x}{i:028x}" for i in range(1, count + 1)]


def set_faults(cluster: Cluster, **faults: Any) -> None:
    """Replace every fault switch: the defaults (no fault) plus ``faults``."""
    cluster.sandbox.set_faults(**{**Faults().model_dump(), **faults})


@contextmanager
def sandbox_settings(cluster: Cluster, **settings: Any) -> Iterator[None]:
    """Change sandbox settings for one case, then put back the ones the cluster started with."""
    config_url = f"{cluster.sandbox.url}/_sandbox/config"
    httpx.post(config_url, json=settings).raise_for_status()
    try:
        yield
    finally:
        httpx.post(config_url, json={key: SANDBOX_SETTINGS[key] for key in settings}).raise_for_status()


def remove_task_instances(cluster: Cluster, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    return [t for t in cluster.deployment.task_instances(dag_id, run_id) if t["task_id"].startswith("remove")]


def manifests(cluster: Cluster, dag_id: str, run_id: str) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    found = []
    for ti in remove_task_instances(cluster, dag_id, run_id):
        manifest = None
        for key in ("return_value", "manifest"):
            manifest = cluster.deployment.xcom(dag_id, run_id, ti["task_id"], key, ti.get("map_index", -1))
            if manifest:
                break
        found.append((ti, manifest))
    return found


def final_videos(cluster: Cluster, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
    """Each video's line in the run's final manifest(s), by URL."""
    return {video["video_url"]: video for _ti, manifest in manifests(cluster, dag_id, run_id)
            for video in (manifest or {}).get("videos", [])}


def paid(cluster: Cluster, urls: list[str]) -> Counter[str]:
    """Charges in the sandbox's log for ``urls`` (refunds excluded), by URL."""
    return Counter(c["video_url"] for c in cluster.sandbox.charges() if not c["refunded"] and c["video_url"] in urls)


def sidecar_of(cluster: Cluster, prefix: str, url: str) -> dict[str, Any]:
    return dict(json.loads(cluster.s3.read(BUCKET, f"{prefix}{url.rsplit('/', 1)[1]}.json")))


class Store(Protocol):
    """Where a case's videos land, read without the provider: the S3 server, or a local folder."""

    def objects(self, bucket: str) -> dict[str, int]: ...
    def read(self, bucket: str, key: str) -> bytes: ...


@dataclass
class LocalFolder:
    """A local output folder seen as a bucket: keys are paths relative to ``root``, hidden files included."""

    root: Path

    def objects(self, bucket: str) -> dict[str, int]:
        return {str(p.relative_to(self.root)): p.stat().st_size for p in self.root.rglob("*") if p.is_file()}

    def read(self, bucket: str, key: str) -> bytes:
        return (self.root / key).read_bytes()


def strays(store: Store, prefix: str) -> list[str]:
    """Temporary files a failed write left (``.<name>.<hex>.part``), hidden files, and, on S3, multipart uploads
    still in progress: none may outlive a landing, failed or not."""
    left = [k for k in store.objects(BUCKET) if k.startswith(prefix)
            and (k.rsplit("/", 1)[-1].startswith(".") or k.endswith(".part"))]
    if isinstance(store, S3Process):
        left += [f"in-progress upload {key}" for key in store.open_uploads(BUCKET, prefix)]
    return left


def check_invariants(cluster: Cluster, name: str, dag_id: str, runs: list[str], urls: list[str], prefix: str,
                     *, faults: str, runs_per_url: int = 1, store: Store | None = None,
                     no_strays: bool = False) -> dict[str, Any]:
    store = store or cluster.s3
    charges = paid(cluster, urls)
    objects = {k: v for k, v in store.objects(BUCKET).items() if k.startswith(prefix) and "/_state/" not in k}
    assert all(size > 0 for size in objects.values()), f"zero-byte object under {prefix}: {objects}"
    if no_strays:
        assert not strays(store, prefix), f"left behind under {prefix}: {strays(store, prefix)}"
    landed: set[str] = set()
    for key in (k for k in objects if k.endswith(".mp4") and not k.endswith(".source.mp4")):
        sidecar_key = key[: -len(".mp4")] + ".json"
        assert sidecar_key in objects, f"{key} has no sidecar"
        sidecar = json.loads(store.read(BUCKET, sidecar_key))
        body = store.read(BUCKET, key)
        assert hashlib.sha256(body).hexdigest() == sidecar["sha256"] and len(body) == sidecar["size"], key
        assert sidecar["ai_generated"] is True
        landed.add(sidecar["source_url"])
    reported: dict[str, str] = {}
    for run_id in runs:
        for ti, manifest in manifests(cluster, dag_id, run_id):
            if manifest:
                for video in manifest["videos"]:
                    if video["status"] in ("failed", "rejected", "not_submitted"):
                        assert video["error"], video
                        reported.setdefault(video["video_url"], video["error"])
            elif ti["state"] != "success":
                video_url = ti.get("rendered_map_index") if dag_id == MAPPED else None
                for url in [video_url] if video_url in urls else urls:
                    reported.setdefault(url, f"task {ti['task_id']} ended {ti['state']}")
    lost = [u for u in urls if u not in landed and u not in reported]
    duplicates = sum(max(0, n - runs_per_url) for n in charges.values())
    assert not lost, f"lost without a reason: {lost}"
    assert duplicates == 0, f"charged more than once per run: {charges}"
    for url in landed:
        assert charges[url] >= 1, f"{url} landed but was never charged"
    row = {"case": name, "faults": faults, "runs": len(runs), "videos": len(urls),
           "charged": sum(charges.values()), "landed": len(landed & set(urls)), "reported": len(reported),
           "lost": len(lost), "duplicates": duplicates,
           "states": [cluster.deployment.run_state(dag_id, r) for r in runs]}
    cluster.results.append(row)
    return row


def trigger(cluster: Cluster, dag_id: str, urls: list[str], prefix: str, conf: dict[str, Any] | None = None) -> str:
    """A new DAG run over ``urls`` into ``prefix`` of the bucket (what a schedule or a person starts)."""
    run_id = cluster.deployment.trigger(dag_id, {"video_urls": urls, "output_path": f"s3://aws_default@{BUCKET}/{prefix}",
                                                 **(conf or {})})
    cluster.runs.append((dag_id, run_id))
    return run_id


def run_case(cluster: Cluster, name: str, *, faults: dict[str, Any], expect: str = "success", dag_id: str = BATCH,
             conf: dict[str, Any] | None = None, action: Callable[[Cluster, str, list[str]], None] | None = None,
             urls: list[str] | None = None, description: str | None = None) -> dict[str, Any]:
    urls = urls or case_urls()
    prefix = f"{name}/"
    set_faults(cluster, **faults)
    run_id = trigger(cluster, dag_id, urls, prefix, conf)
    try:
        if action:
            action(cluster, run_id, urls)
        state = cluster.deployment.wait_for_run(dag_id, run_id, timeout=600)
    finally:
        set_faults(cluster)
    row = check_invariants(cluster, name, dag_id, [run_id], urls, prefix, faults=description or json.dumps(faults))
    assert state == expect, f"{name}: run ended {state}, expected {expect}; {row}"
    return row


# faults at the service -------------------------------------------------------------------------------------
def test_429_storm(cluster: Cluster) -> None:
    row = run_case(cluster, "storm429", faults={"rate_limit": {"rate": 0.5}, "retry_after": 0.2},
                   description="429 on half of all calls")
    assert row["landed"] == row["videos"]


def test_ten_percent_5xx(cluster: Cluster) -> None:
    row = run_case(cluster, "errors5xx", faults={"server_error": {"rate": 0.1}, "error_style": "status"},
                   description="10% HTTP 500 on all calls")
    assert row["landed"] == row["videos"]


def test_maintenance_window(cluster: Cluster) -> None:
    row = run_case(cluster, "maintenance455", faults={"maintenance": {"count": 6}},
                   description="455 for the first 6 calls")
    assert row["landed"] == row["videos"]


def test_slow_replies(cluster: Cluster) -> None:
    row = run_case(cluster, "slow", faults={"slow_reply": {"rate": 0.3}, "slow_seconds": 2.0},
                   description="30% of replies 2 s late")
    assert row["landed"] == row["videos"]


def test_connection_resets_on_reads(cluster: Cluster) -> None:
    row = run_case(cluster, "resets", faults={"connection_reset": {"rate": 0.2},
                                              "endpoints": ["recordInfo", "download-url", "credit"]},
                   description="20% connection resets on polls and credit checks")
    assert row["landed"] == row["videos"]


def test_connection_reset_on_a_create_is_reported_not_repaid(cluster: Cluster) -> None:
    row = run_case(cluster, "create_reset", faults={"connection_reset": {"count": 1}, "endpoints": ["createTask"]},
                   expect="failed", description="one create's connection reset after sending")
    assert row["landed"] == row["videos"] - 1 and row["reported"] == 1


def test_non_json_replies(cluster: Cluster) -> None:
    row = run_case(cluster, "nonjson", faults={"non_json": {"rate": 0.15}},
                   description="15% Cloudflare-style HTML pages")
    assert row["landed"] == row["videos"]


def test_tasks_failing_at_the_service(cluster: Cluster) -> None:
    urls = case_urls()
    row = run_case(cluster, "taskfail", faults={"fail_video_urls": urls[:2]}, urls=urls, expect="failed",
                   description="2 of 6 tasks fail at the service")
    assert row["landed"] == 4 and row["reported"] == 2


def test_expired_result_links(cluster: Cluster) -> None:
    row = run_case(cluster, "expired", faults={"expire_links": {"rate": 1.0}},
                   description="every result link already expired")
    assert row["landed"] == row["videos"]


def test_truncated_downloads(cluster: Cluster) -> None:
    row = run_case(cluster, "truncated", faults={"truncate_download": {"count": 2}},
                   description="2 downloads cut short")
    assert row["landed"] == row["videos"]


def test_mapped_under_faults(cluster: Cluster) -> None:
    row = run_case(cluster, "mapped", dag_id=MAPPED,
                   faults={"server_error": {"rate": 0.1}, "rate_limit": {"rate": 0.2}},
                   description="mapped DAG, 10% 500 and 20% 429")
    assert row["landed"] == row["videos"]


# killed processes -------------------------------------------------------------------------------------------
def wait_charges(cluster: Cluster, urls: list[str], at_least: int, timeout: float = 120) -> None:
    wait_for(lambda: sum(c["video_url"] in urls for c in cluster.sandbox.charges()) >= at_least, timeout,
             f"{at_least} charges")


def kill_workers(cluster: Cluster) -> None:
    deployment = cluster.deployment
    for name in [n for n in deployment.processes if n.startswith("worker-")]:
        deployment.processes[name].kill(signal.SIGKILL)
    for index, name in enumerate(sorted(n for n in deployment.processes if n.startswith("worker-"))):
        deployment.processes[name].popen.wait(30)
        deployment.start_worker(index)


def test_worker_killed_while_creating(cluster: Cluster) -> None:
    def kill_mid_submission(cluster: Cluster, run_id: str, urls: list[str]) -> None:
        wait_charges(cluster, urls, 3)
        kill_workers(cluster)

    row = run_case(cluster, "kill_creating", faults={}, conf={"conn_id": "kie_paced"}, urls=case_urls(10),
                   action=kill_mid_submission, description="SIGKILL both Celery workers after 3 of 10 creates")
    assert row["landed"] == row["videos"]


def test_worker_killed_while_landing(cluster: Cluster) -> None:
    def kill_mid_landing(cluster: Cluster, run_id: str, urls: list[str]) -> None:
        wait_for(lambda: cluster.sandbox.summary()["requests"].get("files", 0) >= 1, 180, "a download")
        kill_workers(cluster)

    with sandbox_settings(cluster, result_size=48 * 1024 * 1024):
        row = run_case(cluster, "kill_landing", faults={}, action=kill_mid_landing,
                       description="SIGKILL both Celery workers during 48 MiB downloads")
    assert row["landed"] == row["videos"]


def wait_deferred(cluster: Cluster, dag_id: str, run_id: str) -> None:
    wait_for(lambda: any(t["state"] == "deferred" for t in remove_task_instances(cluster, dag_id, run_id)), 180,
             "the remove task to defer")


def test_triggerer_killed_while_deferred(cluster: Cluster) -> None:
    def kill_triggerer(cluster: Cluster, run_id: str, urls: list[str]) -> None:
        wait_deferred(cluster, BATCH, run_id)
        rows = wait_for(lambda: cluster.deployment.trigger_kwargs(), 60, "the trigger row")
        cluster.trigger_rows.extend(rows)
        assert rows[0]["classpath"] == "airflow_sora.triggers.kie.KieTaskTrigger"
        assert set(rows[0]["kwargs"]) == {"task_ids", "conn_id", "deadline", "poll_schedule",
                                          "max_consecutive_errors", "max_in_flight", "progress"}
        cluster.deployment.processes["triggerer"].kill(signal.SIGKILL)
        cluster.deployment.processes["triggerer"].popen.wait(30)
        cluster.deployment.start_component("triggerer", ["triggerer"])

    # Long enough tasks that the trigger row is still there when a fresh interpreter has imported Airflow to
    # read it (seconds on a busy two-core machine).
    with sandbox_settings(cluster, latency=20.0):
        row = run_case(cluster, "kill_triggerer", faults={}, action=kill_triggerer,
                       description="SIGKILL the triggerer while the batch is deferred; start a new one")
    assert row["landed"] == row["videos"]


def test_scheduler_restarted_mid_run(cluster: Cluster) -> None:
    def restart_scheduler(cluster: Cluster, run_id: str, urls: list[str]) -> None:
        wait_charges(cluster, urls, 1)
        cluster.deployment.processes["scheduler"].stop()
        cluster.deployment.start_component("scheduler", ["scheduler"])

    row = run_case(cluster, "restart_scheduler", faults={}, action=restart_scheduler,
                   description="restart the scheduler mid-run")
    assert row["landed"] == row["videos"]


# operator actions ------------------------------------------------------------------------------------------
def test_clear_a_finished_task_and_rerun(cluster: Cluster) -> None:
    urls = case_urls()
    row = run_case(cluster, "clear_rerun", faults={}, urls=urls, description="none (the first run)")
    run_id = cluster.runs[-1][1]
    deployment = cluster.deployment
    response = deployment.api("POST", f"/dags/{BATCH}/clearTaskInstances",
                              json={"dag_run_id": run_id, "task_ids": ["remove_watermarks"], "dry_run": False,
                                    "only_failed": False, "reset_dag_runs": True})
    response.raise_for_status()
    wait_for(lambda: deployment.run_state(BATCH, run_id) in ("queued", "running"), 60, "the cleared run to restart")
    assert deployment.wait_for_run(BATCH, run_id) == "success"
    again = check_invariants(cluster, "clear_rerun_after", BATCH, [run_id], urls, "clear_rerun/",
                             faults="clear the finished remove task and let it run again")
    assert again["charged"] == row["charged"] == len(urls)  # the re-run paid nothing


def test_mark_a_deferred_task_failed(cluster: Cluster) -> None:
    def mark_failed(cluster: Cluster, run_id: str, urls: list[str]) -> None:
        wait_deferred(cluster, BATCH, run_id)
        response = cluster.deployment.api("PATCH", f"/dags/{BATCH}/dagRuns/{run_id}/taskInstances/remove_watermarks",
                                          json={"new_state": "failed"})
        response.raise_for_status()

    with sandbox_settings(cluster, latency=8.0):
        row = run_case(cluster, "mark_failed", faults={}, action=mark_failed, expect="failed",
                       description="mark the deferred remove task failed")
    assert row["landed"] == 0 and row["charged"] == row["videos"]


def test_two_runs_with_overlapping_videos(cluster: Cluster) -> None:
    """Two runs at once into one folder pay once per video: the run that claims a shared video pays for it and
    lands it; the other waits for that file and reports it skipped."""
    urls = case_urls(8)
    first, second = urls[:6], urls[2:]
    shared = urls[2:6]
    prefix = "overlap/"
    runs = [trigger(cluster, BATCH, first, prefix), trigger(cluster, BATCH, second, prefix)]
    states = [cluster.deployment.wait_for_run(BATCH, r) for r in runs]
    row = check_invariants(cluster, "overlap", BATCH, runs, urls, prefix,
                           faults="two runs at once into one folder, 4 of 8 videos in both")
    assert states == ["success", "success"]
    assert row["charged"] == row["landed"] == len(urls), row  # one charge per distinct video across both runs
    assert set(paid(cluster, urls).values()) == {1}
    reports = [final_videos(cluster, BATCH, r) for r in runs]
    for run_id, asked, report in zip(runs, (first, second), reports, strict=True):
        assert set(report) == set(asked), f"{run_id} reported {sorted(report)}"
        for url in set(asked) - set(shared):
            assert report[url]["status"] == "landed", report[url]
            assert sidecar_of(cluster, prefix, url)["airflow"]["run_id"] == run_id
    for url in shared:
        lines = [report[url] for report in reports]
        assert sorted(line["status"] for line in lines) == ["landed", "skipped"], lines
        landed_by = runs[[line["status"] for line in lines].index("landed")]
        sidecar = sidecar_of(cluster, prefix, url)
        assert sidecar["airflow"]["run_id"] == landed_by, (url, sidecar["airflow"], landed_by)
        for line in lines:  # both runs name the same file; only the one that landed it paid
            assert line["sha256"] == sidecar["sha256"] and line["size"] == sidecar["size"], line
            assert line["credits_charged"] == (CREDITS_PER_TASK if line["status"] == "landed" else 0), line


def test_a_repeated_list_does_not_pay_again_for_failed_videos(cluster: Cluster) -> None:
    """A scheduled DAG repeats its list: the videos the service failed in the first run are not paid for again
    by the next run into the same folder (the folder remembers the verdict), and the landed ones are skipped."""
    urls = case_urls()
    failing = urls[:2]
    faults = {"fail_video_urls": failing}
    first = run_case(cluster, "repeat_failed", faults=faults, urls=urls, expect="failed",
                     description="2 of 6 tasks fail at the service (the first run)")
    first_run = cluster.runs[-1][1]
    assert first["charged"] == 6 and first["landed"] == 4 and first["reported"] == 2
    set_faults(cluster, **faults)  # the two still fail at the service: paying again would be charged again
    try:
        run_id = trigger(cluster, BATCH, urls, "repeat_failed/")
        state = cluster.deployment.wait_for_run(BATCH, run_id)
    finally:
        set_faults(cluster)
    row = check_invariants(cluster, "repeat_failed_next_run", BATCH, [run_id], urls, "repeat_failed/",
                           faults="a new run of the same list into the same folder, as a schedule makes; "
                                  "the 2 still fail at the service")
    assert state == "failed", f"the next run ended {state}: the 2 failed videos are reported failed again"
    assert row["charged"] == first["charged"], row  # nothing new charged
    assert all(paid(cluster, urls)[url] == 1 for url in failing)
    report = final_videos(cluster, BATCH, run_id)
    for url in failing:
        line = report[url]
        assert line["status"] == "failed" and line["credits_charged"] == 0, line
        assert "not paid for again" in line["error"].lower(), line["error"]
        assert f"failed it in run {first_run}" in line["error"], line["error"]
    for url in urls[2:]:
        assert report[url]["status"] == "skipped" and report[url]["credits_charged"] == 0, report[url]


def test_a_budget_caps_what_a_run_pays(cluster: Cluster) -> None:
    """``max_credits`` lets 3 of 6 videos be paid for: the rest are never sent and are reported not_submitted,
    which fails the run (the example DAG keeps the operator's ``fail_on_error=True``)."""
    urls = case_urls()
    budget = 3 * CREDITS_PER_TASK
    row = run_case(cluster, "budget", faults={}, urls=urls, conf={"max_credits": budget}, expect="failed",
                   description=f"none; max_credits={budget:g} pays for 3 of 6 videos")
    run_id = cluster.runs[-1][1]
    spent = sum(c["credits"] for c in cluster.sandbox.charges() if not c["refunded"] and c["video_url"] in urls)
    assert spent <= budget
    assert row["charged"] == row["landed"] == 3 and row["reported"] == 3 and row["lost"] == 0, row
    report = final_videos(cluster, BATCH, run_id)
    assert set(report) == set(urls)
    held_back = [url for url, line in report.items() if line["status"] == "not_submitted"]
    assert len(held_back) == 3 and not set(held_back) & set(paid(cluster, urls)), report
    for url in held_back:
        assert report[url]["credits_charged"] == 0, report[url]
        assert f"budget max_credits={budget:g} would be exceeded" in report[url]["error"], report[url]
    assert all(report[url]["status"] == "landed" for url in set(urls) - set(held_back)), report


# faults at the store the videos land in ---------------------------------------------------------------------
MIB = 1024 * 1024


@contextmanager
def small_disk(size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (a disk that really fills up), unmounted afterwards; skips where it cannot be made."""
    mount = Path(tempfile.mkdtemp(prefix="sora-disk-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a {size} tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(mount, ignore_errors=True)


def first_try_over(cluster: Cluster, run_id: str) -> dict[str, Any]:
    """Wait until the remove task's first try has failed (Airflow will retry it) or the run is over."""
    def over() -> dict[str, Any] | None:
        (ti,) = remove_task_instances(cluster, BATCH, run_id)
        ended = ti["state"] in ("up_for_retry", "failed", "success") or int(ti.get("try_number") or 1) > 1
        return ti if ended else None

    return dict(wait_for(over, 600, "the first try to end", interval=0.5))


def run_seconds(cluster: Cluster, run_id: str) -> float:
    """How long the run took, start to end, as Airflow recorded it (first try, retry delay and retry included)."""
    from datetime import datetime

    run = cluster.deployment.api("GET", f"/dags/{BATCH}/dagRuns/{run_id}").json()
    return round((datetime.fromisoformat(run["end_date"]) - datetime.fromisoformat(run["start_date"]))
                 .total_seconds(), 1)


def unpaired_videos(store: Store, prefix: str) -> list[str]:
    """What a consumer of the folder would take for a landed video with no provenance."""
    keys = store.objects(BUCKET)
    return [k for k in keys if k.startswith(prefix) and k.endswith(".mp4") and "/_state/" not in k
            and k[: -len(".mp4")] + ".json" not in keys]


def test_a_full_local_disk_then_space_freed_and_the_task_retried(cluster: Cluster) -> None:
    """40 videos of 1 MiB into a 24 MB filesystem: it fills mid-batch. While it is full no video is visible
    without its sidecar and no temporary file is left; freed, the retry lands the rest, paying nothing again."""
    urls = case_urls(40)
    prefix = "disk_full/"
    with small_disk("24m") as disk, sandbox_settings(cluster, result_size=MIB):
        folder = LocalFolder(disk)
        run_id = trigger(cluster, BATCH, urls, prefix, {"output_path": f"file://{disk}/{prefix}"})
        ti = first_try_over(cluster, run_id)
        full = {"unpaired": unpaired_videos(folder, prefix), "strays": strays(folder, prefix),
                "landed": sum(1 for k in folder.objects(BUCKET) if k.endswith(".mp4")),
                "charged": sum(paid(cluster, urls).values()), "state": ti["state"]}
        manifest = cluster.deployment.xcom(BATCH, run_id, "remove_watermarks", "manifest") or {}
        reasons = [v["error"] for v in manifest.get("videos", []) if v["status"] != "landed"]
        subprocess.run(["mount", "-o", "remount,size=256m", str(disk)], check=True)  # space freed
        state = cluster.deployment.wait_for_run(BATCH, run_id)
        row = check_invariants(cluster, "disk_full", BATCH, [run_id], urls, prefix, store=folder, no_strays=True,
                               faults="local output on a 24 MB filesystem, 40 videos of 1 MiB; space freed, the "
                                      "task retried")
    row["first_try"] = {**full, "reasons": sorted(set(reasons))[:3]}
    row["seconds"] = run_seconds(cluster, run_id)
    assert full["state"] == "up_for_retry", full
    assert full["unpaired"] == [] and full["strays"] == [], full
    assert 0 < full["landed"] < len(urls), full  # the disk did fill mid-batch
    assert not reasons or all("No space left on device" in r or "not submitted" in r or "task" in r
                              for r in reasons), reasons
    assert state == "success" and row["landed"] == len(urls) and row["charged"] == len(urls), row


def test_s3_throttling_a_fifth_of_all_calls_for_a_whole_batch(cluster: Cluster) -> None:
    assert cluster.proxy is not None
    before = Counter(cluster.proxy.counts)
    cluster.proxy.rate = 0.2
    try:
        row = run_case(cluster, "s3_throttle20", faults={}, urls=case_urls(100),
                       conf={"output_path": f"s3://aws_faulty@{BUCKET}/s3_throttle20/"},
                       description="S3 answers 20% of calls 503 SlowDown or 500 InternalError, 100 videos")
    finally:
        cluster.proxy.rate = 0.0
    faults = cluster.proxy.counts - before
    row["store_faults"] = dict(faults)
    row["seconds"] = run_seconds(cluster, cluster.runs[-1][1])
    assert faults["SlowDown"] + faults["InternalError"] > 50, faults
    assert not strays(cluster.s3, "s3_throttle20/")
    assert row["landed"] == row["videos"] == row["charged"] == 100, row


def test_s3_failing_half_of_all_calls_until_the_try_fails_then_the_retry(cluster: Cluster) -> None:
    """From the fifth paid create on, S3 fails half of all calls, and every call for the last video (so the
    store's retries surely run out, however lucky the others are): the try fails (retryable) with what it paid
    for recorded; with the store back, Airflow's retry lands every video, multipart uploads included, without
    paying again."""
    assert cluster.proxy is not None
    urls = case_urls(30)
    prefix = "s3_fail50/"
    last = urls[-1].rsplit("/", 1)[1]
    before = Counter(cluster.proxy.counts)
    with sandbox_settings(cluster, result_size=9 * MIB):  # two parts per video: multipart uploads under faults
        try:
            run_id = trigger(cluster, BATCH, urls, prefix, {"output_path": f"s3://aws_faulty@{BUCKET}/{prefix}"})
            wait_charges(cluster, urls, 5, timeout=300)
            cluster.proxy.doomed = lambda _method, path: last in path
            cluster.proxy.rate = 0.5
            ti = first_try_over(cluster, run_id)
            first = {"state": ti["state"], "charged": sum(paid(cluster, urls).values()),
                     "unpaired": unpaired_videos(cluster.s3, prefix)}
        finally:
            cluster.proxy.rate = 0.0
            cluster.proxy.doomed = None
        state = cluster.deployment.wait_for_run(BATCH, run_id)
    row = check_invariants(cluster, "s3_fail50", BATCH, [run_id], urls, prefix, no_strays=True,
                           faults="S3 answers 50% of calls (and every call for the last video) SlowDown or "
                                  "InternalError from the 5th paid create until the try fails (30 videos of 9 MiB); "
                                  "then the retry")
    row["first_try"] = first
    row["store_faults"] = dict(cluster.proxy.counts - before)
    row["seconds"] = run_seconds(cluster, run_id)
    assert first["state"] == "up_for_retry" and first["charged"] >= 5, first
    assert first["unpaired"] == [], first
    assert state == "success" and row["landed"] == row["charged"] == len(urls), row
    assert set(paid(cluster, urls).values()) == {1}


# secrets ---------------------------------------------------------------------------------------------------
def test_keys_appear_nowhere(cluster: Cluster) -> None:
    """Runs last in this module: scans everything the cases above left behind."""
    deployment = cluster.deployment
    keys = list(cluster.keys.values())
    haystacks = {"logs": deployment.logs_text()}
    assert "remove_watermarks" in haystacks["logs"]
    for dag_id, run_id in cluster.runs:
        for ti in deployment.task_instances(dag_id, run_id):
            haystacks[f"ti {run_id} {ti['task_id']}"] = json.dumps(ti)
            for key in ("return_value", "manifest", "kie_task_ids", "_link_KieTaskLink", "submit_seconds"):
                haystacks[f"xcom {run_id} {ti['task_id']} {key}"] = json.dumps(
                    deployment.xcom(dag_id, run_id, ti["task_id"], key, ti.get("map_index", -1)))
    haystacks["trigger rows (stored)"] = deployment.sql("SELECT classpath, kwargs FROM trigger")
    haystacks["trigger rows (decrypted, captured while deferred)"] = json.dumps(cluster.trigger_rows)
    assert cluster.trigger_rows, "the triggerer case captured no trigger row"
    haystacks["rendered fields"] = deployment.sql("SELECT rendered_fields::text FROM rendered_task_instance_fields")
    for key, _size in cluster.s3.objects(BUCKET).items():
        if key.endswith(".json"):
            haystacks[key] = cluster.s3.read(BUCKET, key).decode()
    assert len(haystacks) > 20
    for where, text in haystacks.items():
        for key in keys:
            assert key not in text, f"an API key leaked into {where}"
