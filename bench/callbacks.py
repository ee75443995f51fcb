"""Callbacks against polling alone, for slow tasks: API calls per video and wall / T*, side by side.

    python bench/callbacks.py                       # N=200, 20 creates per 10 s, task latency 60 s +/- 30 s
    python bench/callbacks.py --n 50 --latency 20 --jitter 10 --modes callbacks

Each mode runs one batch (``SoraWatermarkRemoverOperator``, deferrable, under ``airflow dags test``) against a fresh
sandbox with the same seed, so both see the same task latencies in the same order. ``polling``: no callback URL,
today's path. ``callbacks``: ``callback_url="auto"`` through the connection's extra; the sandbox signs every
callback with the account's webhook key and posts it to the provider's receiver app, served here by uvicorn and
mounted at ``/sora`` as the API server mounts it. ``callbacks-cap100`` is the same with the operator's default
running cap (100) instead of N, so the submitter looks for room (through the inbox, like the waiting side). Wall =
first accepted create to the last video landed. T* is ``bench/run.py``'s, (N - 1) / (limit / 10 s) + mean latency +
one landing; T*(tasks) is the best any client could do with the latencies the sandbox actually drew: max over tasks,
in create order, of (i / rate + latency_i) + one landing. API calls = creates + status calls + link refreshes,
counted by the sandbox. Saves ``bench/results/callbacks-<stamp>.json`` and writes the table to
``bench/CALLBACKS.md`` (included in the docs' callbacks page).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from airflow_sora.sandbox.process import SandboxProcess  # noqa: E402

RESULTS = REPO / "bench" / "results"
KEY = "bench-kie-key"
URL_SECRET = "bench-url-secret-" + secrets.token_hex(4)
WEBHOOK_KEY = "bench-webhook-key-" + secrets.token_hex(4)
WINDOW = 10.0
DAG = '''
from airflow.sdk import DAG
from airflow_sora.operators import SoraWatermarkRemoverOperator

with DAG(dag_id="sora_callbacks_bench", schedule=None, render_template_as_native_obj=True):
    SoraWatermarkRemoverOperator(task_id="remove_watermarks", video_url="{{{{ dag_run.conf['video_urls'] }}}}",
                                 output_path="{{{{ dag_run.conf['output_path'] }}}}", deferrable=True,
                                 timeout=1800, max_active_submissions={cap})
'''


def video_urls(n: int) -> list[str]:
    return [f"https://sora.chatgpt.com/p/s_{i:032x}" for i in range(1, n + 1)]


class Receiver:
    """The receiver app in this process (uvicorn in a thread), reading ``kie_default`` from the environment."""

    def __init__(self) -> None:
        import socket

        import uvicorn
        from fastapi import FastAPI

        from airflow_sora.plugins.receiver import create_app

        parent = FastAPI()
        parent.mount("/sora", create_app())
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.server = uvicorn.Server(uvicorn.Config(parent, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def connection(sandbox: SandboxProcess, limit: int, callbacks: bool) -> str:
    extra: dict[str, Any] = {"allow_private_result_hosts": True, "create_limit": limit, "create_window": WINDOW}
    if callbacks:
        extra.update(callback_url="auto", callback_secret=URL_SECRET, webhook_secret=WEBHOOK_KEY)
    return json.dumps({"conn_type": "kie", "host": sandbox.url, "password": KEY, "extra": extra})


def one_mode(mode: str, n: int, limit: int, latency: float, jitter: float) -> dict[str, Any]:
    callbacks = mode.startswith("callbacks")
    cap = 100 if mode.endswith("cap100") else n
    sandbox = SandboxProcess.start({KEY: 1_000_000}, "--latency", str(latency), "--latency-jitter", str(jitter),
                                   "--create-limit", str(limit), "--create-window", str(WINDOW), "--seed", "1",
                                   "--webhook-key", WEBHOOK_KEY)
    receiver: Receiver | None = None
    try:
        conn = connection(sandbox, limit, callbacks)
        os.environ["AIRFLOW_CONN_KIE_DEFAULT"] = conn  # what the receiver in this process reads
        if callbacks:
            receiver = Receiver()
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "dags").mkdir()
            (root / "dags" / "sora_callbacks_bench.py").write_text(DAG.format(cap=cap))
            folder = root / "out"
            folder.mkdir()
            env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
            env.update({"AIRFLOW_HOME": str(root / "home"), "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
                        "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
                        "AIRFLOW_CONN_KIE_DEFAULT": conn, "PYTHONPATH": str(REPO),
                        "AIRFLOW__API__BASE_URL": receiver.base if receiver else "http://127.0.0.1:9"})
            subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True,
                           capture_output=True)
            conf = json.dumps({"video_urls": video_urls(n), "output_path": f"file://{folder}/"})
            run = subprocess.run([sys.executable, "-m", "airflow", "dags", "test", "sora_callbacks_bench", "--conf",
                                  conf], env=env, capture_output=True, text=True, timeout=3600)
            if run.returncode != 0:
                raise SystemExit(f"{mode} run failed:\n{(run.stdout + run.stderr)[-3000:]}")
            sidecars = [json.loads(p.read_text()) for p in folder.glob("s_*.json")]
            log_text = run.stdout + run.stderr
        summary = sandbox.summary()
        tasks = httpx.get(f"{sandbox.url}/_sandbox/tasks").json()
        callbacks_sent = httpx.get(f"{sandbox.url}/_sandbox/callbacks").json()
        probe = time.monotonic()
        httpx.get(f"{sandbox.url}/_sandbox/synthetic/32768.mp4")
        landing_one = time.monotonic() - probe
    finally:
        if receiver is not None:
            receiver.stop()
        sandbox.stop()
    first_create = min(t["created"] for t in tasks)
    last_landed = max(datetime.fromisoformat(s["landed_at"]).timestamp() for s in sidecars)
    requests = summary["requests"]
    calls = sum(requests.get(k, 0) for k in ("createTask", "recordInfo", "download-url"))
    rate = limit / WINDOW
    ordered = sorted(tasks, key=lambda t: t["created"])
    t_star_tasks = max(i / rate + t["latency"] for i, t in enumerate(ordered)) + landing_one
    t_star = (n - 1) / rate + latency + landing_one
    wall = last_landed - first_create
    for secret in (URL_SECRET, WEBHOOK_KEY, KEY):
        assert secret not in log_text, "a secret reached the run's output"
    return {"mode": mode, "n": n, "running_cap": cap, "landed": len(sidecars), "wall_seconds": wall,
            "t_star_seconds": t_star, "t_star_tasks_seconds": t_star_tasks, "wall_vs_t_star": wall / t_star,
            "wall_vs_t_star_tasks": wall / t_star_tasks, "api_calls_per_video": calls / n,
            "status_calls_per_video": requests.get("recordInfo", 0) / n, "requests": requests,
            "credits_charged": sum(summary["credits_by_video"].values()) / 10,
            "callbacks_delivered": sum(1 for c in callbacks_sent if c.get("outcome") == 200),
            "callbacks_attempts": len(callbacks_sent)}


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [f"Task latency {args.latency:g} s ± {args.jitter:g} s, N={args.n}, {args.limit} creates per 10 s.", "",
             "| mode | running cap | landed | wall (s) | T* (s) | wall / T* | T*(tasks) (s) | wall / T*(tasks) "
             "| API calls/video | status calls/video | credits | callbacks answered 200 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['running_cap']} | {r['landed']} | {r['wall_seconds']:.1f} | "
                     f"{r['t_star_seconds']:.1f} | {r['wall_vs_t_star']:.3f} | {r['t_star_tasks_seconds']:.1f} | "
                     f"{r['wall_vs_t_star_tasks']:.3f} | {r['api_calls_per_video']:.2f} | "
                     f"{r['status_calls_per_video']:.2f} | {r['credits_charged']:g} | {r['callbacks_delivered']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--limit", type=int, default=20, help="creates per 10 s")
    parser.add_argument("--latency", type=float, default=60.0)
    parser.add_argument("--jitter", type=float, default=30.0)
    parser.add_argument("--modes", default="polling,callbacks,callbacks-cap100")
    args = parser.parse_args()
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results: dict[str, Any] = {"when": when, "machine": f"{platform.machine()}, {os.cpu_count()} cores, python "
                               f"{platform.python_version()}", "settings": vars(args), "rows": []}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"callbacks-{when.replace(':', '').replace('-', '')}.json"
    for mode in args.modes.split(","):
        row = one_mode(mode, args.n, args.limit, args.latency, args.jitter)
        results["rows"].append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "requests"}), flush=True)
        out.write_text(json.dumps(results, indent=2))
    report = markdown(results["rows"], args)
    (REPO / "bench" / "CALLBACKS.md").write_text(f"Run {when} on {results['machine']}. {report}")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
