"""Planning's cost against the output folder's history: a run of new videos into an empty S3 folder and into one
holding thousands of earlier landings, side by side in one run.

    python bench/planning.py                       # 50 new videos; 0 and 20,000 earlier landings
    python bench/planning.py --history 2000 --videos 20 --model-up-to 100000   # a quick look

Three parts, all against object stores that count every request:

1. DAG runs: batch mode under ``airflow dags test`` (the bundled sandbox at 200 creates/10 s) into moto's S3
   server (``bench/s3_requests.py``, counted at the server), once into an empty folder and once into a folder
   seeded with earlier landings (a small video and its sidecar each, stored straight into the server's
   backend). Time to the first create (from the remove task's start and from the process start) and S3
   requests per new video, by operation.
2. Planning alone, in this process against the same server: requests and seconds of ``Planner.plan`` for the
   same run, as planning now works and with the output folder listed whole (as it was before).
3. A model of the store (the same planning code over an in-memory S3 that pages listings as S3 does and counts
   each call) from 0 to 1,000,000 earlier landings, checked against part 2's counts at the sizes both measure.

Prints tables and saves ``bench/results/planning-<stamp>.json``. It asserts nothing about time.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.run import Sandbox, airflow_env, api_calls, remove_task_window  # noqa: E402
from bench.s3_requests import CountingS3  # noqa: E402

RESULTS = REPO / "bench" / "results"
LIMIT = 200  # creates per 10 s: the S3 benchmark's scaled limit
BUCKET = "bench"
VIDEO_BYTES = 16
RUN_SCOPE = ("sora_watermark_batch", "remove_watermarks", "manual__planning")


def history_id(i: int) -> str:
    """Earlier landings' post ids, spread over the key space as real ones are (not all before or after)."""
    return "s_" + hashlib.sha256(f"earlier-{i}".encode()).hexdigest()[:32]


def new_video_urls(n: int) -> list[str]:
    """A run's new videos, spread over the same key space."""
    return [f"https://sora.chatgpt.com/p/s_{hashlib.sha256(f'new-{i}'.encode()).hexdigest()[:32]}"
            for i in range(n)]


def earlier_sidecar(post_id: str) -> bytes:
    from airflow_sora.sidecar import Sidecar

    return Sidecar.model_validate({
        "source_url": f"https://sora.chatgpt.com/p/{post_id}", "post_id": post_id, "service": "kie",
        "task_id": f"task-{post_id}", "file": f"{post_id}.mp4", "sha256": "0" * 64, "size": VIDEO_BYTES,
        "watermark_removed_by": "kie", "landed_at": "2026-01-01T00:00:00+00:00", "provider": "airflow-provider-sora",
        "airflow": {"dag_id": "sora_watermark_batch", "run_id": "scheduled__2026-01-01T00:00:00+00:00",
                    "task_id": "remove_watermarks", "map_index": -1}}).to_json()


def earlier_landings(prefix: str, count: int) -> dict[str, str]:
    objects: dict[str, str] = {}
    for i in range(count):
        post_id = history_id(i)
        objects[f"{prefix}{post_id}.mp4"] = "\0" * VIDEO_BYTES
        objects[f"{prefix}{post_id}.json"] = earlier_sidecar(post_id).decode()
    return objects


# 1. DAG runs ------------------------------------------------------------------------------------------------
def dag_run(s3: CountingS3, prefix: str, urls: list[str], home: Path) -> dict[str, Any]:
    """One ``airflow dags test`` of the batch DAG into ``s3://bench/<prefix>``, counted at the server."""
    sandbox = Sandbox.with_limit(LIMIT)
    try:
        env = {**airflow_env(home, sandbox), "AIRFLOW_CONN_AWS_DEFAULT": s3.connection()}
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True)
        conf = json.dumps({"video_urls": urls, "output_path": f"s3://aws_default@{BUCKET}/{prefix}"})
        s3.reset_counts()
        process_started = time.time()
        run = subprocess.run([sys.executable, "-m", "airflow", "dags", "test", "sora_watermark_batch", "--conf",
                              conf], env=env, capture_output=True, text=True, timeout=900)
        requests = s3.counts()
        if run.returncode != 0:
            raise SystemExit(f"run into {prefix} failed:\n{(run.stdout + run.stderr)[-3000:]}")
        summary = sandbox.summary()
        first_create = min(c["at"] for c in sandbox.charges())
    finally:
        sandbox.stop()
    client = s3.client()
    landed = sum(1 for url in urls if client.head_object(Bucket=BUCKET, Key=f"{prefix}{url.rsplit('/', 1)[1]}.json"))
    task = remove_task_window(env)
    n = len(urls)
    return {"landed": landed, "credits_charged": sum(summary["credits_by_video"].values()) / 10,
            "api_calls_per_video": api_calls(summary) / n,
            "first_create_after_process_start": first_create - process_started,
            "first_create_after_task_start": first_create - task[0] if task else None,
            "s3_requests": requests["requests"], "s3_requests_per_video": requests["requests"] / n,
            "s3_operations_per_video": {k: v / n for k, v in sorted(requests["operations"].items())},
            "s3_keys": requests["keys"]}


