"""Synthetic watermarked clips for the local engine's benchmark, with the ground truth only the bench knows.

Every clip is regenerated frame by frame from its spec (photographs and textures from ``skimage.data``, a
camera path, a seeded noise bank), so the clean truth is never stored as raw video: the bench encodes the
watermarked input once (x264 yuv420p crf 20, AAC audio, like a Sora download) and recomputes the truth frames
while it reads the engine's output.

The mark is the project's own stand-in, never OpenAI's logo: a cloud icon with two eye holes, the word
"Nimbus" and an "@username" line, white at alpha 0.8 with soft edges, ~22% of the frame width. It moves like
Sora's: it holds ~2.2 s, leaves one or two blank frames, and reappears top-left -> middle-right -> bottom-left
-> top-left...; the word and the username fade out over the five frames before each jump, the icon stays.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from functools import cached_property
from pathlib import Path

import av
import cv2
import numpy as np
from skimage import data as skdata

KINDS = ("pan", "static", "texture", "dark", "clean")
GENERATOR_VERSION = 1  # bump when frames change: cached inputs are keyed by it

MARK_WIDTH = 0.22  # of the frame width
MARK_ALPHA = 0.8  # in the core
MARK_SIGMA = 1.2  # px, the soft edge at 1280 wide
HOLD_SECONDS = 67 / 30  # how long the mark stays in one place
FADE_FRAMES = 5  # the word and the username fade out over the frames before a jump
AUDIO_RATE = 48_000


@dataclass(frozen=True)
class ClipSpec:
    """What a clip is; equal specs give bit-identical frames (and, with the same PyAV, the same input file)."""

    kind: str
    width: int = 1280
    height: int = 720
    fps: int = 30
    seconds: float = 9.0
    seed: int = 1
    crf: int = 20  # the input's encoding, close to a Sora download
    preset: str = "fast"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    @property
    def frames(self) -> int:
        return round(self.seconds * self.fps)

    @property
    def marked(self) -> bool:
        return self.kind != "clean"

    def key(self) -> str:
        blob = json.dumps({**asdict(self), "v": GENERATOR_VERSION}, sort_keys=True).encode()
        return f"{self.kind}-{self.width}x{self.height}-{self.seconds:g}s-{hashlib.sha1(blob).hexdigest()[:10]}"


@dataclass(frozen=True)
class MarkState:
    """The mark in one frame: its box's top-left corner (the shape's sharp bounding box) and the text's opacity."""

    x: int
    y: int
    text: float  # 1 = word and username fully shown, 0 = faded out (icon only)


