"""The mark's alpha map, learned from the video itself.

Every frame of a segment carries the same mark over different content: ``observed = a * 255 + (1 - a) *
content``. With an estimate of the content under it (the same place seen while the mark was elsewhere, if the
shot is still there; else the surroundings filled inwards), a least-squares fit over many frames gives ``a``
per pixel; errors of single estimates average out as the content changes. Segments are aligned to one another
on the mark's own detail, so every segment adds frames to one matte, placed sub-pixel in each segment.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from airflow_sora.local import inpaint
from airflow_sora.local.find import Box, CoarseSegment, detail, high_pass, match, strongest_cluster

MATCH_SIGMA = 2.0
MIN_ALIGN_SCORE = 0.45  # a segment whose detail matches the reference worse is not this mark
ALPHA_MAX = 0.97
MAX_FIT_FRAMES = 32
STROKE = 0.4  # of the peak alpha: the visible strokes, which make the parts (faint noise between them does not)
FRAME_SHOWS = 0.5  # a frame's detail must match the mark's this well to be learned from
REFERENCE_CANDIDATES = 6
MIN_EXACT_FRAMES = 8  # frames with the content known exactly: then guessed frames count half
STILL_SPREAD = 6.0  # how far nine views in ten may stray from their median for a shot to count as still
STILL_AGREES = 6.0  # mean difference around the mark for the still background to hold in a frame


@dataclass
class Samples:
    """What the learning pass keeps of one segment: luma crops of its region with the mark, and without it
    (frames where the mark was elsewhere), each as the region's full-resolution pixels."""

    segment: CoarseSegment
    region: Box
    marked: list[np.ndarray] = field(default_factory=list)
    unmarked: list[np.ndarray] = field(default_factory=list)
    unmarked_chroma: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    still: list[np.ndarray | None] = field(default_factory=list, repr=False)  # ``still_background``, once worked out


@dataclass(frozen=True)
class Placement:
    """The matte's top-left corner in one segment, in full-frame pixels (sub-pixel), and the fit's score."""

    x: float
    y: float
    score: float


@dataclass
class Matte:
    """The mark: its alpha (0-1) over a ``height`` x ``width`` box, its parts (icon, word, name line: parts can
    fade apart), and where it sits in each usable segment (by the segment's index in the learning set)."""

    alpha: np.ndarray
    parts: np.ndarray  # int32 labels, 0 outside the mark
    placements: dict[int, Placement]
    white: float = 235.0  # the mark's level in the luma plane

    def support(self) -> Box:
        """The box of the mark's shape inside the matte (where its opacity reaches half its peak, the middle of
        the soft edge): what reports call its box."""
        ys, xs = np.nonzero(self.alpha >= 0.5 * float(self.alpha.max()))
        if xs.size == 0:
            return Box(0, 0, self.width, self.height)
        return Box(int(xs.min()), int(ys.min()), int(xs.max() - xs.min()) + 1, int(ys.max() - ys.min()) + 1)

    @property
    def height(self) -> int:
        return int(self.alpha.shape[0])

    @property
    def width(self) -> int:
        return int(self.alpha.shape[1])


