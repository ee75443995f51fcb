"""Small test clips for the local engine, made here with PyAV: nothing downloaded, nothing checked in.

A marked clip is moving real-photo content (a slow pan over images from ``skimage.data``) with a white,
semi-transparent mark of our own drawing composited on top, jumping between three positions as Sora's does.
A clean clip is the same content without the mark. Bad inputs: a text file named ``.mp4`` and a truncated mp4.
Every test that needs a clip makes it through this module, so all of them agree on what a marked clip is.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 320, 180
FPS = 24
#: Where the mark's top-left corner sits, in turn (pixels of a 320x180 frame), like Sora's jumping mark.
POSITIONS = ((14, 12), (196, 74), (30, 128))
MARK_ALPHA = 0.55


@dataclass(frozen=True)
class ClipSpec:
    seconds: float = 3.6
    fps: int = FPS
    width: int = WIDTH
    height: int = HEIGHT
    jump_every: float = 1.2  # seconds at one position: three positions in the default 3.6 s
    marked: bool = True
    audio: bool = True
    photo: str = "astronaut"

    @property
    def frames(self) -> int:
        return round(self.seconds * self.fps)

    def position(self, frame: int) -> tuple[int, int]:
        """The mark's top-left corner in ``frame``; positions cycle through ``POSITIONS``."""
        x, y = POSITIONS[int(frame / (self.jump_every * self.fps)) % len(POSITIONS)]
        return round(x * self.width / WIDTH), round(y * self.height / HEIGHT)


@functools.cache
def mark_alpha(scale: float = 1.0) -> np.ndarray:
    """The mark's coverage (0-1, float32): a rounded badge outline, a dot and three bars, drawn by hand here."""
    import cv2

    w, h = round(92 * scale), round(34 * scale)
    canvas = np.zeros((h, w), np.uint8)
    t = max(1, round(2 * scale))
    cv2.rectangle(canvas, (t, t), (h - t, h - t), 255, t, lineType=cv2.LINE_AA)
    cv2.circle(canvas, (h // 2, h // 2), max(2, round(7 * scale)), 255, -1, lineType=cv2.LINE_AA)
    for i, length in enumerate((48, 36, 42)):
        y = round((8 + 9 * i) * scale)
        cv2.rectangle(canvas, (h + round(6 * scale), y), (h + round((6 + length) * scale), y + t + 1), 255, -1,
                      lineType=cv2.LINE_AA)
    return (canvas.astype(np.float32) / 255.0) * MARK_ALPHA


def _photo(name: str, width: int, height: int) -> np.ndarray:
    """A photograph from ``skimage.data``, scaled to leave room for a pan of a quarter of the frame."""
    import cv2
    from skimage import data

    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return cv2.resize(image[..., :3], (round(width * 1.25), round(height * 1.25)), interpolation=cv2.INTER_AREA)


def frames(spec: ClipSpec) -> Iterator[np.ndarray]:
    """RGB frames: a diagonal pan over the photo (real texture that moves), the mark composited on top."""
    photo = _photo(spec.photo, spec.width, spec.height).astype(np.float32)
    room_x, room_y = photo.shape[1] - spec.width, photo.shape[0] - spec.height
    alpha = mark_alpha(spec.width / WIDTH)
    for index in range(spec.frames):
        t = index / max(1, spec.frames - 1)
        x0, y0 = round(room_x * t), round(room_y * (0.5 + 0.5 * np.sin(2 * np.pi * t)))
        frame = photo[y0:y0 + spec.height, x0:x0 + spec.width].copy()
        if spec.marked:
            mx, my = spec.position(index)
            region = frame[my:my + alpha.shape[0], mx:mx + alpha.shape[1]]
            a = alpha[: region.shape[0], : region.shape[1], None]
            region[:] = region * (1 - a) + 255.0 * a
        yield np.clip(frame, 0, 255).astype(np.uint8)


def write_clip(path: Path, spec: ClipSpec | None = None) -> Path:
    """An H.264 mp4 (yuv420p) with, by default, a quiet AAC tone as its audio track."""
    import av

    spec = spec or ClipSpec()
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=spec.fps)
        video.width, video.height, video.pix_fmt = spec.width, spec.height, "yuv420p"
        video.options = {"crf": "16", "preset": "veryfast"}
        audio = container.add_stream("aac", rate=44100) if spec.audio else None
        for rgb in frames(spec):
            for packet in video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        container.mux(video.encode())
        if audio is not None:
            _write_tone(container, audio, spec.seconds)
    return path


def _write_tone(container: object, stream: object, seconds: float) -> None:
    import av

    rate, chunk = 44100, 1024
    total = int(rate * seconds)
    for start in range(0, total, chunk):
        n = min(chunk, total - start)
        t = (np.arange(start, start + n) / rate).astype(np.float32)
        samples = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        for packet in stream.encode(frame):  # type: ignore[attr-defined]
            container.mux(packet)  # type: ignore[attr-defined]
    for packet in stream.encode(None):  # type: ignore[attr-defined]
        container.mux(packet)  # type: ignore[attr-defined]


def marked_clip(path: Path, **spec: object) -> Path:
    return write_clip(path, ClipSpec(**spec))  # type: ignore[arg-type]


def clean_clip(path: Path, **spec: object) -> Path:
    return write_clip(path, ClipSpec(marked=False, **spec))  # type: ignore[arg-type]


def not_a_video(path: Path) -> Path:
    """A text file with a video's name: what a mislabelled download looks like."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is not a video, only a file named like one\n" * 20)
    return path


def truncated_clip(path: Path, keep: float = 0.4) -> Path:
    """The first ``keep`` of a marked clip's bytes: an interrupted download (the index box is lost)."""
    whole = marked_clip(path.with_name(f".{path.stem}.whole.mp4"))
    data = whole.read_bytes()
    whole.unlink()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@functools.cache
def _cached(kind: str, seconds: float, photo: str) -> bytes:
    """Clip bytes made once per test session: encoding is most of a clip's cost."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.mp4"
        if kind == "marked":
            marked_clip(path, seconds=seconds, photo=photo)
        else:
            clean_clip(path, seconds=seconds, photo=photo)
        return path.read_bytes()


def copy_of(kind: str, path: Path, *, seconds: float = 3.6, photo: str = "astronaut") -> Path:
    """A ``marked`` or ``clean`` clip at ``path``, encoded once per session and copied after that."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_cached(kind, seconds, photo))
    return path


#: The UUID of the ISO-BMFF box that carries C2PA content credentials (C2PA spec, 11.3.4).
C2PA_UUID = bytes.fromhex("d8fec3d61b0e483c92975828877ec481")


def with_c2pa(path: Path, manifest: bytes) -> Path:
    """Append a top-level C2PA ``uuid`` box (version/flags, purpose ``manifest``, Merkle offset, the store) to
    the clip: what a Sora download carrying content credentials looks like to a reader. Appended last, so no
    sample offset moves and the clip still plays."""
    import struct

    body = C2PA_UUID + b"\0\0\0\0" + b"manifest\0" + struct.pack(">Q", 0) + manifest
    with open(path, "ab") as handle:
        handle.write(struct.pack(">I4s", 8 + len(body), b"uuid") + body)
    return path
