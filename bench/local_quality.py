"""The local engine's quality and speed on synthetic clips whose clean frames are known.

    python bench/local_quality.py                                  # five clips, 9 s at 720p30, speed on pan
    python bench/local_quality.py --clips pan,static --seconds 5   # a quick look (RESULTS.md kept)
    python bench/local_quality.py --memory                         # adds peak RSS on a 60 s 1080p clip

Each clip (``bench/local_clips.py``) is a watermarked input encoded like a Sora download; the engine gets only
that file, never the compositing alpha or the positions, and removes with what it estimates. Quality is measured
on luma (BT.601 Y) inside the mark's true box padded by 4 px, per frame, averaged over the marked frames,
against two references measured the same way: "no removal" (the input) and the "codec ceiling" (the clean truth
encoded with the engine's own x264 settings), so the engine is judged against what the codec allows. Speed is
the engine beside a plain PyAV decode + encode of the same file with the same settings, alternated, median of
the repeats. Goals are printed beside the numbers, never asserted.

Prints a table, saves ``bench/results/local-<stamp>.json``, PNG crops around one jump per clip in
``bench/results/local-frames/``, and (for a full run) replaces the "Local engine" section of
``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
WORK = RESULTS / "tmp" / "local"  # inputs (cached per spec), outputs, ceilings; ignored by git
FRAMES = RESULTS / "local-frames"
PAD = 4  # px around the true box: the mark's soft edge is inside
RING = 16  # px beyond the padded box: where a remover's spill shows
NEAR = 2  # px: a found position this close to the truth (both coordinates) is a detection
CLIP_PSNR = 99.0  # dB reported for identical pixels
CORE_ALPHA, RESIDUE_LEVELS = 0.4, 16  # a mark pixel (true alpha >= 0.4) off by more than 16 levels is left visible

GOALS = {"gain_db": 12.0, "ssim": 0.90, "gap_moving_db": 8.0, "gap_static_db": 5.0, "outside_db": 37.0,
         "realtime": 1.0, "vs_plain": 0.7, "peak_mb_60s_1080p": 500.0}
FULL_CLIPS = ("pan", "static", "texture", "dark", "clean")
FULL_SECONDS = 9.0

if __package__ in (None, ""):  # run as a script: make ``bench`` and ``airflow_sora`` importable
    sys.path.insert(0, str(REPO))


# measuring helpers --------------------------------------------------------------------------------------
def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 Y of RGB in float32 (the weights the decoder's matrix uses, so Y survives the RGB round trip)."""
    f = rgb.astype(np.float32)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    diff = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    mse = float(diff[mask].mean() if mask is not None else diff.mean())
    return CLIP_PSNR if mse <= 1e-10 else min(CLIP_PSNR, 10 * np.log10(255.0**2 / mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, data_range=255.0))


def decode_rgb(path: Path) -> Iterator[np.ndarray]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")


