"""Benchmarks, side by side in one run: batch mode vs the naive loop vs T*, and landing vs a plain copy.

    python bench/run.py                      # N in 20,100,500 and landing of 1 GiB and 4 GiB
    python bench/run.py --sizes 20 --landing 256M
    python bench/run.py --modes s3 --landing ''   # batch mode landing in S3 (moto), N=1,000 at 200/10 s;
                                                  # prints its table, keeps RESULTS.md as it is
    python bench/run.py --modes local --landing ''  # the local engine (bench/local_quality.py, with the
                                                    # memory row); replaces only its section of RESULTS.md
    python bench/run.py --modes scaled --landing ''  # the running cap binding: batch N=500 at 100/10 s and
                                                     # N=5,000 at a scaled 500/10 s (cap 100), side by side;
                                                     # replaces only its section of RESULTS.md

Prints a table, saves ``bench/results/<stamp>.json`` and rewrites ``bench/RESULTS.md``. Benchmarks print
numbers; they assert nothing about wall-clock time. Absolute times on a shared machine are noise: compare
the ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from airflow_sora.sandbox.process import SandboxProcess

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the deployment harness and the S3 server helper live with the tests

from bench.s3_requests import CountingS3  # noqa: E402
from scripts.demo import read_manifest  # noqa: E402
from tests.deployment.services import S3Process  # noqa: E402

RESULTS = REPO / "bench" / "results"
KEY = "bench-kie-key"
LATENCY, JITTER = 2.0, 0.5


def video_urls(n: int) -> list[str]:
    return [f"https://sora.chatgpt.com/p/s_{i:032x}" for i in range(1, n + 1)]


class Sandbox(SandboxProcess):
    """The bundled sandbox in its own process, with the benchmark's latency and create limit."""

    create_limit: int
    create_window: float

    @classmethod
    def with_limit(cls, create_limit: int, create_window: float = 10.0) -> Sandbox:
        started = cls.start({KEY: 1_000_000}, "--latency", str(LATENCY), "--latency-jitter", str(JITTER),
                            "--create-limit", str(create_limit), "--create-window", str(create_window), "--seed", "1")
        started.create_limit, started.create_window = create_limit, create_window
        return started


def api_calls(summary: dict[str, Any]) -> int:
    return sum(summary["requests"].get(k, 0) for k in ("createTask", "recordInfo", "download-url"))


def t_star(n: int, limit: int, window: float, landing_one: float, cap: int | None = None) -> float:
    """The fastest any client can finish: creates at the limit, or, when at most ``cap`` tasks may run at once,
    tasks at the pace the cap allows (each holds its place for the mean latency), whichever is slower; then the
    last task's latency and landing."""
    creates = (n - 1) / (limit / window)
    running = n * LATENCY / cap if cap else 0.0
    return max(creates, running) + LATENCY + landing_one


def measured_t_star(n: int, limit: int, cap: int | None = None) -> float:
    """T* with the landing of one video timed on a fresh sandbox (what a 32 KiB download takes here)."""
    probe_box = Sandbox.with_limit(limit)
    try:
        probe = time.monotonic()
        httpx.get(f"{probe_box.url}/_sandbox/synthetic/32768.mp4")
        return t_star(n, limit, 10.0, time.monotonic() - probe, cap)
    finally:
        probe_box.stop()


