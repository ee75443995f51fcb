"""The one-file command and the engine's promises on real files: the mark found where it was drawn, the output
the same length, size and rate with the audio kept, the disclosure in the container, a clean file never
re-encoded, and one clear line naming the file when it is not a video."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from airflow_sora.local import NotAVideoError, clean_file
from airflow_sora.local.codec import DISCLOSURE
from tests.local_clips import ClipSpec, copy_of, mark_alpha, not_a_video, write_clip

pytestmark = pytest.mark.slow


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "airflow_sora.local", *args], capture_output=True, text=True,
                          timeout=300, check=False)


def stream_facts(path: Path) -> tuple[int, int, int, Fraction | None, int, dict[str, str]]:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        size, rate = (video.codec_context.width, video.codec_context.height), video.average_rate
        frames = sum(1 for _ in container.decode(video))
    with av.open(str(path)) as container:
        audio_packets = sum(1 for p in container.demux(container.streams.audio[0]) if p.dts is not None)
        return frames, size[0], size[1], rate, audio_packets, dict(container.metadata)


def test_the_command_cleans_a_marked_file_where_the_mark_was_drawn(tmp_path: Path):
    source = copy_of("marked", tmp_path / "in.mp4")
    out = tmp_path / "out.mp4"
    done = run_cli(str(source), str(out), "--report", str(tmp_path / "found.json"))
    assert done.returncode == 0, done.stderr
    assert "mark removed from" in done.stdout and done.stdout.count("\n") == 1
    frames, width, height, rate, audio, tags = stream_facts(out)
    src_frames, src_width, src_height, src_rate, src_audio, _ = stream_facts(source)
    assert (frames, width, height, rate, audio) == (src_frames, src_width, src_height, src_rate, src_audio)
    assert DISCLOSURE in tags["comment"] and tags["description"] == DISCLOSURE


def test_the_engine_finds_the_mark_at_each_place_it_was_drawn(tmp_path: Path):
    spec = ClipSpec()
    report = clean_file(copy_of("marked", tmp_path / "in.mp4"), tmp_path / "out.mp4")
    assert report.mark_found and report.audio_kept
    alpha = mark_alpha()
    ys, xs = np.nonzero(alpha >= 0.5 * alpha.max())  # the report's box: where the mark reaches half its peak
    close = 0
    for index, found in enumerate(report.positions):
        x, y = spec.position(index)
        if found is not None and abs(found[0] - (x + xs.min())) <= 2 and abs(found[1] - (y + ys.min())) <= 2:
            close += 1
    assert close >= 0.9 * report.frames
    assert len({(round(s.x), round(s.y)) for s in report.segments}) == 3


def test_a_file_without_a_mark_is_copied_byte_for_byte(tmp_path: Path):
    source = copy_of("clean", tmp_path / "in.mp4")
    done = run_cli(str(source), str(tmp_path / "out.mp4"))
    assert done.returncode == 0, done.stderr
    assert "no mark found" in done.stdout
    assert (tmp_path / "out.mp4").read_bytes() == source.read_bytes()


def test_a_file_that_is_not_a_video_gets_one_line_naming_it(tmp_path: Path):
    bad = not_a_video(tmp_path / "notes.mp4")
    done = run_cli(str(bad), str(tmp_path / "out.mp4"))
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and str(bad) in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out.mp4").exists()


def test_a_file_with_sound_only_is_refused_by_name(tmp_path: Path):
    path = tmp_path / "sound.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        samples = np.zeros((1, 1024), np.float32)
        for start in range(0, 44100, 1024):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 44100, start, Fraction(1, 44100)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(NotAVideoError, match=r"sound\.mp4: has no video stream"):
        clean_file(path, tmp_path / "out.mp4")


def test_the_scan_decodes_every_frame_of_the_opening_then_only_the_frames_others_refer_to(tmp_path):
    from airflow_sora.local import codec

    clip = write_clip(tmp_path / "marked.mp4")  # with its audio track
    every = [planes.y.copy() for planes in codec.iter_planes(str(clip))]
    scanned = codec.Scanned(str(clip), all_until=20)
    seen = [(index, planes.y.copy()) for index, planes in scanned]
    indexes = [index for index, _ in seen]
    assert scanned.frames == len(every)
    assert indexes[:20] == list(range(20)) and indexes == sorted(set(indexes))
    assert len(indexes) < 0.8 * len(every)  # x264's B-frames that nothing refers to were skipped
    assert all(np.array_equal(luma, every[index]) for index, luma in seen)  # each frame at its true index


def test_the_render_edits_frames_below_the_encoders_priority_and_writes_every_one(tmp_path: Path):
    """The encoder is the slowest stage: the frame loop runs on a lowered thread of its own (Linux), the
    caller's priority stays as it was, and every frame still comes out in order."""
    from airflow_sora.local import EngineSettings, codec

    source = write_clip(tmp_path / "in.mp4", ClipSpec(seconds=1.0, marked=False))
    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) if sys.platform.startswith("linux") else 0
    seen: list[tuple[int, str, int]] = []

    def edit(index: int, planes: codec.Planes) -> None:
        thread = threading.current_thread()
        nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) if sys.platform.startswith("linux") else 0
        seen.append((index, thread.name, nice))
        planes.y[:8, :8] = 255  # an edit the encoder must receive

    written = codec.transcode(str(source), str(tmp_path / "out.mp4"), EngineSettings(), edit)
    assert written == 24 and [i for i, _, _ in seen] == list(range(24))
    assert {name for _, name, _ in seen} == {"sora-local-work"}
    if sys.platform.startswith("linux") and caller < 19:
        assert {nice for _, _, nice in seen} == {min(19, caller + 10)}
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == caller
    with av.open(str(tmp_path / "out.mp4")) as out:
        first = next(out.decode(video=0)).to_ndarray(format="gray")
    assert first[:6, :6].mean() > 200  # the edited corner came out