def facts(path: Path) -> dict[str, Any]:
    """What must survive a cleaning: frame count, size, rate, and the audio (codec and packet count)."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        out: dict[str, Any] = {"width": video.codec_context.width, "height": video.codec_context.height,
                               "fps": float(video.average_rate or 0), "audio_codec": None, "audio_packets": 0,
                               "frames": 0}
        if audio is not None:
            out["audio_codec"] = audio.codec_context.name
        for packet in container.demux(*(s for s in (video, audio) if s is not None)):
            if packet.size and packet.stream is video:
                out["frames"] += 1
            elif packet.size:
                out["audio_packets"] += 1
    return out


def plain_transcode(src: str, dst: str, preset: str, crf: int, threads: int = 0) -> int:
    """The baseline: decode and encode every frame with the same x264 settings, audio remuxed, nothing else."""
    from fractions import Fraction

    with av.open(src) as inp, av.open(dst, "w", format="mp4") as out:
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        if threads:
            vin.codec_context.thread_count = threads
        ain = inp.streams.audio[0] if inp.streams.audio else None
        vout = out.add_stream("libx264", rate=vin.average_rate or Fraction(30))
        vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        vout.time_base = vin.time_base
        vout.options = {"crf": str(crf), "preset": preset}
        if threads:
            vout.codec_context.thread_count = threads
        aout = out.add_stream_from_template(ain) if ain is not None else None
        frames = 0
        for packet in inp.demux(*(s for s in (vin, ain) if s is not None)):
            if packet.stream is vin:
                for frame in packet.decode():
                    frame.pict_type = av.video.frame.PictureType.NONE  # let x264 place its own keyframes
                    out.mux(vout.encode(frame))
                    frames += 1
            elif packet.dts is not None and aout is not None:
                packet.stream = aout
                out.mux(packet)
        out.mux(vout.encode(None))
    return frames


def engine_revision() -> str:
    """The last commit of the engine's code that was measured, and whether its files had uncommitted changes."""
    import airflow_sora.local as local

    root = Path(local.__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args, "--", "airflow_sora/local"], capture_output=True,
                              text=True).stdout.strip()

    try:
        commit, dirty = git("log", "-1", "--format=%h"), git("status", "--porcelain")
    except OSError:
        return "unknown"
    return (commit or "unknown") + (" with uncommitted changes" if dirty else "")


def run_engine(src: Path, dst: Path, settings: Any) -> tuple[Any, float]:
    from airflow_sora.local import clean_file

    started = time.perf_counter()
    report = clean_file(str(src), str(dst), settings)
    return report, time.perf_counter() - started