# the mark -----------------------------------------------------------------------------------------------
@dataclass
class Mark:
    """The stand-in mark rendered for one frame width: alpha patches of the icon and of the text."""

    width: int  # the sharp box
    height: int
    margin: int  # soft edge around the box inside the patches
    icon: np.ndarray = field(repr=False)  # float32 (height + 2 margin, width + 2 margin), 0-1
    text: np.ndarray = field(repr=False)

    @classmethod
    def render(cls, frame_width: int) -> Mark:
        """Draw at 4x a fixed layout, crop to the shape, scale to ~22% of the width, blur the edges."""
        ss = 4
        canvas_icon = np.zeros((110 * ss, 340 * ss), np.uint8)
        canvas_text = np.zeros_like(canvas_icon)
        aa = cv2.LINE_AA
        for cx, cy, r in ((22, 34, 14), (38, 24, 17), (55, 32, 14), (30, 40, 11), (47, 40, 11)):
            cv2.circle(canvas_icon, (cx * ss, cy * ss), r * ss, 255, -1, aa)
        cv2.rectangle(canvas_icon, (14 * ss, 34 * ss), (62 * ss, 50 * ss), 255, -1, aa)
        for cx in (31, 45):  # the eye holes
            cv2.ellipse(canvas_icon, (cx * ss, 34 * ss), (3 * ss, 5 * ss), 0, 0, 360, 0, -1, aa)
        cv2.putText(canvas_text, "Nimbus", (74 * ss, 46 * ss), cv2.FONT_HERSHEY_DUPLEX, 1.25 * ss, 255, 2 * ss, aa)
        cv2.putText(canvas_text, "@username", (12 * ss, 84 * ss), cv2.FONT_HERSHEY_SIMPLEX, 0.8 * ss, 255, 2 * ss,
                    aa)
        union = np.maximum(canvas_icon, canvas_text)
        ys, xs = np.nonzero(union)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        width = round(MARK_WIDTH * frame_width)
        height = round(width * (y1 - y0) / (x1 - x0))
        sigma = MARK_SIGMA * frame_width / 1280
        margin = int(np.ceil(3 * sigma)) + 1

        def patch(layer: np.ndarray) -> np.ndarray:
            small = cv2.resize(layer[y0:y1, x0:x1], (width, height), interpolation=cv2.INTER_AREA)
            padded = np.zeros((height + 2 * margin, width + 2 * margin), np.float32)
            padded[margin:margin + height, margin:margin + width] = small / 255.0
            return cv2.GaussianBlur(padded, (0, 0), sigma)

        return cls(width, height, margin, patch(canvas_icon), patch(canvas_text))

    def alpha(self, text: float) -> np.ndarray:
        """The compositing alpha of the patch (box plus margin) with the text at the given opacity."""
        return MARK_ALPHA * np.clip(self.icon + text * self.text, 0.0, 1.0)

    def slots(self, frame_width: int, frame_height: int) -> list[tuple[int, int]]:
        """Top-left, middle-right, bottom-left: where the box's top-left corner sits, in the order it jumps."""
        mx, my = round(0.03 * frame_width), round(0.045 * frame_height)
        return [(mx, my), (frame_width - mx - self.width, (frame_height - self.height) // 2),
                (mx, frame_height - my - self.height)]


def mark_track(spec: ClipSpec, mark: Mark) -> list[MarkState | None]:
    """Per frame: where the mark is, or None on the blank frames at each jump (and on every frame of a clean clip).

    The first hold is shortened by a seeded phase so clips do not all jump on the same frames; each jump
    leaves one or two blank frames, alternating.
    """
    if not spec.marked:
        return [None] * spec.frames
    hold = round(HOLD_SECONDS * spec.fps)
    rng = np.random.default_rng(spec.seed)
    slots = mark.slots(spec.width, spec.height)
    track: list[MarkState | None] = []
    start_left = hold - int(rng.integers(0, hold // 3))
    segment, left, blanks = 0, start_left, 0
    for _ in range(spec.frames):
        if blanks:
            track.append(None)
            blanks -= 1
            if not blanks:
                segment, left = segment + 1, hold
            continue
        x, y = slots[segment % len(slots)]
        text = min(1.0, left / (FADE_FRAMES + 1))  # 5/6 ... 1/6 over the last five frames
        track.append(MarkState(x, y, text))
        left -= 1
        if not left:
            blanks = 1 + (segment + spec.seed) % 2
    return track


# scenes ---------------------------------------------------------------------------------------------------
def _cover(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale and center-crop an RGB image to exactly width x height."""
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    h, w = image.shape[:2]
    scale = max(width / w, height / h)
    resized = cv2.resize(image, (max(width, round(w * scale)), max(height, round(h * scale))),
                         interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
    y0, x0 = (resized.shape[0] - height) // 2, (resized.shape[1] - width) // 2
    return np.ascontiguousarray(resized[y0:y0 + height, x0:x0 + width, :3])


def _photo_canvas(width: int, height: int) -> np.ndarray:
    """Six photographs in a 3 x 2 grid (sharp borders between them make moving edges)."""
    photos = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket(),
              skdata.immunohistochemistry(), skdata.hubble_deep_field()]
    cw, ch = width // 3, height // 2
    canvas = np.zeros((ch * 2, cw * 3, 3), np.uint8)
    for i, photo in enumerate(photos):
        r, c = divmod(i, 3)
        canvas[r * ch:(r + 1) * ch, c * cw:(c + 1) * cw] = _cover(photo, cw, ch)
    return canvas


def _texture_canvas(width: int, height: int) -> np.ndarray:
    """Brick, grass and gravel in vertical bands, tiled mirrored at their native (fine) scale, tinted."""
    bands = []
    band_w = width // 3
    for image, tint in ((skdata.brick(), (1.10, 0.80, 0.65)), (skdata.grass(), (0.75, 1.05, 0.60)),
                        (skdata.gravel(), (0.95, 0.95, 1.00))):
        tile = np.concatenate([image, image[:, ::-1]], axis=1)
        tile = np.concatenate([tile, tile[::-1]], axis=0)
        reps = (-(-height // tile.shape[0]), -(-band_w // tile.shape[1]))
        gray = np.tile(tile, reps)[:height, :band_w].astype(np.float32)
        bands.append(np.clip(gray[:, :, None] * np.array(tint, np.float32), 0, 255).astype(np.uint8))
    return np.ascontiguousarray(np.concatenate(bands, axis=1))


class Scene:
    """The clean frames of one clip kind: ``frame(i)`` is deterministic and cheap (one warp per frame)."""

    def __init__(self, spec: ClipSpec) -> None:
        self.spec = spec
        self.w, self.h = spec.width, spec.height
        self.unit = spec.width / 1280  # motion scales with the frame

    def frame(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def _view(self, canvas: np.ndarray, cx: float, cy: float, zoom: float, interpolation: int) -> np.ndarray:
        """The frame a camera centred on canvas point (cx, cy) sees, ``zoom`` canvas pixels per frame pixel."""
        matrix = np.array([[zoom, 0, cx - zoom * self.w / 2], [0, zoom, cy - zoom * self.h / 2]], np.float64)
        return cv2.warpAffine(canvas, matrix, (self.w, self.h), flags=interpolation | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REFLECT)


class PanScene(Scene):
    """Smooth pan with a slight zoom over photographs; Lissajous path, so any length moves at the same speed."""

    def __init__(self, spec: ClipSpec) -> None:
        super().__init__(spec)
        self.canvas = _photo_canvas(round(1.9 * self.w), round(1.9 * self.h))
        self.phase = 0.0 if spec.kind == "pan" else 2.0  # the clean clip looks elsewhere

    def frame(self, i: int) -> np.ndarray:
        t = i / self.spec.fps + self.phase
        ch, cw = self.canvas.shape[:2]
        zoom = 0.95 - 0.05 * np.cos(2 * np.pi * t / 7.0)  # 0.90-1.00: a slow, slight zoom
        cx = cw / 2 + 0.30 * self.w * np.sin(2 * np.pi * t / 18.0)  # ~3.5 px/frame at 1280
        cy = ch / 2 + 0.22 * self.h * np.sin(2 * np.pi * t / 13.0 + 1.0)
        return self._view(self.canvas, cx, cy, zoom, cv2.INTER_LINEAR)


class StaticScene(Scene):
    """A still photograph with a textured disc that crosses the frame, passing under the mark while it holds."""

    def __init__(self, spec: ClipSpec, mark: Mark, track: list[MarkState | None]) -> None:
        super().__init__(spec)
        self.background = _cover(skdata.coffee(), self.w, self.h)
        rw, rh = round(110 * self.unit), round(80 * self.unit)
        self.sprite = _cover(skdata.chelsea(), 2 * rw + 1, 2 * rh + 1)
        ss = 4
        big = np.zeros(((2 * rh + 1) * ss, (2 * rw + 1) * ss), np.uint8)
        cv2.ellipse(big, ((rw * ss + ss // 2), (rh * ss + ss // 2)), (rw * ss, rh * ss), 0, 0, 360, 255, -1,
                    cv2.LINE_AA)
        self.sprite_alpha = cv2.resize(big, (2 * rw + 1, 2 * rh + 1), interpolation=cv2.INTER_AREA)[..., None] / 255.0
        self.path = self._path(mark, track)

    def _path(self, mark: Mark, track: list[MarkState | None]) -> list[tuple[float, float]]:
        """Through the centre of each hold's mark box at the middle of the hold, in straight lines between."""
        holds: list[list[int]] = []  # first frame, last frame, x, y
        for i, state in enumerate(track):
            if state is None:
                continue
            if holds and holds[-1][1] == i - 1 and holds[-1][2:] == [state.x, state.y]:
                holds[-1][1] = i
            else:
                holds.append([i, i, state.x, state.y])
        points = [((first + last) / 2, x + mark.width / 2, y + mark.height / 2) for first, last, x, y in holds]
        if len(points) < 2:  # no mark (or one hold): cross the frame's centre line
            points = [(0.0, 0.2 * self.w, self.h / 2), (float(len(track)), 0.8 * self.w, self.h / 2)]
        times = np.array([p[0] for p in points])
        frames = np.arange(len(track), dtype=np.float64)
        coords = []
        for values in (np.array([p[1] for p in points]), np.array([p[2] for p in points])):
            inside = np.interp(frames, times, values)
            # beyond the first and last points keep moving at the same speed (np.interp would stop the disc)
            head = (values[1] - values[0]) / (times[1] - times[0]) * np.minimum(frames - times[0], 0)
            tail = (values[-1] - values[-2]) / (times[-1] - times[-2]) * np.maximum(frames - times[-1], 0)
            coords.append(inside + head + tail)
        return list(zip(coords[0].tolist(), coords[1].tolist(), strict=True))

    def frame(self, i: int) -> np.ndarray:
        out = self.background.copy()
        cx, cy = self.path[i]
        sh, sw = self.sprite.shape[:2]
        x0, y0 = round(cx) - sw // 2, round(cy) - sh // 2
        fx0, fy0, fx1, fy1 = max(0, x0), max(0, y0), min(self.w, x0 + sw), min(self.h, y0 + sh)
        if fx1 <= fx0 or fy1 <= fy0:
            return out
        sprite = self.sprite[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0].astype(np.float32)
        a = self.sprite_alpha[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
        region = out[fy0:fy1, fx0:fx1].astype(np.float32)
        out[fy0:fy1, fx0:fx1] = np.rint(a * sprite + (1 - a) * region).astype(np.uint8)
        return out


class TextureScene(Scene):
    """Fine texture drifting slowly (sub-pixel, cubic interpolation keeps it sharp)."""

    def __init__(self, spec: ClipSpec) -> None:
        super().__init__(spec)
        self.canvas = _texture_canvas(round(1.3 * self.w), round(1.3 * self.h))

    def frame(self, i: int) -> np.ndarray:
        ch, cw = self.canvas.shape[:2]
        t = i / self.spec.fps
        cx = cw / 2 + 0.12 * self.w * np.sin(2 * np.pi * t / 30.0)  # ~0.5 px/frame
        cy = ch / 2 + 0.10 * self.h * np.sin(2 * np.pi * t / 40.0 + 0.5)
        return self._view(self.canvas, cx, cy, 1.0, cv2.INTER_CUBIC)


class DarkScene(Scene):
    """A photograph at ~22% brightness drifting slowly, with a little sensor noise from a seeded bank."""

    def __init__(self, spec: ClipSpec) -> None:
        super().__init__(spec)
        photo = _cover(skdata.astronaut(), round(1.2 * self.w), round(1.2 * self.h)).astype(np.float32)
        self.canvas = (photo * 0.22).astype(np.float32)
        rng = np.random.default_rng(spec.seed + 1000)
        self.noise = rng.normal(0.0, 1.5, size=(7, self.h, self.w, 3)).astype(np.float32)

    def frame(self, i: int) -> np.ndarray:
        ch, cw = self.canvas.shape[:2]
        t = i / self.spec.fps
        cx = cw / 2 + 0.08 * self.w * np.sin(2 * np.pi * t / 20.0)
        cy = ch / 2 + 0.06 * self.h * np.sin(2 * np.pi * t / 25.0)
        view = self._view(self.canvas, cx, cy, 1.0, cv2.INTER_LINEAR)
        noise = np.roll(self.noise[i % 7], (i * 37) % self.h, axis=0)
        return np.clip(np.rint(view + noise), 0, 255).astype(np.uint8)


# a clip ---------------------------------------------------------------------------------------------------
class Clip:
    """One synthetic clip: its clean frames, its mark track, the watermarked frames and their encoding."""

    def __init__(self, spec: ClipSpec) -> None:
        self.spec = spec
        self.mark = Mark.render(spec.width)
        self.track = mark_track(spec, self.mark)

    @cached_property
    def scene(self) -> Scene:
        kind = self.spec.kind
        if kind in ("pan", "clean"):
            return PanScene(self.spec)
        if kind == "static":
            return StaticScene(self.spec, self.mark, self.track)
        if kind == "texture":
            return TextureScene(self.spec)
        return DarkScene(self.spec)

    @property
    def frames(self) -> int:
        return self.spec.frames

    @property
    def box_size(self) -> tuple[int, int]:
        return self.mark.width, self.mark.height

    def position(self, i: int) -> tuple[int, int] | None:
        state = self.track[i]
        return None if state is None else (state.x, state.y)

    def truth(self, i: int) -> np.ndarray:
        """The clean RGB frame i (uint8, height x width x 3)."""
        return self.scene.frame(i)

    def alpha_at(self, i: int) -> tuple[int, int, np.ndarray] | None:
        """Frame i's compositing alpha: the patch's top-left corner (x, y) in the frame and the patch, or None."""
        state = self.track[i]
        if state is None:
            return None
        m = self.mark.margin
        return state.x - m, state.y - m, self.mark.alpha(state.text)

    def composite(self, clean: np.ndarray, i: int) -> np.ndarray:
        """The mark over a clean frame, in float on RGB: a * 255 + (1 - a) * clean."""
        placed = self.alpha_at(i)
        if placed is None:
            return clean
        x0, y0, alpha = placed
        a = alpha[..., None]
        out = clean.copy()
        region = clean[y0:y0 + a.shape[0], x0:x0 + a.shape[1]].astype(np.float32)
        out[y0:y0 + a.shape[0], x0:x0 + a.shape[1]] = np.rint(a * 255.0 + (1 - a) * region).astype(np.uint8)
        return out

    def pairs(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(clean, watermarked) frames in order."""
        for i in range(self.frames):
            clean = self.truth(i)
            yield clean, self.composite(clean, i)

    def write(self, path: Path) -> Path:
        """The watermarked input, as a Sora download would be: x264 yuv420p at the spec's crf and preset, AAC."""
        encode(path, (marked for _, marked in self.pairs()), self.spec, self.spec.preset, self.spec.crf)
        return path

    def write_truth(self, path: Path, preset: str, crf: int) -> Path:
        """The clean frames encoded with the given x264 settings (the codec ceiling of a perfect remover)."""
        encode(path, (self.truth(i) for i in range(self.frames)), self.spec, preset, crf)
        return path

    def ensure(self, folder: Path) -> Path:
        """The watermarked input, written once per spec (and generator version) into ``folder``."""
        path = folder / f"{self.spec.key()}.mp4"
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".part.mp4")
            self.write(partial)
            partial.rename(path)
        return path


def audio_block(start: int, count: int, seconds: float) -> np.ndarray:
    """Stereo float samples start..start+count: a 440 Hz tone left, a 220 -> 880 Hz chirp right (fltp)."""
    t = (start + np.arange(count)) / AUDIO_RATE
    span = max(seconds, 1e-3)
    phase = 2 * np.pi * (220 * t + (660 / (2 * span)) * t * t)  # f(t) = 220 + 660 t / span
    return np.stack([0.2 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(phase)]).astype(np.float32)


def encode(path: Path, frames: Iterable[np.ndarray], spec: ClipSpec, preset: str, crf: int) -> None:
    """x264 yuv420p video with AAC audio, interleaved as a muxer expects (audio keeps pace with video)."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=spec.fps)
        video.width, video.height, video.pix_fmt = spec.width, spec.height, "yuv420p"
        video.options = {"crf": str(crf), "preset": preset}
        audio = out.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        audio_time_base = Fraction(1, AUDIO_RATE)
        total_samples = round(spec.frames / spec.fps * AUDIO_RATE)
        sent = 0
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, spec.fps)
            out.mux(video.encode(frame))
            until = min(total_samples, round((i + 1) / spec.fps * AUDIO_RATE))
            while until - sent >= 1024 or (until == total_samples and sent < total_samples):
                count = min(1024, total_samples - sent)
                block = av.AudioFrame.from_ndarray(audio_block(sent, count, spec.seconds), format="fltp",
                                                   layout="stereo")
                block.sample_rate, block.pts, block.time_base = AUDIO_RATE, sent, audio_time_base
                out.mux(audio.encode(block))
                sent += count
        out.mux(video.encode(None))
        out.mux(audio.encode(None))


def long_clip(seconds: float = 60.0) -> ClipSpec:
    """The memory row's clip: 1080p pan, encoded fast (its encoding speed is not what is measured)."""
    return ClipSpec("pan", width=1920, height=1080, seconds=seconds, preset="veryfast")


def spec_for(kind: str, seconds: float = 9.0, width: int = 1280, height: int = 720) -> ClipSpec:
    return ClipSpec(kind, width=width, height=height, seconds=seconds, seed=1 + KINDS.index(kind))


def main(argv: list[str] | None = None) -> int:
    """Write one clip (and, with --truth, its clean frames at crf 0) to look at or to try the engine on."""
    parser = argparse.ArgumentParser(description="Write a synthetic watermarked clip of the local engine's bench.")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("output", type=Path)
    parser.add_argument("--seconds", type=float, default=9.0)
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT")
    parser.add_argument("--truth", type=Path, help="also write the clean frames here (x264 crf 0)")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    clip = Clip(spec_for(args.kind, args.seconds, width, height))
    clip.write(args.output)
    if args.truth:
        clip.write_truth(args.truth, "veryfast", 0)
    marks = sorted({p for p in map(clip.position, range(clip.frames)) if p})
    print(f"{args.output}: {clip.frames} frames, mark box {clip.box_size[0]}x{clip.box_size[1]} at {marks}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
