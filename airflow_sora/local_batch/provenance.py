"""The sidecar of a file the local engine cleaned: where it came from, what was found, which engine did it.

The engine's per-frame track is too long for a sidecar; ``positions_summary`` keeps what a reviewer needs from
it: how many frames had the mark, the places it sat (with the frames at each) and how often it jumped.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from airflow_sora import __version__
from airflow_sora.local_batch.manifest import SERVICE
from airflow_sora.local_batch.sources import InputVideo, LocalSource
from airflow_sora.sidecar import EngineInfo, MarkFindings, Sidecar, SourceFile
from airflow_sora.state import utcnow

if TYPE_CHECKING:
    from airflow_sora.landing import LandedObject
    from airflow_sora.local import CleanReport

#: Two positions closer than this (pixels, each axis) are one place: the engine's sub-pixel jitter.
SAME_PLACE = 8.0
ENGINE_NAME = "airflow_sora.local"


def positions_summary(positions: list[tuple[float, float] | None]) -> dict[str, Any]:
    """``frames``, ``frames_with_mark``, ``places`` (mean corner, frame count, first and last frame of each,
    in order of first appearance) and ``jumps`` (moves from one place to another between marked frames)."""
    places: list[dict[str, Any]] = []
    jumps, previous = 0, None
    for frame, position in enumerate(positions):
        if position is None:
            continue
        x, y = float(position[0]), float(position[1])
        place = next((p for p in places if abs(p["x"] - x) <= SAME_PLACE and abs(p["y"] - y) <= SAME_PLACE), None)
        if place is None:
            place = {"x": x, "y": y, "frames": 0, "first": frame, "last": frame}
            places.append(place)
        place["x"] += (x - place["x"]) / (place["frames"] + 1)  # running mean
        place["y"] += (y - place["y"]) / (place["frames"] + 1)
        place["frames"] += 1
        place["last"] = frame
        if previous is not None and place is not previous:
            jumps += 1
        previous = place
    for place in places:
        place["x"], place["y"] = round(place["x"], 1), round(place["y"], 1)
    return {"frames": len(positions), "frames_with_mark": sum(p is not None for p in positions),
            "places": places, "jumps": jumps}


def engine_info(report: CleanReport) -> EngineInfo:
    """``report.engine`` names the engine and ends with its version (``name/1.2`` or ``name 1.2``); the
    provider's version stands in when it has none."""
    text = (report.engine or ENGINE_NAME).strip()
    match = re.fullmatch(r"(?P<name>.+?)[/ ]v?(?P<version>\d[\w.+-]*)", text)
    if match is None:
        return EngineInfo(name=text, version=__version__, settings=dict(report.settings))
    return EngineInfo(name=match["name"], version=match["version"], settings=dict(report.settings))


def findings(report: CleanReport) -> MarkFindings:
    summary = report.summary()
    extra = {k: v for k, v in summary.items()
             if k not in MarkFindings.model_fields and k not in ("mark_found", "engine", "settings", "segments")}
    return MarkFindings(found=report.mark_found, frames=report.frames, marked_frames=report.marked_frames,
                        confidence=round(float(report.confidence), 4),
                        segments=[asdict(s) if not isinstance(s, dict) else s for s in report.segments],
                        positions=positions_summary(list(report.positions)), audio_kept=report.audio_kept,
                        c2pa_kept=report.c2pa_kept, seconds=round(float(report.seconds), 3), **extra)


def local_sidecar(video: InputVideo, source: LocalSource, landed: LandedObject, report: CleanReport, *,
                  provenance: dict[str, Any], c2pa_name: str | None) -> Sidecar:
    """The same model the services' landings write, with service ``local`` and the engine's findings."""
    return Sidecar(
        source_url=video.uri,
        post_id=video.name,
        service=SERVICE,
        file=landed.uri.rsplit("/", 1)[-1],
        sha256=landed.sha256,
        size=landed.size,
        watermarked_source=SourceFile(file=video.uri, sha256=source.sha256, size=source.size),
        watermark_removed_by=SERVICE if report.mark_found else "none (no mark found: the file is unchanged)",
        landed_at=utcnow(),
        provider=f"airflow-provider-sora/{__version__}",
        engine=engine_info(report),
        mark=findings(report),
        c2pa_manifest=c2pa_name,
        **provenance,
    )