# quality ----------------------------------------------------------------------------------------------------
def quality(clip: Any, paths: dict[str, Path], report: Any, frames_dir: Path | None) -> dict[str, Any]:
    """One pass over the clip: the truth regenerated frame by frame beside the decoded input, output and
    ceilings."""
    width, height = clip.spec.width, clip.spec.height
    box_w, box_h = clip.box_size
    names = list(paths)  # input, output, ceiling, ceiling2
    per: dict[str, dict[str, list[float]]] = {n: {"psnr": [], "ssim": [], "residue": []}
                                                  for n in [*names, "unblend"]}
    outside: list[float] = []
    ring: list[float] = []
    whole: list[float] = []  # output vs input, every frame (the measure for a clip without a mark)
    near = marked = false_finds = missed = 0
    errors: list[float | None] = []
    offsets: list[tuple[float, float]] = []
    positions = list(report.positions) + [None] * max(0, clip.frames - len(report.positions))
    shots = jump_frames(clip)
    shot_crops: list[tuple[int, list[np.ndarray]]] = []
    decoders = {n: decode_rgb(p) for n, p in paths.items()}
    box_mask = np.zeros((height, width), bool)
    last_box: tuple[int, int] | None = None
    for i in range(clip.frames):
        frames = {n: next(decoders[n], None) for n in names}
        decoded = {n: f for n, f in frames.items() if f is not None}
        if len(decoded) < len(names):  # one of the files ended early: the frame counts say which
            break
        truth = clip.truth(i)
        ys = {n: luma(f) for n, f in decoded.items()}
        yt = luma(truth)
        true_pos = clip.position(i)
        found = positions[i]
        if true_pos is None:
            if found is not None:
                false_finds += 1
            errors.append(None)
        else:
            marked += 1
            if found is None:
                missed += 1
                errors.append(None)
            else:
                dx, dy = found[0] - true_pos[0], found[1] - true_pos[1]
                offsets.append((dx, dy))
                errors.append(round(max(abs(dx), abs(dy)), 2))
                near += abs(dx) <= NEAR and abs(dy) <= NEAR
            last_box = true_pos
        whole.append(psnr(ys["output"], ys["input"]))
        if true_pos is not None:
            x0, y0 = max(0, true_pos[0] - PAD), max(0, true_pos[1] - PAD)
            x1, y1 = min(width, true_pos[0] + box_w + PAD), min(height, true_pos[1] + box_h + PAD)
            placed = clip.alpha_at(i)
            assert placed is not None  # a frame with a true position has an alpha
            ys["unblend"] = unblend(ys["input"], placed)
            px, py, alpha = placed
            core = alpha >= CORE_ALPHA
            patch = (slice(py, py + alpha.shape[0]), slice(px, px + alpha.shape[1]))
            for n in per:
                per[n]["psnr"].append(psnr(ys[n][y0:y1, x0:x1], yt[y0:y1, x0:x1]))
                per[n]["ssim"].append(ssim(ys[n][y0:y1, x0:x1], yt[y0:y1, x0:x1]))
                per[n]["residue"].append(float((np.abs(ys[n][patch] - yt[patch])[core] > RESIDUE_LEVELS).mean()))
            box_mask[:] = False
            box_mask[y0:y1, x0:x1] = True
            outside.append(psnr(ys["output"], ys["input"], ~box_mask))
            rx0, ry0 = max(0, x0 - RING), max(0, y0 - RING)
            rx1, ry1 = min(width, x1 + RING), min(height, y1 + RING)
            ring_mask = np.ones((ry1 - ry0, rx1 - rx0), bool)
            ring_mask[y0 - ry0:y1 - ry0, x0 - rx0:x1 - rx0] = False
            ring.append(psnr(ys["output"][ry0:ry1, rx0:rx1], ys["input"][ry0:ry1, rx0:rx1], ring_mask))
        else:
            outside.append(whole[-1])
        where = true_pos or last_box
        if i in shots and where is not None:
            shot_crops.append((i, crops(decoded["input"], decoded["output"], truth, where, clip.box_size)))
    result: dict[str, Any] = {"frames_measured": len(whole), "marked_frames": marked}
    for n in per:
        if per[n]["psnr"]:
            result[n] = {"psnr_db": float(np.mean(per[n]["psnr"])), "ssim": float(np.mean(per[n]["ssim"])),
                         "residue": float(np.mean(per[n]["residue"]))}
    if marked:
        out_psnr = np.array(per["output"]["psnr"])
        marked_idx = [i for i in range(len(whole)) if clip.position(i) is not None]
        worst = np.argsort(out_psnr)[:5]
        result["worst_frames"] = [{"frame": marked_idx[k], "psnr_db": round(float(out_psnr[k]), 2)} for k in worst]
        result["gain_db"] = result["output"]["psnr_db"] - result["input"]["psnr_db"]
        result["gap_to_ceiling_db"] = result["ceiling"]["psnr_db"] - result["output"]["psnr_db"]
        result["outside_psnr_db"] = float(np.mean(outside))
        result["outside_worst_db"] = float(np.min(outside))
        result["ring_psnr_db"] = float(np.mean(ring))
        result["detected"] = near / marked
        if offsets:  # a constant offset is a different corner convention, not a tracking error
            mx, my = (float(np.median([o[k] for o in offsets])) for k in (0, 1))
            result["median_offset_px"] = [mx, my]
            result["detected_after_offset"] = sum(
                abs(dx - mx) <= NEAR and abs(dy - my) <= NEAR for dx, dy in offsets) / marked
        result["missed"] = missed
        result["per_frame_psnr_db"] = [round(float(v), 2) for v in out_psnr]
    result["false_finds"] = false_finds
    result["unmarked_frames"] = len(whole) - marked
    result["whole_psnr_db"] = float(np.mean(whole))
    result["position_error_px"] = errors
    if frames_dir is not None and shot_crops:
        result["frames_png"] = save_shots(clip.spec.kind, shot_crops, frames_dir)
    return result


