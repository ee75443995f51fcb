"""Money guard rails across runs, against the sandbox over real sockets, judged by its charge log.

A run here is one logical DAG run (a run id); tries of it share the run id, later runs have new ones, and all
land into one output folder, as a scheduled pipeline does.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_sora.exceptions import SoraFailedError, SoraPendingError
from airflow_sora.operators import SoraWatermarkRemoverOperator
from airflow_sora.sandbox import SandboxServer
from airflow_sora.state import Phase
from tests.conftest import VIDEO_URLS
from tests.integration.harness import TaskInstanceStandIn, TryResult, run_try
from tests.integration.test_retry_safety import WorkerKilled, kill_on_save

URLS = VIDEO_URLS[:3]


def operator(output: str, urls: list[str] = URLS, **kwargs: Any) -> SoraWatermarkRemoverOperator:
    kwargs.setdefault("poll_interval", 0.1)
    kwargs.setdefault("fail_on_error", False)
    kwargs.setdefault("deferrable", False)
    return SoraWatermarkRemoverOperator(task_id="remove", video_url=urls, output_path=output, **kwargs)


def run(output: str, run_id: str, try_number: int = 1, **kwargs: Any) -> TryResult:
    return run_try(operator(output, **kwargs), TaskInstanceStandIn(run_id=run_id, try_number=try_number))


def by_url(result: TryResult) -> dict[str, dict[str, Any]]:
    return {v["video_url"]: v for v in result.value["videos"]}


def charges(sandbox: SandboxServer) -> dict[str, int]:
    return sandbox.summary()["charges_by_video"]


def creates_sent(sandbox: SandboxServer) -> int:
    return int(sandbox.summary()["requests"].get("createTask", 0))


class TestVerdicts:
    def test_a_failed_video_is_not_paid_again_within_the_window(self, sandbox_connections: SandboxServer,
                                                                tmp_path: Path) -> None:
        out = f"file://{tmp_path}/out/"
        sandbox_connections.set_faults(fail_video_urls=[URLS[1]])
        first = run(out, "daily-1")
        assert by_url(first)[URLS[1]]["status"] == "failed"
        second = run(out, "daily-2")
        held = by_url(second)[URLS[1]]
        assert held["status"] == "failed" and held["credits_charged"] == 0
        assert "in run daily-1" in held["error"] and "retry_failed_after=0" in held["error"]
        assert [by_url(second)[u]["status"] for u in (URLS[0], URLS[2])] == ["skipped", "skipped"]
        assert charges(sandbox_connections) == {u: 1 for u in URLS}  # the second run paid nothing

    def test_after_the_window_it_is_tried_again_and_a_landing_forgets_the_verdict(
            self, sandbox_connections: SandboxServer, tmp_path: Path) -> None:
        out = f"file://{tmp_path}/out/"
        sandbox_connections.set_faults(fail_video_urls=[URLS[1]])
        run(out, "daily-1", retry_failed_after=0.5)
        never = run(out, "daily-2", retry_failed_after=None)
        assert "retry_failed_after=None" in by_url(never)[URLS[1]]["error"]
        time.sleep(0.6)
        sandbox_connections.set_faults(fail_video_urls=[])
        later = run(out, "daily-3", retry_failed_after=0.5)
        assert by_url(later)[URLS[1]]["status"] == "landed"
        assert charges(sandbox_connections)[URLS[1]] == 2
        assert not list((tmp_path / "out" / "_state" / "_verdicts").glob("*.json"))  # it landed after all

    def test_a_video_refused_as_invalid_is_never_resubmitted_unless_asked(
            self, sandbox_connections: SandboxServer, tmp_path: Path) -> None:
        out = f"file://{tmp_path}/out/"
        sandbox_connections.set_faults(reject_video_urls=[URLS[2]])
        first = run(out, "daily-1")
        assert by_url(first)[URLS[2]]["status"] == "rejected"
        sent = creates_sent(sandbox_connections)
        second = run(out, "daily-2", retry_failed_after=0)
        held = by_url(second)[URLS[2]]
        assert held["status"] == "failed" and "rejected it as invalid" in held["error"]
        assert "retry_rejected=True" in held["error"]
        assert creates_sent(sandbox_connections) == sent  # nothing sent for it, nothing sent for the landed
        asked = run(out, "daily-3", retry_rejected=True)
        assert by_url(asked)[URLS[2]]["status"] == "rejected"  # the sandbox still refuses it
        assert creates_sent(sandbox_connections) == sent + 1

    def test_a_refunded_failure_may_be_retried_by_the_next_run(self, sandbox_connections: SandboxServer,
                                                               tmp_path: Path) -> None:
        out = f"file://{tmp_path}/out/"
        sandbox_connections.set_faults(fail_video_urls=[URLS[0]])
        first = run(out, "daily-1", urls=URLS[:1], conn_id="savesora_default")
        assert by_url(first)[URLS[0]]["status"] == "failed"
        assert by_url(first)[URLS[0]]["credits_charged"] == 0  # SaveSora refunds 5002
        sandbox_connections.set_faults(fail_video_urls=[])
        second = run(out, "daily-2", urls=URLS[:1], conn_id="savesora_default")
        assert by_url(second)[URLS[0]]["status"] == "landed"


class TestOneChargePerFolder:
    @pytest.mark.parametrize("deferrable", [False, True])
    def test_two_overlapping_runs_pay_once_per_video(self, sandbox_connections: SandboxServer,
                                                     tmp_path: Path, deferrable: bool) -> None:
        """Each run's first try finishes: the one that waits for the other's videos does so across its deferral."""
        sandbox_connections.state.config.latency = 1.0
        out = f"file://{tmp_path}/out/"
        lists = {"run-a": VIDEO_URLS[:6], "run-b": VIDEO_URLS[3:9]}
        results: dict[str, TryResult] = {}

        def start(run_id: str) -> threading.Thread:
            thread = threading.Thread(target=lambda: results.update(
                {run_id: run(out, run_id, urls=lists[run_id], deferrable=deferrable)}))
            thread.start()
            return thread

        for thread in [start("run-a"), start("run-b")]:
            thread.join(120)
        assert all(r.error is None for r in results.values()), {k: r.error for k, r in results.items()}
        assert charges(sandbox_connections) == {u: 1 for u in VIDEO_URLS[:9]}
        for url in VIDEO_URLS[3:6]:  # in both lists: landed by one run, skipped (its file) by the other
            statuses = sorted(by_url(results[r])[url]["status"] for r in results)
            assert statuses == ["landed", "skipped"], (url, statuses)
        assert len(list((tmp_path / "out").glob("s_*.mp4"))) == 9

    def test_a_video_landed_after_a_run_looked_is_not_paid_again(self, sandbox_connections: SandboxServer,
                                                                 tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
        """Run B plans before run A lands and claims just after A released: A's landed mark stops B paying."""
        from airflow_sora.batch.plan import Planner

        out = f"file://{tmp_path}/out/"
        assert run(out, "run-a", urls=URLS[:1]).error is None
        monkeypatch.setattr(Planner, "_landed_copies", lambda self, entries: {})  # B saw the folder before
        late = run(out, "run-b", urls=URLS[:1])
        assert late.error is None and by_url(late)[URLS[0]]["status"] == "skipped"
        assert charges(sandbox_connections) == {URLS[0]: 1}

    def test_a_run_killed_part_way_keeps_its_claims_and_its_retry_lands_them(
            self, sandbox_connections: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        out = f"file://{tmp_path}/out/"
        with monkeypatch.context() as patch:
            kill_on_save(patch, Phase.SUBMITTED, before=False, nth=2)
            with pytest.raises(WorkerKilled):
                run(out, "run-a")
        paid_by_a = dict(charges(sandbox_connections))
        assert paid_by_a  # the killed run paid for what it created
        waiting = run(out, "run-b", claim_wait=1.0)  # the holder is presumed alive: wait, never pay
        assert isinstance(waiting.error, SoraPendingError)
        assert all(charges(sandbox_connections)[u] == 1 for u in paid_by_a)
        retried = run(out, "run-a", try_number=2)
        assert retried.error is None and retried.value["counts"]["landed"] == len(URLS)
        again = run(out, "run-b", try_number=2)
        assert again.error is None
        assert charges(sandbox_connections) == {u: 1 for u in URLS}

    def test_a_dead_holders_claim_expires_and_another_run_takes_over(
            self, sandbox_connections: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        out = f"file://{tmp_path}/out/"
        monkeypatch.setattr("airflow_sora.operators.remove.LEASE_TTL", 0.2)
        with monkeypatch.context() as patch:
            kill_on_save(patch, Phase.SUBMITTED, before=False, nth=1)
            with pytest.raises(WorkerKilled):
                run(out, "run-a", urls=URLS[:1], timeout=0.5)  # a claim of 2 x 0.5 + 2 x 0.2 = 1.4 s
        time.sleep(1.6)
        taken = run(out, "run-b", urls=URLS[:1])
        assert taken.error is None and by_url(taken)[URLS[0]]["status"] == "landed"
        assert charges(sandbox_connections) == {URLS[0]: 2}  # the dead run's create was lost with it


class TestUnknownOutcomes:
    def test_a_gateway_timeout_on_a_create_is_never_repeated(self, sandbox_connections: SandboxServer,
                                                             tmp_path: Path) -> None:
        """A 524 (the gateway timed out waiting for the service) may hide a processed, charged create."""
        sandbox_connections.set_faults(endpoints=["createTask"], non_json={"count": 1}, non_json_status=524)
        result = run(f"file://{tmp_path}/out/", "gateway")
        assert by_url(result)[URLS[0]]["status"] == "failed"
        assert "may have been charged" in by_url(result)[URLS[0]]["error"]
        assert creates_sent(sandbox_connections) == len(URLS)  # never sent twice

    def test_a_failed_landing_keeps_the_claim_so_no_other_run_pays(self, sandbox_connections: SandboxServer,
                                                                    tmp_path: Path) -> None:
        out = f"file://{tmp_path}/out/"
        sandbox_connections.set_faults(truncate_download={"count": 1})
        first = run(out, "run-a", urls=URLS[:1])
        assert isinstance(first.error, SoraPendingError)  # landing failed, the paid result is kept
        other = run(out, "run-b", urls=URLS[:1], claim_wait=0.5)
        assert isinstance(other.error, SoraPendingError) and charges(sandbox_connections) == {URLS[0]: 1}
        retried = run(out, "run-a", try_number=2, urls=URLS[:1])
        assert retried.error is None and by_url(retried)[URLS[0]]["status"] == "landed"
        assert charges(sandbox_connections) == {URLS[0]: 1}


class TestBudget:
    def test_creates_past_the_budget_are_never_sent(self, sandbox_connections: SandboxServer,
                                                    tmp_path: Path) -> None:
        result = run(f"file://{tmp_path}/out/", "budget", max_credits=25)
        statuses = {u: by_url(result)[u]["status"] for u in URLS}
        assert sorted(statuses.values()) == ["landed", "landed", "not_submitted"]  # creates race for the budget
        (held,) = [u for u, s in statuses.items() if s == "not_submitted"]
        assert "max_credits=25" in by_url(result)[held]["error"] and by_url(result)[held]["credits_charged"] == 0
        assert result.value["credits_charged"] == 20 and result.value["counts"]["not_submitted"] == 1
        assert charges(sandbox_connections) == {u: 1 for u in URLS if u != held}
        strict = run(f"file://{tmp_path}/other/", "budget-strict", max_credits=25, fail_on_error=True)
        assert isinstance(strict.error, SoraFailedError) and "not submitted" in str(strict.error)

    def test_the_budget_spans_retries_and_counts_an_unknown_outcome_as_charged(
            self, sandbox_connections: SandboxServer, tmp_path: Path) -> None:
        out = f"file://{tmp_path}/out/"
        sandbox_connections.set_faults(endpoints=["createTask"], lost_reply={"count": 1})
        first = run(out, "budget", max_credits=20)
        statuses = {u: by_url(first)[u]["status"] for u in URLS}
        assert statuses[URLS[0]] == "failed" and "may have been charged" in by_url(first)[URLS[0]]["error"]
        assert sorted(statuses[u] for u in URLS[1:]) == ["landed", "not_submitted"]  # the unknown one counted
        retry = run(out, "budget", try_number=2, max_credits=20, on_unknown_submit="resubmit")
        # The unknown create and the landed one already used the budget: nothing more is sent.
        assert {u: by_url(retry)[u]["status"] for u in URLS} == {
            u: "landed" if statuses[u] == "landed" else "not_submitted" for u in URLS}
        assert sum(charges(sandbox_connections).values()) == 2
        assert retry.value["credits_charged"] == 20
