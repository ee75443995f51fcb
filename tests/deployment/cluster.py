"""A real Airflow deployment on this machine, started from the installed packages, for tests and benchmarks.

PostgreSQL (a fresh database per run) as the metadata DB; CeleryExecutor with Redis as broker, or
LocalExecutor; scheduler, dag-processor, triggerer, api-server and Celery workers as separate processes;
the sandbox and a moto S3 server as processes of their own. DAG runs are triggered and read back through
Airflow's REST API, as a user's tooling would.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

REPO = Path(__file__).resolve().parents[2]
PG = ("127.0.0.1", 5432)
REDIS = ("127.0.0.1", 6379)
TERMINAL_RUN_STATES = {"success", "failed"}
REDIS_CLAIM, REDIS_CLAIM_TTL = "sora-tests:deployment", 6 * 3600  # who uses a Redis database, for how long at most


def reachable(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=1):
            return True
    except OSError:
        return False


def missing_services() -> str | None:
    """Why the deployment cannot start here, or None when PostgreSQL and Redis both answer."""
    missing = [name for name, address in (("PostgreSQL", PG), ("Redis", REDIS)) if not reachable(address)]
    return f"{' and '.join(missing)} not reachable on 127.0.0.1" if missing else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(check: Any, timeout: float, what: str, interval: float = 0.25,
             explain: Callable[[], str] | None = None) -> Any:
    """Poll ``check`` until it returns something true; on timeout, the error carries ``explain()``'s account."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (httpx.HTTPError, OSError, ValueError, KeyError):
            pass
        time.sleep(interval)
    account = ""
    if explain is not None:
        try:
            account = "\n" + explain()
        except Exception as error:  # the timeout is the news; a failed account only adds to it
            account = f"\n(no account: {error!r})"
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r}){account}")


def _claim_redis_db(owner: str) -> int:
    """A Redis database no other live deployment uses. Two deployments run at once in the suite (the session's
    cluster and a module's own), and Celery workers on a shared broker database take each other's tasks, which
    then run against the wrong API server and never finish. The claim expires, so a crashed run frees it."""
    for db in random.sample(range(1, 16), 15):
        with redis.Redis(*REDIS, db=db) as client:
            if client.set(REDIS_CLAIM, owner, nx=True, ex=REDIS_CLAIM_TTL):
                return db
    raise RuntimeError("every Redis database 1-15 is claimed by a running deployment")


