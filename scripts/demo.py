"""``make demo``: run the example batch DAG with ``airflow dags test`` and land the videos in ./output/.

Without keys it starts the bundled sandbox and points ``kie_default`` at it. With ``KIE_API_KEY`` (or
``SAVESORA_API_KEY``) set, the same command uses the real service; ``SORA_VIDEO_URLS`` (comma-separated)
replaces the example links. Airflow runs on an SQLite home inside the repository (``.airflow/``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from airflow_sora.sandbox.process import SandboxProcess

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "output"
HOME = REPO / ".airflow"
DAG_ID = "sora_watermark_batch"


def airflow_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": str(HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",  # progress lines are INFO; the demo shows only those
        "SORA_OUTPUT_PATH": f"file://{OUTPUT}/",
    })
    return env


def connection(env: dict[str, str]) -> tuple[str, SandboxProcess | None]:
    """Point a connection at the real service if a key is given, else at a fresh sandbox."""
    if os.environ.get("KIE_API_KEY"):
        env["AIRFLOW_CONN_KIE_DEFAULT"] = json.dumps({"conn_type": "kie", "password": os.environ["KIE_API_KEY"]})
        return "kie_default", None
    if os.environ.get("SAVESORA_API_KEY"):
        env["AIRFLOW_CONN_SAVESORA_DEFAULT"] = json.dumps({"conn_type": "savesora",
                                                           "password": os.environ["SAVESORA_API_KEY"]})
        return "savesora_default", None
    sandbox = SandboxProcess.start({"sandbox-kie-key": 100_000}, "--latency", "2.0")
    print(f"Using the bundled sandbox at {sandbox.url} (set KIE_API_KEY or SAVESORA_API_KEY for the real service)")
    env["AIRFLOW_CONN_KIE_DEFAULT"] = sandbox.connection("kie", "sandbox-kie-key")
    return "kie_default", sandbox


def main() -> int:
    env = airflow_env()
    OUTPUT.mkdir(exist_ok=True)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conn_id, sandbox = connection(env)
    conf: dict[str, object] = {"conn_id": conn_id, "output_path": f"file://{OUTPUT}/"}
    if os.environ.get("SORA_VIDEO_URLS"):
        conf["video_urls"] = [u.strip() for u in os.environ["SORA_VIDEO_URLS"].split(",") if u.strip()]
    log_file = HOME / "demo-last-run.log"
    try:
        code, outcome, errors = stream_run(
            [sys.executable, "-m", "airflow", "dags", "test", DAG_ID, "--conf", json.dumps(conf)], env, log_file)
    finally:
        if sandbox is not None:
            sandbox.stop()
    manifest = read_manifest(env)
    if manifest is not None:
        print_manifest(manifest)
    print(f"\nFull Airflow log: {log_file}")
    succeeded = code == 0 and manifest is not None and outcome is not None and "finished successfully" in outcome
    if succeeded:
        print(f"\nThe demo run SUCCEEDED. {outcome}")
        return 0
    why = outcome or (errors[-1] if errors else "the DAG run ended before the batch reported")
    print(f"\nThe demo run FAILED: {why}")
    return 1


_SHOWN = re.compile(r"(Sora (?:progress \[|watermark removal)|Rejected before any call|Deferring:)")
_LOGGER_SUFFIX = re.compile(r"\s+\[[\w.]+\]\s+loc=\S+\s*$")
_ERROR = re.compile(r"\b(?:[A-Z]\w*(?:Error|Exception)): .+")


def stream_run(command: list[str], env: dict[str, str], log_file: Path) -> tuple[int, str | None, list[str]]:
    """Run the DAG, show its progress lines as they come, keep the whole log; return the exit code, the
    batch's one-sentence outcome and any error lines."""
    outcome: str | None = None
    errors: list[str] = []
    with log_file.open("w") as log, subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                                     stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if match := _SHOWN.search(line):
                text = _LOGGER_SUFFIX.sub("", line[match.start():].rstrip())
                print(f"  {text}", flush=True)
                if text.startswith("Sora watermark removal"):
                    outcome = text
            elif error := _ERROR.search(line):
                errors.append(error.group(0).strip())
    return proc.returncode, outcome, errors


def read_manifest(env: dict[str, str]) -> dict | None:  # type: ignore[type-arg]
    """The remove task's XCom from the latest run, read through Airflow's own models."""
    code = (
        "import json\n"
        "from airflow.models.xcom import XComModel\n"
        "from airflow.utils.session import create_session\n"
        "with create_session() as s:\n"
        f"    row = s.query(XComModel).filter_by(dag_id={DAG_ID!r}, task_id='remove_watermarks')"
        ".filter(XComModel.key.in_(['return_value', 'manifest'])).order_by(XComModel.timestamp.desc()).first()\n"
        "    print(json.dumps(row.value if row else None))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    try:
        value = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return json.loads(value) if isinstance(value, str) else value


def print_manifest(manifest: dict) -> None:  # type: ignore[type-arg]
    print(f"\nService: {manifest['service']}   output: {manifest['output_path']}")
    print(f"{'status':<9} {'post id':<35} {'size':>9}  {'sha256':<16}  file")
    for video in manifest["videos"]:
        sha = (video.get("sha256") or "")[:16]
        target = video.get("output_uri") or video.get("error") or ""
        post_id = video.get("post_id") or "-"
        print(f"{video['status']:<9} {post_id:<35} {video.get('size') or 0:>9}  {sha:<16}  {target}")
    print(f"counts: {manifest['counts']}   credits charged: {manifest['credits_charged']:g}")


if __name__ == "__main__":
    sys.exit(main())