def unblend(y: np.ndarray, placed: tuple[int, int, np.ndarray] | None) -> np.ndarray:
    """The reference a matte can reach at best: the input's luma unblended with the TRUE alpha (white = 255).

    Never given to the engine; it shows how much of the engine's error is the input's codec noise, which the
    unblending amplifies by 1 / (1 - alpha) (5x, +14 dB at alpha 0.8), rather than its own estimates."""
    if placed is None:
        return y
    x0, y0, alpha = placed
    out = y.copy()
    region = out[y0:y0 + alpha.shape[0], x0:x0 + alpha.shape[1]]
    region[:] = np.clip((region - alpha * 255.0) / (1.0 - alpha), 0.0, 255.0)
    return out


def jump_frames(clip: Any) -> set[int]:
    """Frames around the first jump: a fading frame, the last held frame, the blank frames, the first two after."""
    track = clip.track
    for i in range(1, len(track)):
        if track[i - 1] is not None and track[i] is None:
            after = next((j for j in range(i, len(track)) if track[j] is not None), None)
            picks = {i - 3, i - 1, *range(i, after or i + 1)}
            if after is not None:
                picks |= {after, after + 1}
            return {p for p in picks if 0 <= p < len(track)}
    return {len(track) // 2}


def crops(inp: np.ndarray, out: np.ndarray, truth: np.ndarray, pos: tuple[int, int],
          size: tuple[int, int]) -> list[np.ndarray]:
    height, width = truth.shape[:2]
    x0, y0 = max(0, pos[0] - 8), max(0, pos[1] - 8)
    x1, y1 = min(width, pos[0] + size[0] + 8), min(height, pos[1] + size[1] + 8)
    return [frame[y0:y1, x0:x1].copy() for frame in (inp, out, truth)]


def save_shots(kind: str, shots: list[tuple[int, list[np.ndarray]]], folder: Path) -> list[str]:
    """One PNG per frame: input | output | truth crops, upscaled 2x (nearest, so the pixels stay visible)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(f"{kind}-*.png"):  # crops of an earlier run of this clip
        stale.unlink()
    names = []
    for index, parts in shots:
        gap = np.full((parts[0].shape[0], 4, 3), 255, np.uint8)
        row = np.concatenate([parts[0], gap, parts[1], gap, parts[2]], axis=1)
        row = cv2.resize(row, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
        name = f"{kind}-{index:04d}.png"
        cv2.imwrite(str(folder / name), cv2.cvtColor(row, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        names.append(name)
    return names


def measure_clip(kind: str, seconds: float, settings: Any, frames_dir: Path | None) -> dict[str, Any]:
    from bench.local_clips import Clip, spec_for

    clip = Clip(spec_for(kind, seconds))
    src = clip.ensure(WORK)
    out_path = WORK / f"{clip.spec.key()}.out.mp4"
    ceiling = WORK / f"{clip.spec.key()}.ceiling-{settings.preset}-{settings.crf}.mp4"
    ceiling2 = WORK / f"{clip.spec.key()}.ceiling2-{settings.preset}-{settings.crf}.mp4"
    if not ceiling.exists():
        clip.write_truth(ceiling, settings.preset, settings.crf)
    if not ceiling2.exists():  # what a perfect remover would give: the truth through both encodes
        first = WORK / f"{clip.spec.key()}.truth.mp4"
        clip.write_truth(first, clip.spec.preset, clip.spec.crf)
        plain_transcode(str(first), str(ceiling2), settings.preset, settings.crf, settings.threads)
        first.unlink()
    report, seconds_taken = run_engine(src, out_path, settings)
    paths = {"input": src, "output": out_path, "ceiling": ceiling, "ceiling2": ceiling2}
    row = quality(clip, paths, report, frames_dir)
    before, after = facts(src), facts(out_path)
    row.update(
        kind=kind, input_file=src.name, seconds=seconds_taken, engine_fps=clip.frames / seconds_taken,
        source_fps=clip.spec.fps, frames=clip.frames, box=list(clip.box_size),
        report={k: v for k, v in report.summary().items() if k != "segments"},
        segments=report.summary().get("segments", []),
        same_frames=(after["frames"], after["width"], after["height"], round(after["fps"], 3))
        == (before["frames"], before["width"], before["height"], round(before["fps"], 3)),
        audio_kept=bool(after["audio_codec"]) and after["audio_codec"] == before["audio_codec"]
        and after["audio_packets"] == before["audio_packets"],
        input_facts=before, output_facts=after, output_bytes=out_path.stat().st_size,
        input_bytes=src.stat().st_size)
    return row


# speed and memory -------------------------------------------------------------------------------------------
def speed(kind: str, seconds: float, settings: Any, repeats: int) -> dict[str, Any]:
    """Engine and plain transcode on the same file, alternating which goes first; medians of the repeats."""
    from bench.local_clips import Clip, spec_for

    clip = Clip(spec_for(kind, seconds))
    src = clip.ensure(WORK)
    engine_s: list[float] = []
    plain_s: list[float] = []
    for r in range(repeats):
        order = ("engine", "plain") if r % 2 == 0 else ("plain", "engine")
        for which in order:
            if which == "engine":
                engine_s.append(run_engine(src, WORK / "speed-engine.mp4", settings)[1])
            else:
                started = time.perf_counter()
                plain_transcode(str(src), str(WORK / "speed-plain.mp4"), settings.preset, settings.crf,
                                settings.threads)
                plain_s.append(time.perf_counter() - started)
    engine, plain = statistics.median(engine_s), statistics.median(plain_s)
    return {"clip": kind, "frames": clip.frames, "source_fps": clip.spec.fps,
            "resolution": f"{clip.spec.width}x{clip.spec.height}", "engine_seconds": engine_s,
            "plain_seconds": plain_s, "engine_fps": clip.frames / engine, "plain_fps": clip.frames / plain,
            "engine_vs_plain": plain / engine, "realtime_factor": clip.frames / engine / clip.spec.fps}


def peak_rss_mb(cmd: list[str]) -> tuple[float, float, int]:
    """Peak RSS of one child process, its wall time and its exit code.

    Read from the child's own ``VmHWM`` (a high-water mark, so polling misses nothing but a last-instant
    peak), not from ``ru_maxrss``: Linux carries the parent's high-water mark into a child across fork and
    exec, so a child of this (large) process would report at least the parent's size.
    """
    started = time.perf_counter()
    peak_kb = 0
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errors, cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        while proc.poll() is None:
            peak_kb = max(peak_kb, vm_hwm_kb(proc.pid))
            time.sleep(0.05)
        if proc.returncode:
            errors.seek(0)
            sys.stderr.write(errors.read().decode(errors="replace")[-2000:])
    return peak_kb / 1024, time.perf_counter() - started, proc.returncode


def vm_hwm_kb(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # gone between the poll and the read
        return 0
    line = next((row for row in status.splitlines() if row.startswith("VmHWM:")), None)
    return int(line.split()[1]) if line else 0  # a zombie has no memory left to report


def memory(seconds: float, settings: Any) -> dict[str, Any]:
    """The engine's CLI and the plain transcode as child processes on a long 1080p clip."""
    from bench.local_clips import Clip, long_clip

    clip = Clip(long_clip(seconds))
    started = time.perf_counter()
    src = clip.ensure(WORK)
    made = time.perf_counter() - started
    engine_mb, engine_s, engine_rc = peak_rss_mb([sys.executable, "-m", "airflow_sora.local", str(src),
                                                  str(WORK / "memory-engine.mp4"), "--preset", settings.preset,
                                                  "--crf", str(settings.crf)])
    plain_mb, plain_s, plain_rc = peak_rss_mb([sys.executable, str(Path(__file__).resolve()), "--plain-transcode",
                                               str(src), str(WORK / "memory-plain.mp4"), settings.preset,
                                               str(settings.crf)])
    return {"clip": f"{clip.spec.width}x{clip.spec.height}, {seconds:g} s, {clip.frames} frames", "frames": clip.frames,
            "clip_seconds_to_make": made, "engine_peak_mb": engine_mb, "engine_seconds": engine_s,
            "engine_exit": engine_rc, "plain_peak_mb": plain_mb, "plain_seconds": plain_s, "plain_exit": plain_rc}


