"""How the local engine encodes: quality first, with a speed preset the user sets."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


@dataclass(frozen=True)
class EngineSettings:
    """:param preset: x264 speed preset (faster presets give bigger files at the same quality).
    :param crf: x264 constant rate factor (lower is better; 18 is visually lossless for most content).
    :param threads: encoder and decoder threads (0: one per core).
    """

    preset: str = "veryfast"
    crf: int = 18
    threads: int = 0

    def __post_init__(self) -> None:
        if self.preset not in X264_PRESETS:
            raise ValueError(f"preset must be one of {', '.join(X264_PRESETS)}, got {self.preset!r}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be between 0 and 51, got {self.crf!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