# 2. planning alone --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def whole_listing(enabled: bool) -> Iterator[None]:
    """Planning as it was: the output folder listed whole, however few videos the run has."""
    from airflow_sora import landing

    def unlimited(names: int, *, at_least: int = 0) -> int:
        return 10**9

    budget = landing.listing_budget
    if enabled:
        landing.listing_budget = unlimited
    try:
        yield
    finally:
        landing.listing_budget = budget


def plan(output: str, urls: list[str]) -> None:
    """The real planning of a batch run (state records, landed copies, verdicts), nothing paid."""
    from airflow.sdk import ObjectStoragePath

    from airflow_sora.batch.ledger import Ledger
    from airflow_sora.batch.plan import Planner
    from airflow_sora.batch.settings import BatchSettings
    from airflow_sora.landing import ResultLander
    from airflow_sora.state import RunScope, VideoStateStore
    from airflow_sora.verdicts import VerdictBook
    from airflow_sora.videos import parse_video_list

    root = ObjectStoragePath(output)
    store = VideoStateStore(root, RunScope(*RUN_SCOPE), service="kie")
    verdicts = VerdictBook(root)
    ledger = Ledger(parse_video_list(urls).videos, store, credits_per_video=10, verdicts=verdicts)
    lander = ResultLander(root)
    try:
        Planner(ledger, lander, BatchSettings(), verdicts).plan()
    finally:
        lander.close()


def planning_at_server(s3: CountingS3, prefix: str, urls: list[str], *, whole: bool) -> dict[str, Any]:
    os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = s3.connection()
    s3.reset_counts()
    started = time.monotonic()
    with whole_listing(whole):
        plan(f"s3://aws_default@{BUCKET}/{prefix}", urls)
    seconds = time.monotonic() - started
    counts = s3.counts()
    return {"seconds": seconds, "requests": counts["requests"], "operations": counts["operations"]}