def learn(samples: list[Samples], white: float = 235.0) -> Matte | None:
    """The matte shared by the segments, or None if no segment holds a mark worth removing. ``white`` is the
    mark's level in the luma plane: the video's white (235 in limited-range video, 255 in full range)."""
    usable = [s for s in samples if len(s.marked) >= 3]
    if not usable:
        return None
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # NumPy and OpenCV release the GIL
        means = list(pool.map(_mark_detail, usable))
        list(pool.map(still_background, usable))  # worked out now, on both cores; asked for below
        chosen = _reference(usable, means)
        if chosen is None:
            return None
        tight, template, fits = chosen
        placements = {samples.index(sample): Placement(sample.region.x + fit[0], sample.region.y + fit[1], fit[2])
                      for sample, fit in zip(usable, fits, strict=True) if fit is not None}
        for index, placement in placements.items():  # frames of a hold without the mark in place teach nothing
            sample = samples[index]
            shown = list(pool.map(lambda crop: _shows(crop, template, placement, sample.region),  # noqa: B023
                                  sample.marked))
            sample.marked = [crop for crop, shows in zip(sample.marked, shown, strict=True) if shows]
    size = (tight.w, tight.h)
    stacks: list[np.ndarray] = []
    backgrounds: list[np.ndarray | None] = []
    for index, placement in placements.items():
        sample = samples[index]
        origin = (placement.x - sample.region.x, placement.y - sample.region.y)
        still = still_background(sample)
        around = np.ones(sample.region.h * sample.region.w, bool).reshape(sample.region.h, sample.region.w)
        around[max(0, int(origin[1]) - 4):int(origin[1]) + size[1] + 5,
               max(0, int(origin[0]) - 4):int(origin[0]) + size[0] + 5] = False
        for crop in sample.marked:
            stacks.append(_cut(crop, origin, size))
            holds = still is not None and (not around.any() or float(
                np.mean(np.abs(crop[around].astype(np.float32) - still[around]))) < STILL_AGREES)
            backgrounds.append(_cut(still, origin, size) if holds and still is not None else None)
    if not stacks:  # no frame showed the mark where the segments have it: steady content, not a mark
        return None
    if len(stacks) > MAX_FIT_FRAMES:  # enough for the fit; each frame costs an inpainting per round
        keep = np.linspace(0, len(stacks) - 1, MAX_FIT_FRAMES).round().astype(int)
        stacks, backgrounds = [stacks[i] for i in keep], [backgrounds[i] for i in keep]
    observed = np.stack(stacks)
    mask = _first_mask(observed)
    if mask is None:
        return None
    alpha = _fit_alpha(observed, backgrounds, mask, white, inpaint.pull_push)  # a first, rough fit
    mask = cv2.dilate((alpha > 0.04).astype(np.uint8), _disk(2))
    alpha = _fit_alpha(observed, backgrounds, mask, white, inpaint.telea)  # a tighter mask, a better fill
    alpha[alpha < 0.02] = 0.0
    alpha *= cv2.dilate((alpha > 0.15).astype(np.uint8), _disk(4))  # a soft edge belongs next to a stroke
    if float(alpha.max()) < 0.1:
        return None
    return Matte(alpha, _parts(alpha), placements, white)


def _reference(usable: list[Samples], means: list[np.ndarray]
               ) -> tuple[Box, np.ndarray, list[tuple[float, float, float] | None]] | None:
    """The segment whose mark detail the others agree with best, and where its template fits in each.

    Some segments' regions catch steady content beside the mark; their template matches the others worse. The
    mark must be found in at least two places: steady content in a clip without a mark does not jump.
    """
    strongest = sorted(range(len(means)), key=lambda i: -float(np.percentile(means[i], 99)))[:REFERENCE_CANDIDATES]
    best: tuple[tuple[int, float], Box, np.ndarray, list[tuple[float, float, float] | None]] | None = None
    for candidate in strongest:
        tight = _tight_box(means[candidate])
        if tight is None:
            continue
        template = means[candidate][tight.slices()]
        fits = [match(mean, template) for mean in means]
        fits = [fit if fit is not None and fit[2] >= MIN_ALIGN_SCORE else None for fit in fits]
        places = {(round(s.region.x + f[0]) // 8, round(s.region.y + f[1]) // 8)
                  for s, f in zip(usable, fits, strict=True) if f is not None}
        # the whole mark beats a piece of it: each place counts the template's detail times how well it fits
        rank = (min(len(places), 2), float(template.sum()) * sum(f[2] for f in fits if f is not None))
        if len(places) >= 2 and (best is None or rank > best[0]):
            best = (rank, tight, template, fits)
    return (best[1], best[2], best[3]) if best is not None else None


def _shows(crop: np.ndarray, template: np.ndarray, placement: Placement, region: Box) -> bool:
    """Whether this one frame shows the mark where its segment has it (not a blank frame at a jump, not a hold
    the scan placed wrongly): its detail around the placement matches the template."""
    x, y = round(placement.x - region.x), round(placement.y - region.y)
    h, w = template.shape
    window = crop[max(0, y - 2):y + h + 2, max(0, x - 2):x + w + 2]
    found = match(high_pass(window, MATCH_SIGMA), template)
    return found is not None and found[2] >= FRAME_SHOWS


def _mark_detail(sample: Samples) -> np.ndarray:
    """The detail the mark adds to its region, kept only where it is consistent from frame to frame.

    The mean signed detail of the frames with the mark (moving content averages out), less that of the
    frames without it (a still scene's own detail cancels), weighted by how steady it is: under the mark the
    content shows through at ``1 - a`` only, so the mark's detail hardly varies, while texture that drifts
    slowly has a mean of its own but varies far more.
    """
    stack = np.stack([detail(c, MATCH_SIGMA) for c in sample.marked])
    mean, spread = stack.mean(axis=0), stack.std(axis=0)
    if len(sample.unmarked) >= 3:
        mean -= np.mean([detail(c, MATCH_SIGMA) for c in sample.unmarked], axis=0)
    steady = np.clip(np.abs(mean) / (spread + 1.0) - 0.5, 0.0, 1.0)
    return np.maximum(mean, 0.0) * steady


def still_background(sample: Samples) -> np.ndarray | None:
    """The region as seen while the mark was elsewhere, if the shot holds still there (a median of views that
    agree); None where the content moves, or when too few views exist. Learning and planning both ask: it is
    worked out once per sample."""
    if not sample.still:
        sample.still.append(_still_background(sample.unmarked))
    return sample.still[0]


def _still_background(views: list[np.ndarray]) -> np.ndarray | None:
    if len(views) < 5:
        return None
    if _spread(np.stack([v[::4, ::4] for v in views]).astype(np.float32))[1] >= 2 * STILL_SPREAD:
        return None  # a sixteenth of the pixels tells moving content (most shots) at a sixteenth of the cost
    median, spread = _spread(np.stack(views).astype(np.float32))
    return median if spread < STILL_SPREAD else None


def _spread(stack: np.ndarray) -> tuple[np.ndarray, float]:
    """The views' median, and how far nine in ten of their pixels stray from it."""
    median = np.median(stack, axis=0)
    return median, float(np.percentile(np.abs(stack - median), 90))  # a slow drift shows in the tail


def _tight_box(mean_detail: np.ndarray) -> Box | None:
    """The mark's box in a segment's region: its strongest cluster of detail, a little widened."""
    found = strongest_cluster(mean_detail, max_share=1.0)
    if found is None:
        return None
    height, width = mean_detail.shape
    return found[0].padded(4, width, height)


def _cut(image: np.ndarray, origin: tuple[float, float], size: tuple[int, int]) -> np.ndarray:
    """The ``size`` patch whose top-left corner is at the sub-pixel ``origin`` (bilinear)."""
    w, h = size
    centre = (origin[0] + (w - 1) / 2.0, origin[1] + (h - 1) / 2.0)
    return cv2.getRectSubPix(image.astype(np.float32, copy=False), (w, h), centre)


def _first_mask(observed: np.ndarray) -> np.ndarray | None:
    """Where the mark may be: its steady detail, closed, with the holes of its outlines filled, widened."""
    detail = np.mean([high_pass(o, 3.0) for o in observed], axis=0)
    level = max(2.0, 0.12 * float(detail.max()))
    mask = (detail > level).astype(np.uint8)
    if mask.sum() < 20:
        return None
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _disk(3))
    return cv2.dilate(_fill_holes(mask), _disk(3))