# report -----------------------------------------------------------------------------------------------------
def ok(flag: bool) -> str:
    return "ok" if flag else "MISSED"


def goals_met(results: dict[str, Any]) -> dict[str, bool]:
    met: dict[str, bool] = {}
    for row in results["clips"]:
        kind = row["kind"]
        if row.get("marked_frames"):
            gap_goal = GOALS["gap_static_db"] if kind == "static" else GOALS["gap_moving_db"]
            met[f"{kind}: gain >= {GOALS['gain_db']:g} dB"] = row["gain_db"] >= GOALS["gain_db"]
            met[f"{kind}: SSIM >= {GOALS['ssim']:g}"] = row["output"]["ssim"] >= GOALS["ssim"]
            met[f"{kind}: within {gap_goal:g} dB of the ceiling"] = row["gap_to_ceiling_db"] <= gap_goal
            met[f"{kind}: outside >= {GOALS['outside_db']:g} dB"] = row["outside_psnr_db"] >= GOALS["outside_db"]
        else:
            met[f"{kind}: whole frame >= {GOALS['outside_db']:g} dB"] = row["whole_psnr_db"] >= GOALS["outside_db"]
    if results.get("speed"):
        s = results["speed"]
        met["speed >= real time"] = s["realtime_factor"] >= GOALS["realtime"]
        met[f"speed >= {GOALS['vs_plain']:g} x plain"] = s["engine_vs_plain"] >= GOALS["vs_plain"]
    if results.get("memory"):
        met[f"peak < {GOALS['peak_mb_60s_1080p']:g} MB"] = (
            results["memory"]["engine_exit"] == 0 and results["memory"]["engine_peak_mb"] < GOALS["peak_mb_60s_1080p"])
    return met