# 3. a model of the store ------------------------------------------------------------------------------------------
class ModelS3:
    """An in-memory S3 holding ``landings`` earlier landings under one prefix, paging listings as S3 does
    (1,000 keys a page, in key order) and counting every call. Other folders (the run's state, the verdicts)
    are empty, as in a run whose videos are all new."""

    def __init__(self, prefix: str, landings: int) -> None:
        self.prefix = prefix
        ids = sorted(history_id(i) for i in range(landings))
        self.names = [f"{i}{ext}" for i in ids for ext in (".json", ".mp4")]
        self.present = set(ids)
        self.calls: Counter[str] = Counter()

    def __call__(self, method: str, **kwargs: Any) -> Any:
        self.calls[method] += 1
        key = kwargs.get("Key", "")
        name = key[len(self.prefix):] if key.startswith(self.prefix) else None
        if method == "list_objects_v2":
            return self._page(kwargs)
        post_id, _, ext = (name or "").rpartition(".")
        if method in ("get_object", "head_object") and name is not None and "/" not in name \
                and post_id in self.present:
            if method == "head_object":
                return {"ContentLength": VIDEO_BYTES}
            return {"Body": io.BytesIO(earlier_sidecar(post_id) if ext == "json" else b"\0" * VIDEO_BYTES)}
        if method in ("get_object", "head_object"):
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "NoSuchKey" if method == "get_object" else "404"}}, method)
        return {}  # writes: not part of planning

    def _page(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if kwargs.get("Prefix") != self.prefix:
            return {"Contents": [], "IsTruncated": False}  # the run's state folder, the verdicts: empty
        start = int(kwargs.get("ContinuationToken", 0))
        end = start + int(kwargs.get("MaxKeys", 1000))
        page = self.names[start:end]
        contents = [{"Key": self.prefix + n, "Size": VIDEO_BYTES} for n in page if not n.endswith("/")]
        truncated = end < len(self.names)
        return {"Contents": contents, "IsTruncated": truncated, **({"NextContinuationToken": str(end)}
                                                                  if truncated else {})}


def planning_in_model(model: ModelS3, urls: list[str], *, whole: bool) -> dict[str, Any]:
    from airflow_sora import storage

    model.calls.clear()
    real = storage.s3_api_for
    storage.s3_api_for = lambda path: model if storage.protocol_of(path) == "s3" else None
    try:
        with whole_listing(whole):
            plan(f"s3://aws_default@{BUCKET}/{model.prefix}", urls)
    finally:
        storage.s3_api_for = real
    return {"requests": sum(model.calls.values()), "operations": dict(model.calls)}


# report -------------------------------------------------------------------------------------------------------------
def markdown(results: dict[str, Any]) -> list[str]:
    n = results["videos"]
    lines = [f"DAG runs of {n} new videos (batch mode, `airflow dags test`, {LIMIT}/10 s):", "",
             "| earlier landings | first create after task start (s) | after process start (s) | S3 requests/video "
             "| by operation (per video) | landed | credits | API calls/video |", "|---|---|---|---|---|---|---|---|"]
    for row in results["dag_runs"]:
        per_video = sorted(row["s3_operations_per_video"].items(), key=lambda kv: -kv[1])
        ops = ", ".join(f"{k} {v:.2f}" for k, v in per_video)
        task = row["first_create_after_task_start"]
        lines.append(f"| {row['history']:,} | {task:.1f} | {row['first_create_after_process_start']:.1f} | "
                     f"{row['s3_requests_per_video']:.2f} | {ops} | {row['landed']} | {row['credits_charged']:.0f} | "
                     f"{row['api_calls_per_video']:.2f} |" if task is not None else f"| {row['history']:,} | n/a |")
    lines += ["", f"Planning alone ({n} new videos, at the server):", "",
              "| earlier landings | planning | requests | by operation | seconds |", "|---|---|---|---|---|"]
    for row in results["planning_at_server"]:
        ops = ", ".join(f"{k} {v}" for k, v in sorted(row["operations"].items()))
        lines.append(f"| {row['history']:,} | {row['planning']} | {row['requests']} | {ops} | {row['seconds']:.2f} |")
    lines += ["", "Requests per run in the model of the store (checked against the server's counts above):", "",
              "| earlier landings | " + " | ".join(f"N={m}: now | N={m}: whole listing" for m in results["model_sizes"])
              + " |", "|---|" + "---|---|" * len(results["model_sizes"])]
    for row in results["model"]:
        lines.append(f"| {row['history']:,} | " + " | ".join(
            f"{row[str(m)]['now']} | {row[str(m)]['whole']}" for m in results["model_sizes"]) + " |")
    lines += ["", f"Model equals the server's counts at the sizes both measured: {results['model_matches_server']}"]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=50, help="new videos per run")
    parser.add_argument("--history", type=int, default=20_000, help="earlier landings in the full folder")
    parser.add_argument("--model-up-to", type=int, default=1_000_000, help="largest history in the model")
    parser.add_argument("--skip-dag-runs", action="store_true", help="planning alone and the model only")
    args = parser.parse_args()
    urls = new_video_urls(args.videos)
    histories = [0, args.history]
    results: dict[str, Any] = {"videos": args.videos, "limit": f"{LIMIT}/10s", "dag_runs": [],
                               "planning_at_server": [], "model": []}
    s3 = CountingS3.start()
    try:
        s3.create_bucket(BUCKET)
        started = time.monotonic()
        s3.seed(BUCKET, earlier_landings(f"history-{args.history}/", args.history))
        results["seeding_seconds"] = time.monotonic() - started
        planning_at_server(s3, "warm-up/", urls[:1], whole=False)  # the client and imports, not timed below
        for history in histories:  # planning alone first: it writes nothing
            for whole in (False, True):
                row = planning_at_server(s3, f"history-{history}/", urls, whole=whole)
                results["planning_at_server"].append({"history": history, "planning": "whole listing" if whole
                                                      else "now", **row})
        if not args.skip_dag_runs:
            with tempfile.TemporaryDirectory() as tmp:
                for history in histories:
                    row = dag_run(s3, f"history-{history}/", urls, Path(tmp) / f"home-{history}")
                    results["dag_runs"].append({"history": history, **row})
    finally:
        s3.stop()
    sizes = [args.videos, 1000]
    results["model_sizes"] = sizes
    landings = sorted(h for h in {0, 1_000, 10_000, args.history, 100_000, args.model_up_to} if h <= args.model_up_to)
    for history in landings:
        model = ModelS3("planning/", history)
        counted: dict[str, Any] = {"history": history}
        for m in sizes:
            counted[str(m)] = {"now": planning_in_model(model, new_video_urls(m), whole=False)["requests"],
                               "whole": planning_in_model(model, new_video_urls(m), whole=True)["requests"]}
        results["model"].append(counted)
    by_history = {row["history"]: row[str(args.videos)] for row in results["model"]}
    results["model_matches_server"] = all(
        by_history[row["history"]]["whole" if row["planning"] == "whole listing" else "now"] == row["requests"]
        for row in results["planning_at_server"])
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%z")
    path = RESULTS / f"planning-{stamp}.json"
    path.write_text(json.dumps(results, indent=2))
    print("\n".join(markdown(results)))
    print(f"\nsaved {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
