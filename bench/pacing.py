"""Pacing across processes: several OS processes creating through one account, with and without adaptation.

    python bench/pacing.py                    # 4 processes x 30 videos at 20/10 s; 1 process x 500 at 100/10 s
    python bench/pacing.py --processes 4 --videos 30 --single 500
    python bench/pacing.py --processes 4,8 --stagger 5-10 --single 0 --modes redis,host,on,off

One sandbox per scenario (task latency 2.0 s +/- 0.5 s, as bench/run.py). Each process has its own bucket,
as separate workers do, builds a ``KieClient`` on the same key, submits its videos one after another and
polls each task once it is due (a thread of its own), until all are done. Every scenario runs in each mode
in this one run, side by side: ``redis`` (every process takes its creates from one account-wide window in the
Redis at ``--redis``, through an Airflow Redis connection), ``host`` (the window the processes on one host
share in a locked file, the default without Redis; each scenario gets a directory of its own), ``on`` (the
adaptive rate alone, ``AIRFLOW_SORA_HOST_WINDOW=0``: what processes on separate hosts do without Redis) and
``off`` (``AIRFLOW_SORA_ADAPTIVE_PACING=0`` and no host window: every process at the account's full rate,
429s only pause). With ``--stagger A-B`` the processes start one after another, A to B seconds apart (seeded), as
scheduled runs, mapped tasks and Celery workers really start; without it they all start at once.

Counted from the sandbox's own request log: creates sent, creates refused (429) and API calls per video
(creates + polls). Wall = first accepted create to the last task seen done, over all processes. T* is
bench/run.py's for the whole set of runs: all N creates at the limit, then one task's latency,
(N - 1) / (limit / 10 s) + 2.0 s; nothing is landed here, so no landing term. Prints a table and saves
``bench/results/pacing-<stamp>.json``. Only talks to 127.0.0.1; every process has a deadline.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
KEY = "bench-kie-key"
LATENCY, JITTER = 2.0, 0.5
WINDOW = 10.0
DEADLINE = 600.0  # seconds any one scenario may take
LIMITER_CONN = "sora_bench_limiter"
LIMITER_ENV = f"AIRFLOW_CONN_{LIMITER_CONN.upper()}"
MODES = ("redis", "host", "on", "off")


def video_urls(start: int, n: int) -> list[str]:
    return [f"https://sora.chatgpt.com/p/s_{i:032x}" for i in range(start + 1, start + n + 1)]


def t_star(n: int, limit: int) -> float:
    return (n - 1) / (limit / WINDOW) + LATENCY


# one worker process -----------------------------------------------------------------------------------------
def worker(url: str, limit: int, first: int, n: int) -> dict[str, Any]:
    """Submit ``n`` videos through a KieClient and poll each until done; returns its own timings."""
    from pydantic import SecretStr

    from airflow_sora.ratelimit import SAFETY_MARGIN
    from airflow_sora.services import KieClient, RateLimitedError, ServiceConfig

    config = ServiceConfig(base_url=url, api_key=SecretStr(KEY), allow_private_result_hosts=True,
                           create_rate=limit / WINDOW * SAFETY_MARGIN,
                           rate_limiter_conn_id=LIMITER_CONN if os.environ.get(LIMITER_ENV) else None)
    due: list[tuple[float, str]] = []
    lock = threading.Condition()
    submitted_all = threading.Event()
    done_at: list[float] = []

    def poll() -> None:
        with KieClient(config) as client:
            while True:
                with lock:
                    while not due and not submitted_all.is_set():
                        lock.wait(0.5)
                    if not due:
                        return
                    when, task_id = due[0]
                    if when > time.monotonic():
                        lock.wait(when - time.monotonic())
                        continue
                    heapq.heappop(due)
                status = client.get_status(task_id)
                if status.terminal:
                    done_at.append(time.time())
                else:
                    with lock:
                        heapq.heappush(due, (time.monotonic() + 0.5, task_id))

    print("ready", flush=True)
    sys.stdin.readline()  # go: the parent starts every process at its moment
    started = time.time()
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    gave_up = 0  # creates whose retries ran out on 429s: submitted again (a refused create costs nothing)
    with KieClient(config) as client:
        for video in video_urls(first, n):
            while True:
                try:
                    task_id = client.submit(video).task_id
                    break
                except RateLimitedError:
                    gave_up += 1
            with lock:
                heapq.heappush(due, (time.monotonic() + LATENCY + JITTER + 0.1, task_id))
                lock.notify()
    submitted_all.set()
    with lock:
        lock.notify()
    poller.join()
    return {"started": started, "ended": max(done_at), "done": len(done_at), "gave_up": gave_up}


# one scenario ---------------------------------------------------------------------------------------------
def start_offsets(processes: int, stagger: tuple[float, float] | None, seed: int) -> list[float]:
    """Seconds after the first start at which each process starts: all 0, or A-B seconds apart."""
    if stagger is None:
        return [0.0] * processes
    rng = random.Random(seed)
    offsets = [0.0]
    for _ in range(processes - 1):
        offsets.append(offsets[-1] + rng.uniform(*stagger))
    return offsets


def limiter_connection(redis_url: str) -> str:
    """An Airflow connection (JSON) for the Redis at ``redis_url``, in a db the URL names (default 0)."""
    from urllib.parse import urlsplit

    parts = urlsplit(redis_url)
    db = int(parts.path.strip("/") or 0)
    return json.dumps({"conn_type": "redis", "host": parts.hostname, "port": parts.port or 6379,
                       "extra": {"db": db}})


def scenario(processes: int, videos: int, limit: int, mode: str, stagger: tuple[float, float] | None,
             redis_url: str, seed: int) -> dict[str, Any]:
    from airflow_sora.sandbox.process import SandboxProcess

    sandbox = SandboxProcess.start({KEY: 1_000_000}, "--latency", str(LATENCY), "--latency-jitter", str(JITTER),
                                   "--create-limit", str(limit), "--create-window", str(WINDOW), "--seed", "1")
    env = {k: v for k, v in os.environ.items() if k != LIMITER_ENV}
    env["AIRFLOW_SORA_ADAPTIVE_PACING"] = "0" if mode == "off" else "1"
    env["AIRFLOW_SORA_HOST_WINDOW"] = "1" if mode == "host" else "0"
    window_dir = tempfile.TemporaryDirectory(prefix="sora-bench-window-")  # this scenario's own host window
    env["AIRFLOW_SORA_HOST_WINDOW_DIR"] = window_dir.name
    if mode == "redis":
        env[LIMITER_ENV] = limiter_connection(redis_url)
    offsets = start_offsets(processes, stagger, seed)
    workers: list[subprocess.Popen[str]] = []
    try:
        for i in range(processes):
            workers.append(subprocess.Popen(
                [sys.executable, __file__, "--worker", sandbox.url, str(limit), str(i * videos), str(videos)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO))
        for w in workers:
            assert w.stdout is not None and w.stdout.readline().strip() == "ready"
        begin = time.monotonic()
        for w, offset in zip(workers, offsets, strict=True):
            assert w.stdin is not None
            time.sleep(max(0.0, begin + offset - time.monotonic()))
            w.stdin.write("go\n")
            w.stdin.flush()
        outputs = []
        for w in workers:
            out, _ = w.communicate(timeout=DEADLINE)
            outputs.append(json.loads(out.strip().splitlines()[-1]))
        summary = sandbox.summary()
        charges = sandbox.charges()
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
        sandbox.stop()
        window_dir.cleanup()
    n = processes * videos
    creates = summary["requests"].get("createTask", 0)
    polls = summary["requests"].get("recordInfo", 0)
    accepted = len(charges)
    wall = max(o["ended"] for o in outputs) - min(c["at"] for c in charges)
    star = t_star(n, limit)
    return {"processes": processes, "videos_each": videos, "limit": f"{limit}/10s", "mode": mode,
            "stagger": f"{stagger[0]:g}-{stagger[1]:g} s" if stagger else "none",
            "start_offsets": [round(o, 1) for o in offsets],
            "creates_sent": creates, "creates_accepted": accepted, "creates_rejected": creates - accepted,
            "rejected_share": (creates - accepted) / creates, "api_calls_per_video": (creates + polls) / n,
            "credits_charged": sum(summary["credits_by_video"].values()) / 10,
            "videos_done": sum(o["done"] for o in outputs), "retries_exhausted": sum(o["gave_up"] for o in outputs),
            "wall_seconds": wall, "t_star_seconds": star, "wall_vs_t_star": wall / star,
            "process_walls": sorted(round(o["ended"] - o["started"], 1) for o in outputs)}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| processes x videos | limit | stagger | pacing | creates sent | rejected (429) | API calls/video "
             "| credits | wall (s) | T* (s) | wall / T* |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    names = {"redis": "Redis window", "host": "host window", "on": "adaptive (separate hosts)",
             "off": "fixed (adaptive off)"}
    for r in rows:
        lines.append(
            f"| {r['processes']} x {r['videos_each']} | {r['limit']} | {r['stagger']} | {names[r['mode']]} | "
            f"{r['creates_sent']} | {r['creates_rejected']} ({100 * r['rejected_share']:.1f}%) | "
            f"{r['api_calls_per_video']:.2f} | {r['credits_charged']:g} | {r['wall_seconds']:.1f} | "
            f"{r['t_star_seconds']:.1f} | {r['wall_vs_t_star']:.3f} |")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        import faulthandler

        faulthandler.dump_traceback_later(DEADLINE / 2, exit=True)  # a stuck worker shows where, and ends
        url, limit, first, n = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        print(json.dumps(worker(url, limit, first, n)), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", default="4", help="processes sharing the account; several: 4,8")
    parser.add_argument("--videos", type=int, default=30, help="videos per process")
    parser.add_argument("--limit", type=int, default=20, help="creates per 10 s (Kie's real limit: 20)")
    parser.add_argument("--single", type=int, default=500, help="N for the lone process (0: skip)")
    parser.add_argument("--single-limit", type=int, default=100, help="creates per 10 s for the lone process")
    parser.add_argument("--modes", default="host,on,off", help="any of redis (account-wide window in Redis), "
                        "host (the host's window, the default without Redis), on (adaptive alone: processes "
                        "as on separate hosts), off (fixed)")
    parser.add_argument("--stagger", default="", help="start the processes A-B seconds apart, e.g. 5-10")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="the Redis for the redis mode")
    parser.add_argument("--seed", type=int, default=15, help="seeds the start offsets")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if unknown := set(modes) - set(MODES):
        parser.error(f"unknown modes {sorted(unknown)}; choose from {MODES}")
    stagger = tuple(float(x) for x in args.stagger.split("-")) if args.stagger else None
    results: dict[str, Any] = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "machine": f"{platform.machine()}, {os.cpu_count()} cores, python "
                                          f"{platform.python_version()}", "rows": []}
    plan = [(int(p), args.videos, args.limit) for p in args.processes.split(",")]
    plan += [(1, args.single, args.single_limit)] if args.single else []
    for processes, videos, limit in plan:
        for mode in modes:
            row = scenario(processes, videos, limit, mode, stagger if processes > 1 else None,  # type: ignore[arg-type]
                           args.redis, args.seed)
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = results["when"].replace(":", "").replace("-", "")
    path = RESULTS / f"pacing-{stamp}.json"
    path.write_text(json.dumps(results, indent=2))
    print(table(results["rows"]))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
