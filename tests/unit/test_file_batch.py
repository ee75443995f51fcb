"""Pure logic of the local operator's batch: names, the sidecar's position summary, progress lines, the verdict."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_sora.exceptions import SoraFailedError, SoraPendingError
from airflow_sora.local import CleanReport
from airflow_sora.local_batch import FileOutcome, FileStatus, LocalManifest, output_name
from airflow_sora.local_batch.progress import LocalProgress
from airflow_sora.local_batch.provenance import engine_info, positions_summary
from airflow_sora.local_batch.report import judge
from tests.unit.clock import Clock

POST = "s_68e83bd7eee88191be79d2ba7158516f"


@pytest.mark.parametrize(("file_name", "expected"), [
    (f"{POST}.mp4", (POST, POST)),
    (f"{POST}.source.mp4", (POST, POST)),
    (f"sora-{POST}-1080p.MP4", (POST, POST)),
    ("holiday.mp4", ("holiday", None)),
    ("clip.final.mp4", ("clip.final", None)),
    ("s_68E83BD7EEE88191BE79D2BA7158516F.mp4", ("s_68E83BD7EEE88191BE79D2BA7158516F", None)),  # not a post id
    ("s_123.mp4", ("s_123", None)),
])
def test_output_name(file_name: str, expected: tuple[str, str | None]) -> None:
    assert output_name(file_name) == expected


def test_positions_summary_groups_places_and_counts_jumps() -> None:
    track: list[tuple[float, float] | None] = [(10.0, 10.0)] * 3 + [(11.5, 9.0)] * 2 + [None] + [(200.0, 80.0)] * 4
    track += [(10.2, 10.1)] * 2
    summary = positions_summary(track)
    assert summary["frames"] == 12 and summary["frames_with_mark"] == 11 and summary["jumps"] == 2
    first, second = summary["places"]
    assert (first["frames"], first["first"], first["last"]) == (7, 0, 11)
    assert 10.0 <= first["x"] <= 11.5 and (second["x"], second["y"], second["frames"]) == (200.0, 80.0, 4)
    assert positions_summary([None, None]) == {"frames": 2, "frames_with_mark": 0, "places": [], "jumps": 0}


@pytest.mark.parametrize(("engine", "name", "version"), [
    ("airflow-provider-sora local engine 0.1.0", "airflow-provider-sora local engine", "0.1.0"),
    ("engine/2.3.1", "engine", "2.3.1"),
])
def test_engine_info(engine: str, name: str, version: str) -> None:
    report = CleanReport(frames=1, width=2, height=2, fps=24.0, mark_found=False, engine=engine,
                         settings={"crf": 18})
    info = engine_info(report)
    assert (info.name, info.version, info.settings) == (name, version, {"crf": 18})


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, fmt: str, *args: Any) -> None:
        self.lines.append(fmt % args)


def outcome(status: FileStatus) -> FileOutcome:
    return FileOutcome(source="file:///x.mp4", status=status)


def test_progress_lines_count_files_show_frames_and_estimate_the_time_left() -> None:
    log, clock = Lines(), Clock()
    progress = LocalProgress(log, [100, 100, 200], interval=15.0, clock=clock)
    progress.start_file(0, "a.mp4")
    assert log.lines[-1] == ("Sora local progress [fetch]: 0/3 files done (0 landed, 0 failed); file 1/3 a.mp4: "
                             "fetch; time left unknown yet")
    progress.stage("scan", 10, 100)
    assert len(log.lines) == 1  # a stage change alone writes nothing
    clock.now += 10
    progress.stage("render", 50, 100)
    assert len(log.lines) == 1
    clock.now += 6  # 16 s since the last line
    progress.stage("render", 100, 100)
    assert "file 1/3 a.mp4: render 100/100 frames at 16.7 fps" in log.lines[-1]
    progress.finish_file(outcome(FileStatus.LANDED))
    # one file of a quarter of the work took 16 s: three quarters are left
    assert progress.seconds_left() == pytest.approx(48.0)
    progress.start_file(1, "b.mp4")
    assert "1/3 files done (1 landed, 0 failed); file 2/3 b.mp4" in log.lines[-1]
    progress.finish_file(outcome(FileStatus.NO_MARK))
    progress.settled_before_work(2, outcome(FileStatus.SKIPPED))
    progress.write()
    assert log.lines[-1] == "Sora local progress [done]: 3/3 files done (1 landed, 1 no mark, 1 skipped, 0 failed)"


def test_progress_ticker_writes_while_the_engine_is_silent() -> None:
    import time

    log = Lines()
    progress = LocalProgress(log, [1], interval=0.15)
    progress.start_file(0, "a.mp4")
    with progress.ticking():
        time.sleep(0.5)
    assert len(log.lines) >= 3


def manifest(*statuses: FileStatus, retryable: bool = False) -> LocalManifest:
    return LocalManifest(engine="e", output_path="file:///o/", videos=[
        FileOutcome(source=f"file:///{i}.mp4", status=s, retryable=retryable, frames=10, seconds=1.0)
        for i, s in enumerate(statuses)])


def test_verdicts() -> None:
    error, sentence = judge(manifest(FileStatus.LANDED, FileStatus.NO_MARK), fail_on_error=True)
    assert error is None and sentence == ("Sora local watermark removal finished successfully: 1 landed, 1 without "
                                          "a mark, 0 skipped, 0 failed of 2; 20 frames in 2.0 s (10.0 fps).")
    error, sentence = judge(manifest(FileStatus.LANDED, FileStatus.FAILED), fail_on_error=True)
    assert isinstance(error, SoraFailedError) and sentence.startswith("Sora local watermark removal FAILED")
    error, sentence = judge(manifest(FileStatus.LANDED, FileStatus.FAILED), fail_on_error=False)
    assert error is None and "with problems" in sentence
    error, sentence = judge(manifest(FileStatus.FAILED, retryable=True), fail_on_error=False)
    assert isinstance(error, SoraPendingError) and "NOT FINISHED" in sentence