def poll_stats(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """From the sandbox's task log: status calls per task, and how long a finished task went unseen (from the
    moment it finished to the first poll that showed it), the time it kept a place under the running cap."""
    unseen = sorted(t["seen_done"] - (t["created"] + t["latency"]) for t in tasks if t.get("seen_done"))
    if not tasks:
        return {}
    return {"polls_per_task": sum(t.get("polls", 0) for t in tasks) / len(tasks),
            "tasks_polled_more_than_once": sum(1 for t in tasks if t.get("polls", 0) > 1),
            "unseen_mean_seconds": sum(unseen) / len(unseen) if unseen else None,
            "unseen_p95_seconds": unseen[int(0.95 * (len(unseen) - 1))] if unseen else None,
            "unseen_max_seconds": unseen[-1] if unseen else None}


# mapped mode on a real scheduler + triggerer ---------------------------------------------------------
class RssSampler:
    """Peak resident memory of process trees, sampled in the background (workers come and go)."""

    def __init__(self, roots: dict[str, int], interval: float = 0.5) -> None:
        import threading

        self.roots, self.interval = roots, interval
        self.peaks: dict[str, float] = {name: 0.0 for name in roots}
        self.task_peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            for name, pid in self.roots.items():
                try:
                    root = psutil.Process(pid)
                    tree = [root, *root.children(recursive=True)]
                except psutil.Error:
                    continue
                for proc in tree:
                    try:
                        rss = proc.memory_info().rss / 1e6
                        cmd = " ".join(proc.cmdline())
                    except psutil.Error:
                        continue
                    if name == "scheduler" and cmd.startswith("airflow worker --"):  # the task runner
                        self.task_peak = max(self.task_peak, rss)
                    if proc is root:
                        self.peaks[name] = max(self.peaks[name], rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def mapped_mode(sandbox: Sandbox, urls: list[str], output: str) -> dict[str, Any]:
    """One task per URL on a LocalExecutor deployment (PostgreSQL), the triggerer waiting for each."""
    from tests.deployment.cluster import Deployment, missing_services

    if missing_services():
        return {"skipped": missing_services()}
    deployment = Deployment(executor="LocalExecutor", extra_env={
        "AIRFLOW_CONN_KIE_DEFAULT": airflow_env(Path("/tmp"), sandbox)["AIRFLOW_CONN_KIE_DEFAULT"],
        # two cores: more task processes at once only starve each other's start-up, and one api-server
        # worker leaves the cores to the tasks; a task start that still times out is retried in seconds,
        # not Airflow's default five minutes, so a slow start shows as time and not as a stall
        "AIRFLOW__CORE__PARALLELISM": "4", "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
        "AIRFLOW__API__WORKERS": "1", "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
        "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "5",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "300",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"})
    try:
        deployment.start()
        deployment.wait_for_dag("sora_watermark_mapped")
        roots = {name: deployment.processes[name].popen.pid for name in ("scheduler", "triggerer")}
        with RssSampler(roots) as sampler:
            run_id = deployment.trigger("sora_watermark_mapped", {"video_urls": urls, "output_path": output})
            state = deployment.wait_for_run("sora_watermark_mapped", run_id, timeout=3600)
        manifests = [deployment.xcom("sora_watermark_mapped", run_id, "remove_watermark", map_index=i)
                     for i in range(len(urls))]
        instances = [ti for ti in deployment.task_instances("sora_watermark_mapped", run_id)
                     if ti["task_id"] == "remove_watermark"]
    finally:
        deployment.stop()
    folder = Path(output.removeprefix("file://"))
    sidecars = [json.loads(p.read_text()) for p in folder.glob("s_*.json")]
    first_create = min(c["at"] for c in sandbox.charges())
    last_landed = max(datetime.fromisoformat(s["landed_at"]).timestamp() for s in sidecars)
    return {"state": state, "wall_seconds": last_landed - first_create, "landed": len(sidecars),
            "retried_tasks": sum(1 for ti in instances if ti["try_number"] > 1),
            "worker_slot_seconds": sum((m or {}).get("worker_seconds", 0.0) for m in manifests),
            "peak_rss_mb_task": sampler.task_peak, "peak_rss_mb_triggerer": sampler.peaks["triggerer"],
            "peak_rss_mb_scheduler": sampler.peaks["scheduler"]}


# the naive loop ---------------------------------------------------------------------------------------
def naive_loop(sandbox: Sandbox, urls: list[str], folder: Path) -> dict[str, Any]:
    """What users write by hand: create one, poll every 2 s until done, download, next."""
    headers = {"Authorization": f"Bearer {KEY}"}
    started = time.monotonic()
    with httpx.Client(base_url=sandbox.url, headers=headers, timeout=60) as client:
        for url in urls:
            body: dict[str, Any] = {}
            while body.get("code") != 200:
                body = client.post("/api/v1/jobs/createTask", json={
                    "model": "sora-watermark-remover", "input": {"video_url": url, "upload_method": "s3"}}).json()
                if body.get("code") == 429:
                    time.sleep(2)
            task_id = body["data"]["taskId"]
            while True:
                time.sleep(2)
                record = client.get("/api/v1/jobs/recordInfo", params={"taskId": task_id}).json()
                data = record.get("data") or {}
                if data.get("state") in ("success", "fail"):
                    break
            result = json.loads(data["resultJson"])["resultUrls"][0]
            (folder / f"{task_id}.mp4").write_bytes(client.get(result).content)
    return {"wall_seconds": time.monotonic() - started}


# batch mode under `airflow dags test` ----------------------------------------------------------------
def airflow_env(home: Path, sandbox: Sandbox) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "AIRFLOW_CONN_KIE_DEFAULT": json.dumps({
            "conn_type": "kie", "host": sandbox.url, "password": KEY,
            "extra": {"allow_private_result_hosts": True, "create_limit": sandbox.create_limit,
                      "create_window": sandbox.create_window}}),
    })
    return env


