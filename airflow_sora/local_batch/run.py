"""One try over a list of files: for each, a local copy, the engine, the landing, then the temporary files go.

Files are cleaned one after another: the engine already uses every core for one file, and mapped tasks spread
files over workers. Whatever goes wrong with one file is caught, classified and reported on that file's line;
the next file starts as if nothing happened. A file's problem is the file's (not a video, truncated: no retry
helps) or the store's (a read or a write failed: a retry may land it), told apart by where it happened.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from airflow_sora import metrics
from airflow_sora.lifecycle import IfExists
from airflow_sora.local.errors import LocalEngineError, LocalEngineUnavailableError
from airflow_sora.local.settings import EngineSettings
from airflow_sora.local_batch.land import AlreadyLanded, FileLander, LandedFile
from airflow_sora.local_batch.manifest import SERVICE, FileOutcome, FileStatus
from airflow_sora.local_batch.progress import LocalProgress
from airflow_sora.local_batch.provenance import local_sidecar
from airflow_sora.local_batch.sources import InputVideo, LocalSource, SourceProblem, local_source
from airflow_sora.sidecar import Sidecar

if TYPE_CHECKING:
    from airflow_sora.local import CleanReport

IfNoMark = Literal["copy", "skip"]
Cleaner = Callable[..., "CleanReport"]


@dataclass(frozen=True)
class LocalBatchSettings:
    if_exists: IfExists = "skip"
    if_no_mark: IfNoMark = "copy"
    engine: EngineSettings = field(default_factory=EngineSettings)
    provenance: dict[str, Any] = field(default_factory=dict)  # the Airflow run, copied into every sidecar
    work_dir: str | None = None  # where temporary copies go (default: the system's temporary folder)


class _StoreTrouble(Exception):
    """A read of the source or a write of the result failed: the store's problem, not the file's."""


class LocalBatch:
    """Cleans and lands ``videos``; ``problems`` (bad sources) are reported failed without any work."""

    def __init__(self, videos: list[InputVideo], problems: list[SourceProblem], lander: FileLander,
                 settings: LocalBatchSettings, progress: LocalProgress, clean: Cleaner) -> None:
        self.videos = videos
        self.problems = problems
        self.lander = lander
        self.settings = settings
        self.progress = progress
        self.clean = clean

    def run(self) -> list[FileOutcome]:
        outcomes = [FileOutcome(source=p.source, status=FileStatus.FAILED, error=p.reason) for p in self.problems]
        landed = {} if self.settings.if_exists == "overwrite" else self.lander.landed(v.name for v in self.videos)
        for index, video in enumerate(self.videos):  # already landed: settled at once, no work, no line each
            if video.name in landed:
                outcome = self._found_landed(self._base(video), landed[video.name], before_work=True)
                self.progress.settled_before_work(index, outcome)
                outcomes.append(outcome)
        with self.progress.ticking():
            for index, video in enumerate(self.videos):
                if video.name not in landed:
                    self.progress.start_file(index, video.uri.rsplit("/", 1)[-1])
                    outcome = self._one(video)
                    self.progress.finish_file(outcome)
                    outcomes.append(outcome)
        self.progress.write()
        return outcomes

    # one file ------------------------------------------------------------------------------------------
    @staticmethod
    def _base(video: InputVideo) -> FileOutcome:
        return FileOutcome(source=video.uri, name=video.name, post_id=video.post_id, status=FileStatus.FAILED)

    def _one(self, video: InputVideo) -> FileOutcome:
        base = self._base(video)
        try:
            with tempfile.TemporaryDirectory(prefix="sora-local-", dir=self.settings.work_dir) as folder:
                return self._clean_and_land(base, video, Path(folder))
        except LocalEngineUnavailableError:
            raise  # the worker lacks the extra: every file would fail the same way
        except LocalEngineError as error:  # the file's problem: named, never retried
            return base.model_copy(update={"error": _named(str(error), video), "retryable": False})
        except _StoreTrouble as trouble:
            metrics.incr("errors.landing", service=SERVICE)
            cause = trouble.__cause__ or trouble
            return base.model_copy(update={"error": f"{video.uri}: {trouble} ({type(cause).__name__}: {cause})",
                                           "retryable": True})

    def _clean_and_land(self, base: FileOutcome, video: InputVideo, folder: Path) -> FileOutcome:
        self.progress.stage("fetch")
        with ExitStack() as stack:
            try:
                source = stack.enter_context(local_source(video, folder))
            except Exception as error:  # OSError, botocore's and other stores' errors alike
                raise _StoreTrouble("reading the source failed") from error
            return self._with_source(base, video, source, folder)

    def _with_source(self, base: FileOutcome, video: InputVideo, source: LocalSource, folder: Path) -> FileOutcome:
        base = base.model_copy(update={"source_size": source.size, "source_sha256": source.sha256})
        cleaned = folder / f"{video.name}.mp4"
        try:
            report = self.clean(source.path, cleaned, self.settings.engine, progress=self.progress.stage)
        except LocalEngineError as error:
            raise type(error)(str(error).replace(str(source.path), video.uri)) from None
        except MemoryError:
            raise
        except OSError as error:  # the disk under the temporary folder, not the file
            raise _StoreTrouble("writing the cleaned file to the temporary folder failed") from error
        except Exception as error:  # an engine failure on this one file must not stop the batch
            raise LocalEngineError(f"{video.uri}: the engine failed on this file "
                                   f"({type(error).__name__}: {error})") from error
        found = base.model_copy(update={
            "mark_found": report.mark_found, "segments": len(report.segments), "frames": report.frames,
            "confidence": round(float(report.confidence), 4), "seconds": round(float(report.seconds), 3)})
        if report.seconds > 0:
            metrics.gauge("local.fps", report.frames / report.seconds, service=SERVICE)
            metrics.timing("local.seconds", report.seconds, service=SERVICE)
        if not report.mark_found and self.settings.if_no_mark == "skip":
            return found.model_copy(update={"status": FileStatus.SKIPPED,
                                            "error": "no mark found; nothing landed (if_no_mark='skip')"})
        self.progress.stage("land")
        c2pa = Path(f"{cleaned}.c2pa") if report.c2pa_kept else None
        try:
            landed = self.lander.land(
                video.name, cleaned, c2pa=c2pa, replace=self.settings.if_exists == "overwrite",
                sidecar=lambda obj, c2pa_name: local_sidecar(video, source, obj, report,
                                                             provenance=self.settings.provenance,
                                                             c2pa_name=c2pa_name))
        except AlreadyLanded as already:
            return self._found_landed(found, already.sidecar, before_work=False)
        except Exception as error:
            raise _StoreTrouble("landing the cleaned file failed") from error
        metrics.incr("landing.bytes", landed.video.size, service=SERVICE)
        return self._landed(found, landed, mark_found=report.mark_found)

    def _landed(self, outcome: FileOutcome, landed: LandedFile, *, mark_found: bool) -> FileOutcome:
        return outcome.model_copy(update={
            "status": FileStatus.LANDED if mark_found else FileStatus.NO_MARK,
            "output_uri": landed.video.uri, "sidecar_uri": landed.sidecar_uri, "c2pa_uri": landed.c2pa_uri,
            "size": landed.video.size, "sha256": landed.video.sha256})

    def _found_landed(self, outcome: FileOutcome, sidecar: Sidecar, *, before_work: bool) -> FileOutcome:
        """A copy is already landed under this name: ``skip`` reports it, ``fail`` refuses to replace it."""
        where = {"output_uri": str(self.lander.video_path(outcome.name or "")),
                 "sidecar_uri": str(self.lander.sidecar_path(outcome.name or "")),
                 "size": sidecar.size, "sha256": sidecar.sha256}
        when = "" if before_work else " by another run while this one cleaned it"
        if self.settings.if_exists == "fail":
            return outcome.model_copy(update={
                "status": FileStatus.FAILED, "retryable": False,
                "error": f"{outcome.source}: {outcome.name}.mp4 is already landed{when} (if_exists='fail')"})
        return outcome.model_copy(update={"status": FileStatus.SKIPPED, **where,
                                          "error": f"already landed{when}" if not before_work else None})


def _named(message: str, video: InputVideo) -> str:
    """An error message that names the source as the user gave it."""
    return message if video.uri in message else f"{video.uri}: {message}"


def engine_clean() -> Cleaner:
    """The engine's ``clean_file``; raises ``LocalEngineUnavailableError`` naming the extra when it is missing."""
    from airflow_sora import local

    return local.clean_file

