"""The operator's settings as the batch parts read them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from airflow_sora.lifecycle import IfExists, OnUnknownSubmit, Policy
from airflow_sora.polling import PollSchedule


@dataclass
class BatchSettings:
    if_exists: IfExists = "skip"
    keep_source: bool = False
    on_unknown_submit: OnUnknownSubmit = "fail"
    resubmit_failed: bool = False
    callback_url: str | None = None
    landing_concurrency: int = 8
    max_active_submissions: int = 100  # Kie runs "about 100+" tasks at once per account
    submit_concurrency: int = 8  # creates in flight at once (the rate limit still sets the pace)
    submit_passes: int = 3  # passes over creates that got a transient error reply (nothing was created)
    submit_pass_delay: float = 2.0
    # When the running cap bound, the tasks still running after the last create are waited for in the worker if
    # all fall due within this many seconds: a deferral round trip and a resume cost more than that.
    finish_tail_within: float = 10.0
    plan_concurrency: int = 8  # sidecar reads in flight while planning
    max_credits: float | None = None  # budget for this logical run of the task, retries included
    retry_failed_after: float | None = 24 * 3600.0  # seconds before a video the service failed is paid again
    retry_rejected: bool = False  # pay again for a video the service refused as invalid in an earlier run
    claim_wait: float = 600.0  # how long to wait for another run paying for the same video into this folder
    # How long a claim lasts unless renewed: the submission and the wait for the service (timeout each), plus the
    # landing. A holder that died blocks other runs this long; a live one renews it on its next try.
    claim_ttl: float = 2 * 900.0 + 240.0
    poll_schedule: PollSchedule = field(default_factory=PollSchedule)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def policy(self) -> Policy:
        return Policy(if_exists=self.if_exists, on_unknown_submit=self.on_unknown_submit,
                      resubmit_failed=self.resubmit_failed, retry_failed_after=self.retry_failed_after,
                      retry_rejected=self.retry_rejected)