#: One command-line argument may hold at most 128 KiB (Linux): a longer ``--conf`` (N=5,000 URLs) is read from a
#: file by a runner that hands ``airflow dags test`` the same arguments in-process.
ARG_MAX = 100_000
CONF_RUNNER = ("import sys; from airflow.__main__ import main; conf = open(sys.argv.pop()).read(); "
               "sys.argv = ['airflow', 'dags', 'test', 'sora_watermark_batch', '--conf', conf]; sys.exit(main())")


def dags_test(conf: str, home: Path) -> list[str]:
    """The command that runs ``airflow dags test sora_watermark_batch --conf <conf>``."""
    if len(conf) < ARG_MAX:
        return [sys.executable, "-m", "airflow", "dags", "test", "sora_watermark_batch", "--conf", conf]
    conf_file = home / "conf.json"
    conf_file.write_text(conf)
    return [sys.executable, "-c", CONF_RUNNER, str(conf_file)]


def batch_mode(sandbox: Sandbox, urls: list[str], folder: Path, home: Path) -> dict[str, Any]:
    env = airflow_env(home, sandbox)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True)
    conf = json.dumps({"video_urls": urls, "output_path": f"file://{folder}/"})
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.monotonic()
    run = subprocess.run(dags_test(conf, home), env=env, capture_output=True, text=True)
    process_seconds = time.monotonic() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if run.returncode != 0:
        raise SystemExit(f"batch run failed:\n{(run.stdout + run.stderr)[-3000:]}")
    sidecars = [json.loads(p.read_text()) for p in folder.glob("s_*.json")]
    charges = sandbox.charges()
    first_create = min(c["at"] for c in charges)
    last_landed = max(datetime.fromisoformat(s["landed_at"]).timestamp() for s in sidecars)
    manifest = read_manifest(env) or {}
    return {"wall_seconds": last_landed - first_create, "process_seconds": process_seconds,
            "landed": len(sidecars), "worker_slot_seconds": manifest.get("worker_seconds"),
            "peak_rss_mb": (peak_kib if peak_kib > before else before) / 1024}


# batch mode landing in S3, object-store requests counted at the server ---------------------------------
S3_LIMIT = 200  # creates per 10 s, scaled: N=1,000 takes ~50 s of creates instead of ~8 min at Kie's real 20
S3_BUCKET, S3_PREFIX = "bench", "s3-mode"


def remove_task_window(env: dict[str, str]) -> tuple[float, float] | None:
    """When the latest run's remove task started and ended (epoch seconds), as Airflow's CLI reports them."""
    def cli(*args: str) -> Any:
        out = subprocess.run([sys.executable, "-m", "airflow", *args, "-o", "json"], env=env, capture_output=True,
                             text=True)
        return json.loads(out.stdout.strip().splitlines()[-1])  # warnings may come first

    try:
        run_id = max(cli("dags", "list-runs", "sora_watermark_batch"), key=lambda r: r["start_date"])["run_id"]
        task = next(t for t in cli("tasks", "states-for-dag-run", "sora_watermark_batch", run_id)
                    if t["task_id"] == "remove_watermarks")
        return (datetime.fromisoformat(task["start_date"]).timestamp(),
                datetime.fromisoformat(task["end_date"]).timestamp())
    except (ValueError, KeyError, IndexError, StopIteration, TypeError):
        return None


