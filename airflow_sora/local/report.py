"""What the local engine found and did for one file: the engine's answer, the sidecar's ``mark`` section."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class MarkSegment:
    """One stretch of frames where the mark holds still: frames ``start``..``end`` (inclusive), its box in
    pixels of the full frame (``x``, ``y`` the top-left corner, sub-pixel), and how sure the engine is (0-1)."""

    start: int
    end: int
    x: float
    y: float
    width: int
    height: int
    confidence: float


@dataclass
class CleanReport:
    """The result of cleaning one file.

    ``positions`` has one entry per frame: the mark's top-left corner where it was found in that frame, else
    None (a blank frame at a jump, a clean file). ``mark_found`` is False when no mark was found at all: the
    output is then an unchanged copy of the input, never a re-encode.
    """

    frames: int
    width: int
    height: int
    fps: float
    mark_found: bool
    segments: list[MarkSegment] = field(default_factory=list)
    positions: list[tuple[float, float] | None] = field(default_factory=list)
    marked_frames: int = 0
    confidence: float = 0.0
    audio_kept: bool = False
    c2pa_kept: bool = False
    seconds: float = 0.0
    engine: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """What the sidecar records: everything but the per-frame track (segments say where the mark was)."""
        data = asdict(self)
        data.pop("positions")
        return data