def _psql(sql: str, database: str = "postgres") -> None:
    subprocess.run(["psql", "-h", PG[0], "-p", str(PG[1]), "-U", "postgres", "-d", database, "-v",
                    "ON_ERROR_STOP=1", "-q", "-c", sql], check=True, capture_output=True)


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (Airflow components fork children)."""
        if self.alive():
            with suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)
        try:
            self.popen.wait(20)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            self.popen.wait(10)


@dataclass
class Deployment:
    executor: str = "CeleryExecutor"
    workers: int = 2
    worker_concurrency: int = 4
    sandbox_args: list[str] = field(default_factory=list)
    api_keys: dict[str, str] = field(default_factory=lambda: {
        "kie": "kie-DEPLOY-SECRET-" + secrets.token_hex(6),
        "savesora": "savesora-DEPLOY-SECRET-" + secrets.token_hex(6),
    })
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, Process] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="sora-deploy-"))
        self.database = f"sora_{uuid.uuid4().hex[:12]}"
        self.redis_db = _claim_redis_db(self.database)
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self._token: str | None = None

    # start and stop ---------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        pg = f"postgres@{PG[0]}:{PG[1]}/{self.database}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update({
            "PYTHONUNBUFFERED": "1",  # each process's log file has every line it wrote, when a test reads it
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": self.executor,
            "AIRFLOW__CORE__PARALLELISM": "64",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{pg}",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS[0]}:{REDIS[1]}/{self.redis_db}",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{pg}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__API_AUTH__JWT_SECRET": self._secret("jwt"),
            "AIRFLOW__API__SECRET_KEY": self._secret("api"),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "PYTHONPATH": str(REPO),
        })
        env.update(self.extra_env)
        return env

    def _secret(self, name: str) -> str:
        path = self.home / f".{name}"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32))
        return path.read_text()

    def start(self) -> Deployment:
        _psql(f'CREATE DATABASE "{self.database}"')
        migrated = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=self.env(),
                                  capture_output=True, text=True)
        if migrated.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed: {migrated.stderr[-2000:]}")
        self.start_component("api-server", ["api-server", "--port", str(self.api_port)])
        wait_for(lambda: httpx.get(f"{self.api_url}/api/v2/monitor/health").status_code == 200, 120,
                 "the api-server")
        for name, args in (("scheduler", ["scheduler"]), ("dag-processor", ["dag-processor"]),
                           ("triggerer", ["triggerer"])):
            self.start_component(name, args)
        if self.executor == "CeleryExecutor":
            for index in range(self.workers):
                self.start_worker(index)
        return self

    def start_component(self, name: str, args: list[str]) -> Process:
        log = self.home / f"{name}.log"
        handle = open(log, "ab")  # noqa: SIM115 - owned by the child process
        popen = subprocess.Popen([sys.executable, "-m", "airflow", *args], env=self.env(), stdout=handle,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        self.processes[name] = Process(name, popen, log)
        return self.processes[name]

    def start_worker(self, index: int) -> Process:
        return self.start_component(f"worker-{index}", ["celery", "worker", "--celery-hostname",
                                                          f"worker{index}-{uuid.uuid4().hex[:6]}@%h"])

    def stop(self) -> None:
        """Stop every process, then drop the database; an interruption (a second SIGTERM or Ctrl-C) while
        one process stops still kills the rest and drops the database before it is re-raised."""
        interrupted: BaseException | None = None
        for process in self.processes.values():
            try:
                process.stop()
            except BaseException as error:
                process.kill(signal.SIGKILL)
                interrupted = interrupted or error
        try:
            self._drop_state()
        finally:
            if interrupted is not None:
                raise interrupted

    def _drop_state(self) -> None:
        with suppress(OSError, redis.RedisError), redis.Redis(*REDIS, db=self.redis_db) as client:
            client.flushdb()  # the broker's queues, the limiter's keys and the claim
        with suppress(subprocess.CalledProcessError):
            _psql(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    # REST API ---------------------------------------------------------------------------------------
    def token(self) -> str:
        if self._token is None:
            self._token = str(httpx.get(f"{self.api_url}/auth/token").json()["access_token"])
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = httpx.request(method, f"{self.api_url}/api/v2{path}", timeout=30,
                                 headers={"Authorization": f"Bearer {self.token()}"}, **kwargs)
        if response.status_code == 401:
            self._token = None
            response = httpx.request(method, f"{self.api_url}/api/v2{path}", timeout=30,
                                     headers={"Authorization": f"Bearer {self.token()}"}, **kwargs)
        return response

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        wait_for(lambda: self.api("GET", f"/dags/{dag_id}").status_code == 200, timeout, f"DAG {dag_id} to parse")
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any], run_id: str | None = None) -> str:
        run_id = run_id or f"test__{uuid.uuid4().hex[:10]}"
        response = self.api("POST", f"/dags/{dag_id}/dagRuns",
                            json={"dag_run_id": run_id, "conf": conf, "logical_date": None})
        response.raise_for_status()
        return run_id

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}").json()["state"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600) -> str:
        return str(wait_for(lambda: (s := self.run_state(dag_id, run_id)) in TERMINAL_RUN_STATES and s, timeout,
                            f"run {run_id} of {dag_id} to finish", interval=1.0,
                            explain=lambda: self.account(dag_id, run_id)))

    def account(self, dag_id: str, run_id: str, lines: int = 15) -> str:
        """Where a run stands, for a test that timed out: its task instances' states and each component's last
        log lines."""
        states = [f"{t['task_id']}[{t.get('map_index', -1)}]: {t['state']}"
                  for t in self.task_instances(dag_id, run_id)]
        tails = [f"--- {name} ---\n" + "\n".join(p.log.read_text(errors="replace").splitlines()[-lines:])
                 for name, p in self.processes.items() if name != "api-server"]
        return "task instances: " + ", ".join(states) + "\n" + "\n".join(tails)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        body = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000}).json()
        return list(body["task_instances"])

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        response = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
                            params={"map_index": map_index, "deserialize": True})
        if response.status_code == 404:
            return None
        return _decode(response.json()["value"])

    def sql(self, query: str) -> str:
        """Rows of a query on the metadata DB, as text."""
        out = subprocess.run(["psql", "-h", PG[0], "-p", str(PG[1]), "-U", "postgres", "-d", self.database, "-At",
                              "-c", query], capture_output=True, text=True, check=True)
        return out.stdout

    def trigger_rows(self) -> list[dict[str, str]]:
        """Every trigger row as stored (kwargs encrypted): one quick query, so a short deferral is not missed."""
        rows = self.sql("SELECT json_agg(json_build_object('classpath', classpath, 'kwargs', kwargs)) FROM trigger")
        return list(json.loads(rows.strip() or "null") or [])

    def decrypt_trigger_rows(self, rows: list[dict[str, str]]) -> list[dict[str, Any]]:
        """Stored trigger rows with their kwargs decrypted, through Airflow's own model."""
        code = ("import json, sys\nfrom airflow.models.trigger import Trigger\nrows = json.load(sys.stdin)\n"
                "print(json.dumps([{'classpath': r['classpath'], 'kwargs': Trigger._decrypt_kwargs(r['kwargs'])} "
                "for r in rows], default=str))\n")
        out = subprocess.run([sys.executable, "-c", code], input=json.dumps(rows), env=self.env(),
                             capture_output=True, text=True, timeout=120)
        if out.returncode:
            raise RuntimeError(f"decrypting the trigger rows failed ({out.returncode}): {out.stderr[-4000:]}")
        return list(json.loads(out.stdout.strip().splitlines()[-1]))

    def trigger_kwargs(self) -> list[dict[str, Any]]:
        """The decrypted kwargs of every trigger row."""
        return self.decrypt_trigger_rows(self.trigger_rows())

    def logs_text(self) -> str:
        """Every log this deployment wrote: component logs and task logs."""
        return "\n".join(p.read_text(errors="replace") for p in self.home.rglob("*.log") if p.is_file())


def _decode(value: Any) -> Any:
    """XCom values come back as JSON, or as the text of a Python literal: read either."""
    if not isinstance(value, str) or value[:1] not in "[{":
        return value
    try:
        return json.loads(value)
    except ValueError:
        import ast

        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value


@contextmanager
def deployment(**kwargs: Any) -> Iterator[Deployment]:
    cluster = Deployment(**kwargs)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