def s3_mode(sandbox: Sandbox, urls: list[str], s3: CountingS3, home: Path) -> dict[str, Any]:
    """Batch mode under ``airflow dags test`` landing into moto's S3 server, which counts every request it gets."""
    env = {**airflow_env(home, sandbox), "AIRFLOW_CONN_AWS_DEFAULT": s3.connection()}
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True)
    conf = json.dumps({"video_urls": urls, "output_path": f"s3://aws_default@{S3_BUCKET}/{S3_PREFIX}/"})
    s3.reset_counts()  # from here on every request is the DAG run's
    process_started, started = time.time(), time.monotonic()
    try:  # bounded: a stuck run is stopped, not waited for
        run = subprocess.run([sys.executable, "-m", "airflow", "dags", "test", "sora_watermark_batch", "--conf",
                              conf], env=env, capture_output=True, text=True, timeout=max(600, len(urls)))
    except subprocess.TimeoutExpired as expired:
        raise SystemExit(f"s3 run stopped after {expired.timeout:.0f} s") from expired
    process_seconds = time.monotonic() - started
    requests = s3.counts()  # before the benchmark's own listing and reads below
    if run.returncode != 0:
        raise SystemExit(f"s3 run failed:\n{(run.stdout + run.stderr)[-3000:]}")
    keys = s3.objects(S3_BUCKET)
    sidecars = [json.loads(s3.read(S3_BUCKET, k)) for k in keys
                if k.startswith(f"{S3_PREFIX}/s_") and k.endswith(".json")]
    first_create = min(c["at"] for c in sandbox.charges())
    landed = len(sidecars)
    task = remove_task_window(env)
    return {"wall_seconds": max(datetime.fromisoformat(s["landed_at"]).timestamp() for s in sidecars) - first_create,
            "process_seconds": process_seconds, "landed": landed,
            "videos_at_final_keys": sum(1 for k in keys if k.startswith(f"{S3_PREFIX}/s_") and k.endswith(".mp4")),
            "first_create_after_process_start": first_create - process_started,
            "task_seconds": task[1] - task[0] if task else None,
            "first_create_after_task_start": first_create - task[0] if task else None,
            "s3_requests": requests["requests"], "s3_requests_per_video": requests["requests"] / landed,
            "s3_verbs_per_video": {k: v / landed for k, v in sorted(requests["verbs"].items())},
            "s3_operations_per_video": {k: v / landed for k, v in sorted(requests["operations"].items())},
            "s3_statuses": requests["statuses"], "s3_keys": requests["keys"]}


def s3_row(n: int) -> dict[str, Any]:
    """One row: T* at the scaled limit, then batch mode landing N videos in S3 on the counting server."""
    row: dict[str, Any] = {"n": n, "create_limit": f"{S3_LIMIT}/10s"}
    urls = video_urls(n)
    s3 = CountingS3.start()
    try:
        s3.create_bucket(S3_BUCKET)
        with tempfile.TemporaryDirectory() as tmp:
            row["t_star_seconds"] = measured_t_star(n, S3_LIMIT)
            row["s3"] = measured(S3_LIMIT, n, lambda box: s3_mode(box, urls, s3, Path(tmp) / "home"))
    finally:
        s3.stop()
    row["s3_vs_t_star"] = row["s3"]["wall_seconds"] / row["t_star_seconds"]
    return row