def markdown(results: dict[str, Any]) -> list[str]:
    s = results["settings"]
    lines = [
        "## Local engine", "",
        f"`python bench/local_quality.py{results['args']}` (`bench/results/{results['file']}`), run "
        f"{results['when']} on {results['machine']}; the engine at {results['engine_revision']}, x264 preset "
        f"{s['preset']}, crf {s['crf']}.",
        "Synthetic clips from `bench/local_clips.py` (1280x720, 30 fps, AAC audio, input x264 crf 20): the engine "
        "gets only the watermarked file. In the box = the mark's true box padded by 4 px, luma, mean over the "
        "marked frames; no removal = the input; ceiling = the clean truth encoded with the engine's settings; "
        "two encodes = the truth encoded as the input was, then transcoded with the engine's settings (a perfect "
        "remover's result); unblend = the input unblended with the true alpha, before any re-encode (the best a "
        "matte can do: it amplifies the input's codec noise by 1 / (1 - alpha)). Outside = output vs input, the "
        "padded box masked out (whole frames on the clean clip). "
        "Detected = marked frames where the engine's position is within 2 px of the truth; false finds = frames "
        "without a mark where it reported one. Mark left visible = share of the mark's core pixels (true alpha "
        f">= {CORE_ALPHA:g}) whose luma is off the truth by more than {RESIDUE_LEVELS} levels.", "",
        "| clip | marked / blank frames | in box PSNR dB: output, no removal, ceiling, two encodes, unblend | "
        "gain dB | gap to ceiling dB | SSIM: output, no removal, ceiling, unblend | mark left visible: output, "
        "unblend | outside dB | detected | false finds | audio kept | frames, size, fps equal | engine fps |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in results["clips"]:
        if row.get("marked_frames"):
            o, i, c, c2, u = (row[k] for k in ("output", "input", "ceiling", "ceiling2", "unblend"))
            lines.append(
                f"| {row['kind']} | {row['marked_frames']} / {row['unmarked_frames']} | {o['psnr_db']:.1f}, "
                f"{i['psnr_db']:.1f}, {c['psnr_db']:.1f}, {c2['psnr_db']:.1f}, {u['psnr_db']:.1f} | "
                f"{row['gain_db']:+.1f} | {row['gap_to_ceiling_db']:.1f} | "
                f"{o['ssim']:.3f}, {i['ssim']:.3f}, {c['ssim']:.3f}, {u['ssim']:.3f} | "
                f"{o['residue']:.1%}, {u['residue']:.1%} | "
                f"{row['outside_psnr_db']:.1f} | {detected(row)} | {row['false_finds']} | "
                f"{'yes' if row['audio_kept'] else 'NO'} | {'yes' if row['same_frames'] else 'NO'} | "
                f"{row['engine_fps']:.1f} |")
        else:
            whole = row["whole_psnr_db"]
            lines.append(
                f"| {row['kind']} | 0 / {row['unmarked_frames']} | - | - | - | - | - | "
                f"{'identical' if whole >= CLIP_PSNR else f'{whole:.1f}'} | - | {row['false_finds']} | "
                f"{'yes' if row['audio_kept'] else 'NO'} | {'yes' if row['same_frames'] else 'NO'} | "
                f"{row['engine_fps']:.1f} |")
    lines += ["", "What the engine reported on the marked clips (segments; median box found vs the true box; worst "
                  "in-box frames):", ""]
    for row in (r for r in results["clips"] if r.get("marked_frames")):
        segs = row["segments"]
        found = (f"{np.median([g['width'] for g in segs]):.0f}x{np.median([g['height'] for g in segs]):.0f}"
                 if segs else "-")
        worst = ", ".join(f"{w['frame']} ({w['psnr_db']:.1f} dB)" for w in row.get("worst_frames", [])[:3])
        lines.append(f"- {row['kind']}: {len(segs)} segments, {row['report']['marked_frames']} frames marked, box "
                     f"{found} (true {row['box'][0]}x{row['box'][1]}); worst frames {worst or '-'}.")
    if results.get("speed"):
        sp = results["speed"]
        lines += ["", f"Speed on the {sp['clip']} clip ({sp['resolution']}, {sp['frames']} frames at "
                      f"{sp['source_fps']} fps), engine and a plain PyAV decode + encode (same preset and crf, audio "
                      f"remuxed) alternated, median of {len(sp['engine_seconds'])}: engine {sp['engine_fps']:.1f} "
                      f"fps, plain {sp['plain_fps']:.1f} fps; engine / plain {sp['engine_vs_plain']:.2f}; "
                      f"real-time factor {sp['realtime_factor']:.2f}."]
    if results.get("memory"):
        m = results["memory"]
        failed = "" if m["engine_exit"] == 0 else f", exit {m['engine_exit']}"
        lines += ["", f"Peak RSS, child processes on a {m['clip']} pan clip: the engine's CLI "
                      f"{m['engine_peak_mb']:.0f} MB ({m['engine_seconds']:.0f} s, "
                      f"{m['frames'] / m['engine_seconds']:.1f} fps{failed}), the plain transcode "
                      f"{m['plain_peak_mb']:.0f} MB ({m['plain_seconds']:.0f} s, "
                      f"{m['frames'] / m['plain_seconds']:.1f} fps)."]
    shots = [name for row in results["clips"] for name in row.get("frames_png", [])]
    if shots:
        lines += ["", "Crops around each clip's first jump (input | output | truth, 2x): "
                      "`bench/results/local-frames/<clip>-<frame>.png`."]
    met = results["goals_met"]
    lines += ["", "Goals (printed, not asserted): " + "; ".join(f"{k} {ok(v)}" for k, v in met.items()) + "."]
    return lines


def detected(row: dict[str, Any]) -> str:
    """Share within 2 px; with a constant offset, also the share once that offset is taken out."""
    text = f"{row['detected']:.1%}"
    offset = row.get("median_offset_px")
    if offset and (abs(offset[0]) > NEAR or abs(offset[1]) > NEAR or row["detected_after_offset"] > row["detected"]):
        text += f" ({row['detected_after_offset']:.1%} at offset {offset[0]:+g},{offset[1]:+g})"
    return text


def replace_section(markdown_text: str, section: list[str]) -> str:
    """The file with its "## Local engine" section replaced (or appended); every other section as it was."""
    lines = markdown_text.rstrip("\n").split("\n")
    start = next((k for k, line in enumerate(lines) if line.strip() == "## Local engine"), None)
    if start is None:
        return "\n".join([*lines, "", *section]) + "\n"
    end = next((k for k in range(start + 1, len(lines)) if lines[k].startswith("## ")), len(lines))
    tail = lines[end:]
    return "\n".join([*lines[:start], *section, *(["", *tail] if tail else [])]) + "\n"


def table(results: dict[str, Any]) -> str:
    return "\n".join(markdown(results)[4:])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--plain-transcode"]:  # the memory row's baseline, in its own process
        src, dst, preset, crf = argv[1:5]
        plain_transcode(src, dst, preset, int(crf))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", default=",".join(FULL_CLIPS))
    parser.add_argument("--seconds", type=float, default=FULL_SECONDS, help="length of each clip")
    parser.add_argument("--preset", default="veryfast", help="the engine's x264 preset")
    parser.add_argument("--crf", type=int, default=18, help="the engine's x264 crf")
    parser.add_argument("--speed-clip", default="pan")
    parser.add_argument("--repeats", type=int, default=3, help="speed repeats (0: no speed row)")
    parser.add_argument("--memory", action="store_true", help="peak RSS on a long 1080p clip (minutes)")
    parser.add_argument("--memory-seconds", type=float, default=60.0)
    parser.add_argument("--no-frames", action="store_true", help="no PNG crops")
    args = parser.parse_args(argv)
    from airflow_sora.local import EngineSettings

    settings = EngineSettings(preset=args.preset, crf=args.crf)
    when = datetime.now(timezone.utc)
    stamp = when.strftime("%Y%m%dT%H%M%S%z")
    results: dict[str, Any] = {
        "when": when.isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
                   f"PyAV {av.__version__}",
        "args": "".join(f" {a}" for a in argv), "file": f"local-{stamp}.json", "settings": settings.as_dict(),
        "engine_revision": engine_revision(),
        "goals": GOALS, "clips": []}
    clips = [c for c in args.clips.split(",") if c]
    for kind in clips:
        row = measure_clip(kind, args.seconds, settings, None if args.no_frames else FRAMES)
        results["clips"].append(row)
        print(json.dumps({k: v for k, v in row.items() if not k.startswith(("per_frame", "position_error"))},
                         default=str), flush=True)
    if args.repeats:
        results["speed"] = speed(args.speed_clip, args.seconds, settings, args.repeats)
        print(json.dumps(results["speed"]), flush=True)
    if args.memory:
        results["memory"] = memory(args.memory_seconds, settings)
        print(json.dumps(results["memory"]), flush=True)
    results["goals_met"] = goals_met(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / results["file"]).write_text(json.dumps(results, indent=1, default=str))
    print(table(results))
    full = set(clips) == set(FULL_CLIPS) and args.seconds == FULL_SECONDS and args.repeats and args.memory
    if full:
        results_md = REPO / "bench" / "RESULTS.md"
        results_md.write_text(replace_section(results_md.read_text(), markdown(results)))
    print(f"saved bench/results/{results['file']}" + ("; RESULTS.md updated" if full else
                                                       " (a partial run: RESULTS.md kept)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
