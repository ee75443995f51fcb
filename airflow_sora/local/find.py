"""Where the mark is: coarse segments from one cheap pass, then its exact position in each frame.

The mark is bright, translucent structure that holds still for seconds while the content moves under it,
then jumps. The scan keeps, per short window of frames, the mean of the positive high-pass of a small copy
of the luma; a low percentile of those windows over the whole video is the scene's own steady structure,
and what stands above it for several windows in a row, in one compact blob, is the mark. Nothing here knows
the mark's shape, size, positions or timing in advance.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

WINDOW = 8  # frames averaged into one window of the scan
SCAN_WIDTH = 320  # the scan works on a copy about this wide
PERSIST = 3  # windows in a row a blob must hold still to count (moving content does not)
BAND_ROWS = 16  # rows of the scan's maps processed at once when the windows are compared
BANDS_AT_ONCE = 2  # bands worked on together (a minute of video: about 28 MB of temporaries each)
MIN_SEGMENT_WINDOWS = 3  # a segment shorter than this (~0.8 s at 30 fps) is not the mark
MAX_GAP_WINDOWS = 1  # a hold seen again after this many windows without it, at the same place, is one hold
WEAK_END = 0.3  # a run's end window weaker than this share of its median strength straddles a jump


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int

    def scaled(self, factor: float) -> Box:
        return Box(round(self.x * factor), round(self.y * factor), round(self.w * factor), round(self.h * factor))

    def padded(self, pad: int, width: int, height: int) -> Box:
        x0, y0 = max(0, self.x - pad), max(0, self.y - pad)
        x1, y1 = min(width, self.x + self.w + pad), min(height, self.y + self.h + pad)
        return Box(x0, y0, x1 - x0, y1 - y0)

    def even(self) -> Box:
        """Widened to even corners, so the half-size chroma planes cover exactly the same pixels."""
        x0, y0 = self.x // 2 * 2, self.y // 2 * 2
        x1, y1 = (self.x + self.w + 1) // 2 * 2, (self.y + self.h + 1) // 2 * 2
        return Box(x0, y0, x1 - x0, y1 - y0)

    def moved(self, dx: int, dy: int) -> Box:
        return Box(self.x + dx, self.y + dy, self.w, self.h)

    def contains(self, other: Box) -> bool:
        return (self.x <= other.x and self.y <= other.y and other.x + other.w <= self.x + self.w
                and other.y + other.h <= self.y + self.h)

    def half(self) -> Box:
        return Box(self.x // 2, self.y // 2, self.w // 2, self.h // 2)

    def iou(self, other: Box) -> float:
        ix = max(0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        inter = ix * iy
        union = self.w * self.h + other.w * other.h - inter
        return inter / union if union else 0.0

    def slices(self) -> tuple[slice, slice]:
        return slice(self.y, self.y + self.h), slice(self.x, self.x + self.w)


@dataclass(frozen=True)
class CoarseSegment:
    """Frames ``start``..``end`` (inclusive) where the scan saw the mark hold still inside ``box`` (full-frame
    pixels, padded by the scan's resolution); ``strength`` ranks segments for learning the matte."""

    start: int
    end: int
    box: Box
    strength: float


def scan_scale(width: int) -> int:
    return max(1, round(width / SCAN_WIDTH))


def detail(luma: np.ndarray, sigma: float) -> np.ndarray:
    """Signed detail: the luma less its blur. Moving content averages out over a window; the mark's stays."""
    small = luma.astype(np.float32, copy=False)
    return small - cv2.GaussianBlur(small, (0, 0), sigma)


def high_pass(luma: np.ndarray, sigma: float) -> np.ndarray:
    """Positive detail: what is brighter than its surroundings (the mark adds light, never removes it)."""
    return np.maximum(detail(luma, sigma), 0.0)


class Scanner:
    """Feed it every frame's luma once (``add``); ``segments()`` says where the mark held still, and when."""

    def __init__(self, width: int, height: int) -> None:
        self.scale = scan_scale(width)
        self.size = (width // self.scale, height // self.scale)
        self.width, self.height = width, height
        self._sum = np.zeros(self.size[::-1], np.float32)
        self._count = 0
        self.windows: list[np.ndarray] = []
        self.frames = 0

    def add(self, luma: np.ndarray, index: int | None = None) -> None:
        """Frame ``index`` (the next one if not given; frames may be skipped: a window averages those it got)."""
        index = self.frames if index is None else index
        if self._count and index // WINDOW != len(self.windows):
            self._flush()
        while len(self.windows) < index // WINDOW:  # a window with no frame at all: the one before, again
            self.windows.append(self.windows[-1] if self.windows else np.zeros(self.size[::-1], np.float16))
        small = cv2.resize(luma, self.size, interpolation=cv2.INTER_AREA)
        self._sum += detail(small, 2.0)
        self._count += 1
        self.frames = max(self.frames, index + 1)

    def _flush(self) -> None:
        if self._count:
            self.windows.append(np.maximum(self._sum / self._count, 0.0).astype(np.float16))
            self._sum[:] = 0
            self._count = 0

    def segments(self) -> list[CoarseSegment]:
        self._flush()
        if len(self.windows) < MIN_SEGMENT_WINDOWS:
            return []
        stack = np.stack(self.windows)  # float16: one small map per window however long the video
        self.windows.clear()
        evidence = np.empty_like(stack)

        def band(top: int) -> None:  # bands of rows keep the temporaries small: a few copies of one band
            rows = slice(top, top + BAND_ROWS)
            evidence[:, rows] = _steady_evidence(stack[:, rows].astype(np.float32))

        # NumPy and OpenCV release the GIL; two bands at a time, however many cores, bound the memory
        with ThreadPoolExecutor(max_workers=min(BANDS_AT_ONCE, os.cpu_count() or 1)) as pool:
            list(pool.map(band, range(0, stack.shape[1], BAND_ROWS)))
            blobs = list(pool.map(lambda e: strongest_cluster(e.astype(np.float32)), evidence))
        return _joined(self._group(blobs))

    def _group(self, blobs: list[tuple[Box, float] | None]) -> list[CoarseSegment]:
        segments: list[CoarseSegment] = []
        run: list[tuple[int, Box, float]] = []

        def close_run() -> None:
            _trim_weak_ends(run)
            if len(run) >= MIN_SEGMENT_WINDOWS:
                boxes = np.array([(b.x, b.y, b.x + b.w, b.y + b.h) for _, b, _ in run], np.float32)
                x0, y0 = np.median(boxes[:, 0]), np.median(boxes[:, 1])
                x1, y1 = np.median(boxes[:, 2]), np.median(boxes[:, 3])
                box = Box(int(x0), int(y0), int(x1 - x0) + 1, int(y1 - y0) + 1).scaled(self.scale)
                box = box.padded(2 * self.scale + 2, self.width, self.height)
                start = run[0][0] * WINDOW
                end = min(self.frames - 1, (run[-1][0] + 1) * WINDOW - 1)
                segments.append(CoarseSegment(start, end, box, float(np.median([s for _, _, s in run]))))
            run.clear()

        for index, blob in enumerate(blobs):
            if blob is None:
                if run and index - run[-1][0] > MAX_GAP_WINDOWS:
                    close_run()
                continue
            if run and (blob[0].iou(run[-1][1]) < 0.3 or index - run[-1][0] > MAX_GAP_WINDOWS + 1):
                close_run()
            run.append((index, blob[0], blob[1]))
        close_run()
        return segments


def _trim_weak_ends(run: list[tuple[int, Box, float]]) -> None:
    """Drop a run's first and last windows while they are far weaker than the run: a window that straddles a
    jump holds the mark for a few of its frames only, and a segment that claims them would teach learning
    frames where the mark is elsewhere (the fading text keeps more than this)."""
    if len(run) <= MIN_SEGMENT_WINDOWS:
        return
    floor = WEAK_END * float(np.median([strength for _, _, strength in run]))
    while len(run) > MIN_SEGMENT_WINDOWS and run[0][2] < floor:
        run.pop(0)
    while len(run) > MIN_SEGMENT_WINDOWS and run[-1][2] < floor:
        run.pop()


def _joined(segments: list[CoarseSegment]) -> list[CoarseSegment]:
    """Consecutive segments at one place with a short gap between them are one hold: a window or two where
    the scene hid the mark's detail (or something brighter stood out elsewhere) does not end it."""
    joined: list[CoarseSegment] = []
    for segment in segments:
        last = joined[-1] if joined else None
        if (last is not None and segment.box.iou(last.box) >= 0.5
                and segment.start - last.end <= (MAX_GAP_WINDOWS + 1) * WINDOW):
            x0, y0 = min(last.box.x, segment.box.x), min(last.box.y, segment.box.y)
            x1 = max(last.box.x + last.box.w, segment.box.x + segment.box.w)
            y1 = max(last.box.y + last.box.h, segment.box.y + segment.box.h)
            joined[-1] = CoarseSegment(last.start, segment.end, Box(x0, y0, x1 - x0, y1 - y0),
                                       max(last.strength, segment.strength))
        else:
            joined.append(segment)
    return joined


def _steady_evidence(stack: np.ndarray) -> np.ndarray:
    """Per window, detail above the scene's own steady structure that also held for ``PERSIST`` windows.

    The scene's steady structure is a low percentile over all windows: the mark sits at any one place for a
    part of the video only (it jumps), so it does not raise that percentile, while a still background does.
    """
    background = np.percentile(stack, 25, axis=0)
    above = np.maximum(stack - background, 0.0)
    if len(above) >= PERSIST:  # a running minimum over time: moving content does not stay in place
        held = np.minimum.reduce([above[i:len(above) - PERSIST + 1 + i] for i in range(PERSIST)])
        pad_front = (PERSIST - 1) // 2
        pad_back = PERSIST - 1 - pad_front
        above = np.concatenate([held[:1].repeat(pad_front, 0), held, held[-1:].repeat(pad_back, 0)])
    return above


def strongest_cluster(evidence: np.ndarray, max_share: float = 0.6) -> tuple[Box, float] | None:
    """The one compact, strong cluster of detail (with the strong pieces right beside it), or None if nothing
    stands out; pieces wider or taller than ``max_share`` of the map are not the mark."""
    level = max(4.0, 0.2 * float(evidence.max()))  # the mark is among the strongest steady detail there is
    mask = (evidence > level).astype(np.uint8)
    if not mask.any():
        return None
    height, width = evidence.shape
    close = max(3, width // 60)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (close * 2, close))
    closed = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    pieces: list[tuple[Box, float]] = []
    for label in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[label])
        if w > width * max_share or h > height * max(0.5, max_share) or area < 6:
            continue
        pieces.append((Box(x, y, w, h), float(evidence[labels == label].sum())))
    if not pieces:
        return None
    best = max(pieces, key=lambda piece: piece[1])
    if best[0].w < width * 0.04 or best[0].h < 3 or best[1] < 20 * level:
        return None
    return _with_neighbours(best, pieces, width, height)


def _with_neighbours(best: tuple[Box, float], pieces: list[tuple[Box, float]], width: int, height: int
                     ) -> tuple[Box, float]:
    """The strongest piece and the strong pieces right beside it (an icon beside a word, a name line under
    the logo are all the mark), grown until nothing more is within reach."""
    box, energy = best
    left = [piece for piece in pieces if piece[0] is not box and piece[1] >= 0.1 * best[1]]
    grown = True
    while grown:
        grown = False
        reach = box.padded(max(box.h, box.w // 2), width, height)
        for piece in list(left):
            other = piece[0]
            if reach.iou(other) > 0:
                x0, y0 = min(box.x, other.x), min(box.y, other.y)
                x1, y1 = max(box.x + box.w, other.x + other.w), max(box.y + box.h, other.y + other.h)
                box, energy, grown = Box(x0, y0, x1 - x0, y1 - y0), energy + piece[1], True
                left.remove(piece)
    return box, energy


def match(detail_region: np.ndarray, template: np.ndarray) -> tuple[float, float, float] | None:
    """Where ``template`` best fits in ``detail_region`` (both already high-passed): (x, y, score), sub-pixel.

    A normalised correlation: the background's brightness and the mark's fade change the score little, its
    shape is what is matched. A parabola through the peak gives the fraction. None if the template is larger.
    """
    if detail_region.shape[0] < template.shape[0] or detail_region.shape[1] < template.shape[1]:
        return None
    scores = cv2.matchTemplate(detail_region.astype(np.float32, copy=False), template.astype(np.float32, copy=False),
                               cv2.TM_CCOEFF_NORMED)
    _, best, _, (px, py) = cv2.minMaxLoc(scores)
    return px + _vertex(scores[py, px - 1:px + 2]), py + _vertex(scores[py - 1:py + 2, px]), float(best)


def correlation(detail_region: np.ndarray, template: np.ndarray) -> float:
    """``match``'s score at one position, both the same size: the normalised correlation, computed directly
    (OpenCV's search costs as much for one position as for many)."""
    a = detail_region.ravel() - float(detail_region.mean())
    b = template.ravel() - float(template.mean())
    denominator = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    return float(np.dot(a, b)) / denominator if denominator > 0 else 0.0


def _vertex(row: np.ndarray) -> float:
    if row.size != 3:
        return 0.0
    left, mid, right = (float(v) for v in row)
    denom = left - 2 * mid + right
    return 0.0 if denom >= 0 else max(-0.5, min(0.5, 0.5 * (left - right) / denom))