def _fit_alpha(observed: np.ndarray, backgrounds: list[np.ndarray | None], mask: np.ndarray, white: float,
               fill: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """Least squares per pixel over frames: ``observed - content = a * (white - content)``.

    Content seen while the mark was elsewhere is exact; content guessed from the surroundings is not, so
    guessed frames count half where exact ones exist.
    """
    inside = mask > 0
    num = np.zeros(int(inside.sum()), np.float64)
    den = np.zeros(int(inside.sum()), np.float64)
    weight = 0.5 if sum(b is not None for b in backgrounds) >= MIN_EXACT_FRAMES else 1.0
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # OpenCV fills release the GIL
        contents = list(pool.map(lambda pair: pair[1] if pair[1] is not None else fill(pair[0], mask),
                                 zip(observed, backgrounds, strict=True)))
    for frame, still, filled in zip(observed, backgrounds, contents, strict=True):
        content = filled[inside].astype(np.float64)
        headroom = white - content
        w = 1.0 if still is not None else weight
        num += w * (frame[inside] - content) * headroom
        den += w * headroom * headroom
    alpha = np.zeros(mask.shape, np.float32)
    alpha[inside] = np.clip(num / np.maximum(den, 1.0), 0.0, ALPHA_MAX)
    return alpha


def _parts(alpha: np.ndarray) -> np.ndarray:
    """Separate pieces of the mark (icon, word, name line), each a label: the text can fade before the icon.

    Pieces are the clearly visible strokes, joined along a line of text; the faint halo around them takes the
    label of the stroke it surrounds (a halo would otherwise bridge pieces that fade apart).
    """
    strokes = (alpha > STROKE * float(alpha.max())).astype(np.uint8)
    joined = cv2.dilate(strokes, cv2.getStructuringElement(cv2.MORPH_RECT, (7, 3)))
    _, labels = cv2.connectedComponents(joined, connectivity=8)
    labels = labels.astype(np.float32)
    for _ in range(4):  # spread the labels outwards into the halo
        grown = cv2.dilate(labels, np.ones((3, 3), np.uint8))
        labels = np.where(labels > 0, labels, grown)
    return np.where(alpha > 0.02, labels, 0).astype(np.int32)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    flood = np.pad(mask, 1).copy()
    cv2.floodFill(flood, None, (0, 0), 1)
    holes = flood[1:-1, 1:-1] == 0
    return (mask | holes).astype(np.uint8)


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