def s3_markdown(rows: list[dict[str, Any]]) -> list[str]:
    verbs = ("GET", "PUT", "POST", "HEAD", "DELETE")
    lines = ["| N | limit | T* (s) | wall (s) | wall / T* | process wall (s) | first create after start (s): "
             "process, task | S3 requests/video | " + " | ".join(verbs) + " | API calls/video | credits |",
             "|---|---|---|---|---|---|---|---|" + "---|" * len(verbs) + "---|---|"]
    for row in rows:
        s = row["s3"]
        task = s["first_create_after_task_start"]
        lines.append(
            f"| {row['n']} | {row['create_limit']} | {row['t_star_seconds']:.1f} | {s['wall_seconds']:.1f} | "
            f"{row['s3_vs_t_star']:.3f} | {s['process_seconds']:.1f} | "
            f"{s['first_create_after_process_start']:.1f}, {'-' if task is None else f'{task:.1f}'} | "
            f"{s['s3_requests_per_video']:.2f} | "
            + " | ".join(f"{s['s3_verbs_per_video'].get(v, 0):.2f}" for v in verbs)
            + f" | {s['api_calls_per_video']:.2f} | {s['credits_charged']:g} |")
    lines += ["", "| N | S3 operation | requests/video |", "|---|---|---|"]
    for row in rows:
        for operation, per_video in sorted(row["s3"]["s3_operations_per_video"].items(), key=lambda kv: -kv[1]):
            lines.append(f"| {row['n']} | {operation} | {per_video:.2f} |")
    return lines


def mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def measured(limit: int, n: int, mode: Any) -> dict[str, Any]:
    """Run one mode against a fresh sandbox and add what the sandbox saw: API calls and credits."""
    sandbox = Sandbox.with_limit(limit)
    try:
        result = dict(mode(sandbox))
        summary = sandbox.summary()
        polls = poll_stats(sandbox.tasks())
    finally:
        sandbox.stop()
    result.update(api_calls_per_video=api_calls(summary) / n,
                  credits_charged=sum(summary["credits_by_video"].values()) / 10, polls=polls,
                  creates_refused=summary["requests"].get("createTask", 0) - summary["tasks"])
    return result


# the running cap binding: batch mode where max_active_submissions, not the create limit, sets the pace -------
SCALED_CAP = 100  # the operator's default max_active_submissions
SCALED_SIZES = "500@100,5000@500"  # N@creates per 10 s: at 500/10 s, 50 creates/s x 2 s latency fill the cap


def scaled_row(n: int, limit: int) -> dict[str, Any]:
    """Batch mode at N videos and ``limit`` creates per 10 s with the default cap; T* counts the cap."""
    row: dict[str, Any] = {"n": n, "create_limit": f"{limit}/10s", "cap": SCALED_CAP}
    urls = video_urls(n)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        row["t_star_seconds"] = measured_t_star(n, limit, SCALED_CAP)
        row["batch"] = measured(limit, n, lambda box: batch_mode(box, urls, mkdir(root / "batch"), root / "home"))
    row["batch_vs_t_star"] = row["batch"]["wall_seconds"] / row["t_star_seconds"]
    return row


SCALED_TITLE = "## Running cap binding"


