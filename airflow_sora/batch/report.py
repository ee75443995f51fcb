"""Part five of a try: the manifest, the closing lines of the log, the run's metrics, and the verdict.

The verdict is what the task tells Airflow: succeed, retry (some videos can still finish at no new cost),
or fail without retries (the account cannot pay, or videos failed with ``fail_on_error``). The last log line
says it in one sentence; failures are listed above it, each with its reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from airflow_sora import metrics
from airflow_sora.exceptions import SoraAccountError, SoraFailedError, SoraPendingError
from airflow_sora.manifest import Manifest, VideoOutcome, VideoStatus
from airflow_sora.services.base import WatermarkService
from airflow_sora.services.errors import ServiceError

log = logging.getLogger(__name__)

_PROBLEMS = (VideoStatus.FAILED, VideoStatus.REJECTED, VideoStatus.NOT_SUBMITTED)


@dataclass(frozen=True)
class Verdict:
    manifest: Manifest
    error: Exception | None  # what the task raises; None: it succeeds
    sentence: str

    def xcom(self) -> dict[str, Any]:
        return self.manifest.to_xcom()


def balance_after(client: WatermarkService) -> float | None:
    """The account's balance once the run is done (free); None if the service would not say."""
    try:
        return float(client.credits().balance)
    except (ServiceError, NotImplementedError, ValueError, TypeError) as error:
        log.info("Could not read the balance after the run: %s", error)
        return None


def judge(manifest: Manifest, *, account_error: ServiceError | None, fail_on_error: bool) -> Verdict:
    counts = manifest.counts
    bill = f"{manifest.credits_charged:g} credits charged"
    if manifest.balance_after is not None:
        bill += f", balance {manifest.balance_after:g}"
    held_back = f", {counts['not_submitted']} not submitted" if counts["not_submitted"] else ""
    tally = (f"{counts['landed']} landed, {counts['skipped']} skipped, {counts['failed']} failed, "
             f"{counts['rejected']} rejected{held_back} of {counts['total']}")
    pending = sum(v.retryable for v in manifest.videos)
    if account_error is not None:
        return Verdict(manifest, SoraAccountError(f"{account_error}. Manifest: {counts}"),
                       f"Sora watermark removal FAILED: the account cannot pay ({account_error}); {tally}; {bill}.")
    if pending:
        return Verdict(manifest, SoraPendingError(
            f"{pending} video(s) can still finish on a retry at no new cost; raising so Airflow retries. "
            f"Manifest: {counts}"),
            f"Sora watermark removal NOT FINISHED: {pending} video(s) will be resumed by a retry at no new "
            f"cost; {tally}; {bill}.")
    problems = counts["failed"] + counts["rejected"] + counts["not_submitted"]
    if fail_on_error and problems:
        return Verdict(manifest, SoraFailedError(
            f"{counts['failed']} failed, {counts['rejected']} rejected and {counts['not_submitted']} not submitted "
            f"video(s) (fail_on_error=True). Manifest: {counts}"),
            f"Sora watermark removal FAILED: {problems} video(s) failed, were rejected or were not submitted "
            f"(reasons above); {tally}; {bill}.")
    done = "with problems (fail_on_error=False)" if problems else "successfully"
    return Verdict(manifest, None, f"Sora watermark removal finished {done}: {tally}; {bill}.")


def write_closing_lines(verdict: Verdict, logger: Any) -> None:
    """Failures (grouped, so the log viewer folds them), then the one-sentence outcome as the last line."""
    problems = [v for v in verdict.manifest.videos if v.status in _PROBLEMS]
    if problems:
        logger.info("::group::%d video(s) not landed, with reasons", len(problems))
        for video in problems:
            logger.warning("%s %s: %s", video.status.value, _shown(video), video.error)
        logger.info("::endgroup::")
    logger.info("%s", verdict.sentence)


def emit_metrics(manifest: Manifest) -> None:
    for status, count in manifest.counts.items():
        if status != "total":
            metrics.incr(f"videos.{status}", count, service=manifest.service)
    if manifest.balance_after is not None:
        metrics.gauge("balance", manifest.balance_after, service=manifest.service)


def _shown(video: VideoOutcome) -> str:
    return f"{video.video_url} ({video.post_id})" if video.post_id else video.video_url
