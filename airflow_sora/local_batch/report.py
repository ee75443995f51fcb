"""The end of a local try: the verdict, the closing lines of the log and the run's metrics.

The verdict follows the service operator's: a file the store failed (a download or an upload) can land on a
retry, so the task raises ``SoraPendingError`` and Airflow retries; a file that is not a video fails with
``fail_on_error`` (no retry could help); otherwise the task succeeds. The last line says which, in one sentence.
"""

from __future__ import annotations

from typing import Any

from airflow_sora import metrics
from airflow_sora.exceptions import SoraFailedError, SoraPendingError
from airflow_sora.local_batch.manifest import FileStatus, LocalManifest


def judge(manifest: LocalManifest, *, fail_on_error: bool) -> tuple[Exception | None, str]:
    """(what the task raises, or None; the closing sentence)."""
    counts = manifest.counts
    tally = (f"{counts['landed']} landed, {counts['no_mark']} without a mark, {counts['skipped']} skipped, "
             f"{counts['failed']} failed of {counts['total']}")
    seconds = sum(v.seconds or 0.0 for v in manifest.videos)
    work = f"{manifest.frames} frames in {seconds:.1f} s" + (f" ({manifest.frames / seconds:.1f} fps)"
                                                              if seconds > 0 else "")
    pending = sum(v.retryable for v in manifest.videos if v.status is FileStatus.FAILED)
    if pending:
        return (SoraPendingError(f"{pending} file(s) could not be read or landed because of the store; raising "
                                 f"so Airflow retries. Manifest: {counts}"),
                f"Sora local watermark removal NOT FINISHED: {pending} file(s) failed in the store and will be "
                f"tried again by a retry; {tally}; {work}.")
    failed = counts["failed"]
    if fail_on_error and failed:
        return (SoraFailedError(f"{failed} file(s) failed (fail_on_error=True). Manifest: {counts}"),
                f"Sora local watermark removal FAILED: {failed} file(s) could not be cleaned (reasons above); "
                f"{tally}; {work}.")
    done = "with problems (fail_on_error=False)" if failed else "successfully"
    return None, f"Sora local watermark removal finished {done}: {tally}; {work}."


def write_closing_lines(manifest: LocalManifest, sentence: str, logger: Any) -> None:
    """Failures (grouped, so the log viewer folds them), then the one-sentence outcome as the last line."""
    failed = [v for v in manifest.videos if v.status is FileStatus.FAILED]
    if failed:
        logger.info("::group::%d file(s) not landed, with reasons", len(failed))
        for video in failed:
            reason = video.error or "no reason given"
            logger.warning("failed: %s", reason if video.source in reason else f"{video.source}: {reason}")
        logger.info("::endgroup::")
    logger.info("%s", sentence)


def emit_metrics(manifest: LocalManifest) -> None:
    for status, count in manifest.counts.items():
        if status != "total":
            metrics.incr(f"local.files.{status}", count, service=manifest.service)
    metrics.incr("local.frames", manifest.frames, service=manifest.service)