def scaled_markdown(results: dict[str, Any]) -> list[str]:
    lines = [SCALED_TITLE, "",
             f"`python bench/run.py --modes scaled --landing ''` (`bench/results/{stamp(results)}.json`, run "
             f"{results['when']}): batch mode under `airflow dags test`, rows side by side in one run, the "
             f"operator's default `max_active_submissions={SCALED_CAP}`. T\\* = max((N - 1) / rate, N x latency / "
             "cap) + latency + landing one video. Polls/task and the time a finished task went unseen (from its "
             "end to the first poll that showed it) come from the sandbox's task log.", "",
             "| N | limit | cap | T* (s) | batch (s) | batch / T* | API calls/video | polls/task | tasks polled "
             "twice or more | finished, unseen (s): mean, p95, max | creates refused | credits | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in results["scaled"]:
        b, p = row["batch"], row["batch"].get("polls") or {}
        unseen = ", ".join("-" if p.get(k) is None else f"{p[k]:.2f}"
                           for k in ("unseen_mean_seconds", "unseen_p95_seconds", "unseen_max_seconds"))
        lines.append(
            f"| {row['n']} | {row['create_limit']} | {row['cap']} | {row['t_star_seconds']:.1f} | "
            f"{b['wall_seconds']:.1f} | {row['batch_vs_t_star']:.3f} | {b['api_calls_per_video']:.3f} | "
            f"{p.get('polls_per_task', 0):.3f} | {p.get('tasks_polled_more_than_once', 0)} | {unseen} | "
            f"{b['creates_refused']} | {b['credits_charged']:g} | {b['peak_rss_mb']:.0f} |")
    return lines


def throughput(n: int, modes: set[str]) -> dict[str, Any]:
    limit = 20 if n <= 100 else 100  # the real limit; a scaled one keeps N=500 runs short (see RESULTS.md)
    row: dict[str, Any] = {"n": n, "create_limit": f"{limit}/10s"}
    urls = video_urls(n)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        row["t_star_seconds"] = measured_t_star(n, limit)
        if "batch" in modes:
            row["batch"] = measured(limit, n, lambda box: batch_mode(box, urls, mkdir(root / "batch"), root / "home"))
            row["batch_vs_t_star"] = row["batch"]["wall_seconds"] / row["t_star_seconds"]
        if "mapped" in modes:
            row["mapped"] = measured(limit, n, lambda box: mapped_mode(box, urls, f"file://{mkdir(root / 'mapped')}/"))
            row["mapped_vs_t_star"] = row["mapped"].get("wall_seconds", 0) / row["t_star_seconds"]
        if "naive" in modes:
            row["naive"] = measured(limit, n, lambda box: naive_loop(box, urls, mkdir(root / "naive")))
    if "batch" in row and "naive" in row:
        row["naive_vs_batch"] = row["naive"]["wall_seconds"] / row["batch"]["wall_seconds"]
    return row


# landing ------------------------------------------------------------------------------------------------
def landing(size: int, s3: S3Process) -> dict[str, Any]:
    sandbox = Sandbox.with_limit(20)
    url = f"{sandbox.url}/_sandbox/synthetic/{size}.mp4"
    row: dict[str, Any] = {"size_bytes": size}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, target in (("plain_copy", f"{tmp}/plain.mp4"), ("lander_local", f"file://{tmp}/local/"),
                                 ("plain_s3", "s3://aws_default@bench/plain/"),
                                 ("lander_s3", "s3://aws_default@bench/landing/")):
                row[name] = land_in_subprocess(name, url, target, s3)
                for leftover in Path(tmp).rglob("*.mp4"):
                    leftover.unlink()
                for key in s3.objects("bench"):  # moto keeps objects in memory
                    s3.client().delete_object(Bucket="bench", Key=key)
    finally:
        sandbox.stop()
    for name in ("lander_local", "lander_s3", "plain_s3"):
        row[f"{name}_vs_plain"] = row[name]["mb_per_s"] / row["plain_copy"]["mb_per_s"]
    row["lander_s3_vs_plain_s3"] = row["lander_s3"]["mb_per_s"] / row["plain_s3"]["mb_per_s"]
    return row


def land_in_subprocess(kind: str, url: str, target: str, s3: S3Process) -> dict[str, Any]:
    env = {**os.environ, "AIRFLOW_CONN_AWS_DEFAULT": s3.connection()}
    out = subprocess.run([sys.executable, str(REPO / "bench" / "land_one.py"), kind, url, target], env=env,
                         capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


# report ---------------------------------------------------------------------------------------------------
def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Benchmark results", "",
        f"Run {results['when']} on {results['machine']}. Sandbox: task latency {LATENCY} s ± {JITTER} s; "
        "create limit as listed (20/10 s is Kie's real limit; N=500 uses a scaled 100/10 s to keep the naive "
        "loop's run short). Times are first create to last video landed. Ratios compare runs of the same "
        "benchmark; absolute seconds on a shared machine are noise.", "",
        "## Throughput", "",
        "| N | limit | T* (s) | batch (s) | batch / T* | naive (s) | naive / batch | API calls/video (batch, naive) "
        "| credits charged (batch, naive) | worker-slot s (batch) | peak RSS MB (dags test process) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in (r for r in results["throughput"] if "batch" in r):
        b, nv = row["batch"], row.get("naive")
        naive, naive_calls, naive_credits = (
            (f"{nv['wall_seconds']:.1f} | {row['naive_vs_batch']:.1f}x", f"{nv['api_calls_per_video']:.2f}",
             f"{nv['credits_charged']:g}") if nv else ("not run | -", "-", "-"))
        lines.append(
            f"| {row['n']} | {row['create_limit']} | {row['t_star_seconds']:.1f} | {b['wall_seconds']:.1f} | "
            f"{row['batch_vs_t_star']:.3f} | {naive} | {b['api_calls_per_video']:.2f}, {naive_calls} | "
            f"{b['credits_charged']:g}, {naive_credits} | {b['worker_slot_seconds']:.1f} | {b['peak_rss_mb']:.0f} |")
    mapped_rows = [r for r in results["throughput"] if "wall_seconds" in r.get("mapped", {})]
    if mapped_rows:
        lines += ["", "### Mapped mode (one task per URL; LocalExecutor, PostgreSQL, scheduler + triggerer)", "",
                  "| N | T* (s) | mapped (s) | mapped / T* | API calls/video | credits charged | tasks retried "
                  "| worker-slot s | peak RSS MB: task, triggerer, scheduler |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for row in mapped_rows:
            m = row["mapped"]
            lines.append(
                f"| {row['n']} | {row['t_star_seconds']:.1f} | {m['wall_seconds']:.1f} | "
                f"{row['mapped_vs_t_star']:.2f} | "
                f"{m['api_calls_per_video']:.2f} | {m['credits_charged']:g} | {m['retried_tasks']} | "
                f"{m['worker_slot_seconds']:.1f} | "
                f"{m['peak_rss_mb_task']:.0f}, {m['peak_rss_mb_triggerer']:.0f}, {m['peak_rss_mb_scheduler']:.0f} |")
    if results.get("s3"):
        lines += ["", f"### S3 landing (batch mode into moto's S3 server, limit {S3_LIMIT}/10 s)", "",
                  *s3_markdown(results["s3"])]
    lines += ["", "## Landing", "",
              "| size | plain copy to disk MB/s | lander → local MB/s (ratio) | plain upload → S3 (moto) MB/s "
              "| lander → S3 MB/s (ratio to plain copy; to plain upload) | peak RSS MB: plain, local, S3 |",
              "|---|---|---|---|---|---|"]
    for row in results["landing"]:
        p, lo, s3, ps3 = row["plain_copy"], row["lander_local"], row["lander_s3"], row["plain_s3"]
        lines.append(
            f"| {row['size_bytes'] / (1 << 30):.2f} GiB | {p['mb_per_s']:.0f} | {lo['mb_per_s']:.0f} "
            f"({row['lander_local_vs_plain']:.2f}) | {ps3['mb_per_s']:.0f} | {s3['mb_per_s']:.0f} "
            f"({row['lander_s3_vs_plain']:.2f}; {row['lander_s3_vs_plain_s3']:.2f}) | "
            f"{p['peak_rss_mb']:.0f}, {lo['peak_rss_mb']:.0f}, {s3['peak_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="20,100,500")
    parser.add_argument("--landing", default="1G,4G")
    parser.add_argument("--modes", default="batch,mapped,naive",
                        help="throughput modes to run; s3 (batch mode landing in S3) runs at --s3-sizes; local "
                             "runs the local engine's benchmark")
    parser.add_argument("--s3-sizes", default="1000", help=f"N values of the s3 mode (limit {S3_LIMIT}/10 s)")
    parser.add_argument("--scaled-sizes", default=SCALED_SIZES,
                        help=f"N@limit rows of the scaled mode (cap {SCALED_CAP}); default {SCALED_SIZES}")
    parser.add_argument("--naive-sizes", default=None,
                        help="N values that also run the naive loop (default: all; N=500 takes ~25 min)")
    args = parser.parse_args()
    # A stopped benchmark still stops what it started (deployments, sandboxes): run the finally blocks.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: dict[str, Any] = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "machine": f"{platform.machine()}, {os.cpu_count()} cores, python "
                                          f"{platform.python_version()}",
                               "throughput": [], "landing": [], "s3": [], "scaled": []}
    sizes = [int(x) for x in args.sizes.split(",") if x]
    naive_sizes = sizes if args.naive_sizes is None else [int(x) for x in args.naive_sizes.split(",") if x]
    for n in [int(x) for x in args.s3_sizes.split(",") if x] if "s3" in args.modes.split(",") else []:
        results["s3"].append(s3_row(n))
        print(json.dumps(results["s3"][-1]), flush=True)
        save(results)
    for size in args.scaled_sizes.split(",") if "scaled" in args.modes.split(",") else []:
        n, _, limit = size.partition("@")
        results["scaled"].append(scaled_row(int(n), int(limit or 500)))
        print(json.dumps(results["scaled"][-1]), flush=True)
        save(results)
    for n in sizes if set(args.modes.split(",")) - {"s3", "local", "scaled"} else []:
        modes = set(args.modes.split(","))
        row = throughput(n, modes if n in naive_sizes else modes - {"naive"})
        results["throughput"].append(row)
        print(json.dumps(row), flush=True)
        save(results)
    if args.landing:
        s3 = S3Process.start()
        s3.create_bucket("bench")
        try:
            for size in [parse_size(x) for x in args.landing.split(",") if x]:
                row = landing(size, s3)
                results["landing"].append(row)
                print(json.dumps(row), flush=True)
                save(results)
        finally:
            s3.stop()
    if "local" in args.modes.split(","):
        from bench.local_quality import main as local_engine

        local_engine(["--memory"])
        if not (results["throughput"] or results["landing"] or results["s3"] or results["scaled"]):
            return 0  # it saved its own results
    print(save(results))
    return 0


def stamp(results: dict[str, Any]) -> str:
    return str(results["when"]).replace(":", "").replace("-", "")


def save(results: dict[str, Any]) -> str:
    """Write the results so far (after every row: a long run stopped part way keeps what it measured)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stamp(results)}.json").write_text(json.dumps(results, indent=2))
    scaled = "\n".join(scaled_markdown(results)) + "\n" if results["scaled"] else ""
    if not (results["throughput"] or results["landing"]):  # an s3-only run keeps RESULTS.md as it is
        if scaled:  # a scaled run replaces only its own section
            (REPO / "bench" / "RESULTS.md").write_text(with_section(current_results(), SCALED_TITLE, scaled))
            return scaled
        return "\n".join(s3_markdown(results["s3"])) + "\n"
    report = markdown(results)
    kept = with_local_section(report)
    (REPO / "bench" / "RESULTS.md").write_text(with_section(kept, SCALED_TITLE, scaled) if scaled else
                                               kept_section(kept, SCALED_TITLE))
    return report


def current_results() -> str:
    return (REPO / "bench" / "RESULTS.md").read_text() if (REPO / "bench" / "RESULTS.md").exists() else ""


def section_bounds(lines: list[str], title: str) -> tuple[int, int] | None:
    """Where the section headed ``title`` starts and ends (the next ``## `` heading) in ``lines``."""
    start = next((k for k, line in enumerate(lines) if line.strip() == title), None)
    if start is None:
        return None
    return start, next((k for k in range(start + 1, len(lines)) if lines[k].startswith("## ")), len(lines))


def with_section(report: str, title: str, section: str) -> str:
    """``report`` with the section headed ``title`` replaced by ``section`` (appended if it had none)."""
    lines = report.rstrip("\n").split("\n")
    bounds = section_bounds(lines, title)
    if bounds is None:
        return "\n".join(lines) + "\n\n" + section
    start, end = bounds
    return "\n".join([*lines[:start], *section.rstrip("\n").split("\n"), "", *lines[end:]]).rstrip("\n") + "\n"


def kept_section(report: str, title: str) -> str:
    """The new report with the current RESULTS.md's section headed ``title`` kept (another mode measures it)."""
    lines = current_results().split("\n")
    bounds = section_bounds(lines, title)
    return report if bounds is None else with_section(report, title, "\n".join(lines[slice(*bounds)]))


def with_local_section(report: str) -> str:
    """The new report with the "Local engine" section of the current RESULTS.md kept (bench/local_quality.py
    writes it; this benchmark does not measure it)."""
    return kept_section(report, "## Local engine")


if __name__ == "__main__":
    sys.exit(main())
