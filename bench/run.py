"""Benchmarks, side by side in one run: batch mode vs the naive loop vs T*, and landing vs a plain copy.

    python bench/run.py                      # N in 20,100,500 and landing of 1 GiB and 4 GiB
    python bench/run.py --sizes 20 --landing 256M

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


def t_star(n: int, limit: int, window: float, landing_one: float) -> float:
    """The fastest any client can finish: creates at the limit, then the last task's latency and landing."""
    return (n - 1) / (limit / window) + LATENCY + landing_one


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


def batch_mode(sandbox: Sandbox, urls: list[str], folder: Path, home: Path) -> dict[str, Any]:
    env = airflow_env(home, sandbox)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True)
    conf = json.dumps({"video_urls": urls, "output_path": f"file://{folder}/"})
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "airflow", "dags", "test", "sora_watermark_batch", "--conf", conf],
                         env=env, capture_output=True, text=True)
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


def mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def measured(limit: int, n: int, mode: Any) -> dict[str, Any]:
    """Run one mode against a fresh sandbox and add what the sandbox saw: API calls and credits."""
    sandbox = Sandbox.with_limit(limit)
    try:
        result = dict(mode(sandbox))
        summary = sandbox.summary()
    finally:
        sandbox.stop()
    result.update(api_calls_per_video=api_calls(summary) / n,
                  credits_charged=sum(summary["credits_by_video"].values()) / 10)
    return result


def throughput(n: int, modes: set[str]) -> dict[str, Any]:
    limit = 20 if n <= 100 else 100  # the real limit; a scaled one keeps N=500 runs short (see RESULTS.md)
    row: dict[str, Any] = {"n": n, "create_limit": f"{limit}/10s"}
    urls = video_urls(n)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        probe_box = Sandbox.with_limit(limit)
        try:
            probe = time.monotonic()
            httpx.get(f"{probe_box.url}/_sandbox/synthetic/32768.mp4")
            row["t_star_seconds"] = t_star(n, limit, 10.0, time.monotonic() - probe)
        finally:
            probe_box.stop()
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
    parser.add_argument("--modes", default="batch,mapped,naive", help="throughput modes to run")
    parser.add_argument("--naive-sizes", default=None,
                        help="N values that also run the naive loop (default: all; N=500 takes ~25 min)")
    args = parser.parse_args()
    # A stopped benchmark still stops what it started (deployments, sandboxes): run the finally blocks.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: dict[str, Any] = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "machine": f"{platform.machine()}, {os.cpu_count()} cores, python "
                                          f"{platform.python_version()}",
                               "throughput": [], "landing": []}
    sizes = [int(x) for x in args.sizes.split(",") if x]
    naive_sizes = sizes if args.naive_sizes is None else [int(x) for x in args.naive_sizes.split(",") if x]
    for n in sizes:
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
    print(save(results))
    return 0


def save(results: dict[str, Any]) -> str:
    """Write the results so far (after every row: a long run stopped part way keeps what it measured)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = results["when"].replace(":", "").replace("-", "")
    (RESULTS / f"{stamp}.json").write_text(json.dumps(results, indent=2))
    report = markdown(results)
    (REPO / "bench" / "RESULTS.md").write_text(report)
    return report


if __name__ == "__main__":
    sys.exit(main())
