"""A batch bound by its running cap: places free as tasks end, each task costs one status call, polls go
oldest first. Read from the sandbox's task log (when each task was created, how long it took, how often it
was polled and when a poll first showed it finished); nothing here asserts how long the run took."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow_sora.operators import SoraWatermarkRemoverOperator
from airflow_sora.sandbox import SandboxServer
from tests.conftest import VIDEO_URLS
from tests.integration.harness import run_try

CAP = 4
N = 24
TOGETHER = 0.1  # seconds: creates, or status calls, sent at once


def capped_batch(tmp_path: Path) -> SoraWatermarkRemoverOperator:
    # poll_interval 2 s: the schedule's first look (2 s) is far past these tasks' 0.4-0.8 s, so a cap refilled
    # on the schedule alone would hold each place for seconds after its task ended
    return SoraWatermarkRemoverOperator(task_id="remove", video_url=VIDEO_URLS[:N], output_path=f"file://{tmp_path}/",
                                        deferrable=True, poll_interval=2.0, max_active_submissions=CAP)


def ended(task: dict[str, Any]) -> float:
    return float(task["created"] + task["latency"])


def test_a_small_cap_is_refilled_as_tasks_end(sandbox_connections: SandboxServer, tmp_path: Path) -> None:
    sandbox_connections.state.config.latency = 0.6
    sandbox_connections.state.config.latency_jitter = 0.2
    sandbox_connections.state.config.create_limit = 1000  # the cap binds, not the create limit
    result = run_try(capped_batch(tmp_path))
    assert result.error is None and result.value["counts"]["landed"] == N
    assert not result.deferred  # the cap bound: the last tasks, due within moments, were waited for in the worker
    assert set(sandbox_connections.summary()["charges_by_video"].values()) == {1}  # credits exactly N
    tasks = sorted(sandbox_connections.state.task_log(), key=lambda t: t["created"])
    assert len(tasks) == N and all(t["seen_done"] for t in tasks)

    # never more than the cap running at the service
    for task in tasks:
        assert sum(1 for t in tasks if t["created"] <= task["created"] < ended(t)) <= CAP

    # about one status call per task: a task is looked at once it is as old as the longest service time seen (a
    # few early ones, looked at before many were seen, may need a second look; polling in rounds costs ~1.5)
    polls = [t["polls"] for t in tasks]
    assert sum(polls) <= N + N // 6, polls

    # oldest first: no task is seen finished after one created later, but for tasks created together (creates
    # sent at once reach the service in any order) or polled together (their replies come within moments of
    # each other), and one a first look found still running
    swapped = [(old["task_id"], young["task_id"]) for k, old in enumerate(tasks) for young in tasks[k + 1:]
               if old["polls"] == 1 and young["created"] > old["created"] + TOGETHER
               and young["seen_done"] < old["seen_done"] - TOGETHER]
    assert swapped == []

    # places free as tasks end: of the time the tasks seen while the batch was still submitting held a place
    # (created to seen finished), most was spent running, not waiting to be noticed
    submitting = [t for t in tasks[CAP:] if t["seen_done"] <= tasks[-1]["created"]]
    assert len(submitting) >= N // 2
    held = sum(t["seen_done"] - t["created"] for t in submitting)
    unseen = sum(t["seen_done"] - ended(t) for t in submitting)
    assert unseen < held / 2
