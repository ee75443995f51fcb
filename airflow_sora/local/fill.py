"""Restore what is under the mark in one frame, best source first.

1. Content from other frames (``references``: the still background, content followed along the camera's
   motion, see ``follow``), each trusted per pixel only where it explains what this frame shows.
2. Reverse alpha blending where the mark is translucent: ``content = (observed - a*white) / (1 - a)``; noise
   grows as ``1 / (1 - a)``, so it serves the soft edges and thin strokes.
3. Spatial inpainting (Telea) only for the near-opaque core that neither of the above can give.
Chroma follows luma's choices at half resolution (a white mark pulls chroma towards neutral, 128).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from airflow_sora.local import borrow, inpaint
from airflow_sora.local.find import Box, correlation, detail, high_pass
from airflow_sora.local.matte import Matte, Placement

CORE_ALPHA = 0.9  # above this, reverse blending amplifies noise more than inpainting errs
STRONG_ALPHA = 0.02  # above this, content from another frame beats reverse blending when it fits
EXPLAINED = 20.0  # a reference explains a pixel when the content it implies is this close to the reference
EXPLAINED_LOOSE = 40.0  # ... or this close, when it matches the frame all around the mark
CODEC_NOISE = 5.0  # levels of the observed frame any prediction may be off by
RING_AGREES = 5.0  # mean difference on the ring around the mark for a reference to match the frame there
MAIN_PART = 0.2  # a part with at least this share of the mark's alpha is looked for alone
_SQUARE3 = np.ones((3, 3), np.uint8)
PRESENT_SCORE = 0.2  # the frame's detail correlates at least this well with the mark's (clean frames score near 0)


@dataclass
class SegmentPlan:
    """Everything rendering needs for one segment, on the frame's own pixel grid."""

    start: int
    end: int
    placement: Placement
    region: Box  # even-aligned, so chroma planes have the same region at half size
    parts: list[np.ndarray]  # the alpha of each part of the mark over the region
    template: np.ndarray  # the mark's detail over the region, for the presence test
    still: tuple[np.ndarray, np.ndarray, np.ndarray] | None  # Y, U, V of the region without the mark
    white: float = 255.0
    part_details: list[np.ndarray] = field(default_factory=list)  # each part's alpha detail, for its gain
    rings: list[np.ndarray] = field(default_factory=list)  # pixels just around each part, for the headroom
    outer: Box | None = None  # the region with a margin of content around it, to measure the camera's motion
    points: np.ndarray | None = None  # where to track that motion, in the outer box
    main_parts: list[np.ndarray] = field(default_factory=list)  # the detail of each large part alone
    # the mark at full strength, worked out once: plans at one place share this list (and its arrays)
    full: list[_Shape] = field(default_factory=list, repr=False, compare=False)

    def shape(self, gains: list[float]) -> _Shape:
        """The mark's alpha at these part strengths, and what follows from it alone. Inside a hold every part
        is at full strength: that shape is worked out once per place, not per frame or per segment."""
        if all(g == 1.0 for g in gains):
            if not self.full:
                self.full.append(_Shape.of(self.parts, gains, self.white))
            return self.full[0]
        return _Shape.of(self.parts, gains, self.white)


@dataclass(frozen=True)
class _Shape:
    alpha: np.ndarray  # luma grid
    alpha_c: np.ndarray  # chroma grid
    strong: np.ndarray  # where content from another frame beats reverse blending
    ring: np.ndarray  # just clear of the mark: where a reference must match the frame
    touched: np.ndarray  # anywhere the mark adds light, luma grid
    touched_c: np.ndarray  # chroma grid
    lift: np.ndarray  # the light the mark adds, a * white
    through: np.ndarray  # the share of the content that shows through, 1 - a
    tolerances: tuple[np.ndarray, np.ndarray]  # how far off a reference may be, per pixel: strict, loose

    @classmethod
    def of(cls, parts: list[np.ndarray], gains: list[float], white: float) -> _Shape:
        alpha = np.minimum(np.tensordot(np.asarray(gains, np.float32), np.stack(parts), axes=1), 0.97)
        h, w = alpha.shape
        alpha_c = cv2.resize(alpha, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        touched = alpha > 0.004
        ring = ~cv2.dilate(touched.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        through = 1.0 - alpha
        # Under the mark the content shows through at 1 - a only: a tolerance on the observed level alone would
        # let a reference 5x as far off pass in the core; so it is the content's tolerance, scaled by 1 - a,
        # above the codec's noise (looser where the reference fits around the mark: it is likelier right).
        tolerances = (np.maximum(CODEC_NOISE, EXPLAINED * through), np.maximum(CODEC_NOISE, EXPLAINED_LOOSE * through))
        return cls(alpha, alpha_c, alpha > STRONG_ALPHA, ring, touched, alpha_c > 0.004, alpha * white, through,
                   tolerances)


def plan_segment(matte: Matte, placement: Placement, start: int, end: int, frame_size: tuple[int, int],
                 still: tuple[np.ndarray, np.ndarray, np.ndarray, Box] | None,
                 same_place: SegmentPlan | None = None) -> SegmentPlan:
    """Resample the matte onto the frame grid at the segment's sub-pixel placement. The mark comes back to its
    places: a plan for a place already planned (``same_place``) shares its arrays, for memory."""
    if same_place is not None:
        return replace(same_place, start=start, end=end, still=_still_in(still, same_place.region))
    width, height = frame_size
    x0 = max(0, (int(np.floor(placement.x)) - 2) // 2 * 2)
    y0 = max(0, (int(np.floor(placement.y)) - 2) // 2 * 2)
    x1 = min(width, (int(np.ceil(placement.x)) + matte.width + 3 + 1) // 2 * 2)
    y1 = min(height, (int(np.ceil(placement.y)) + matte.height + 3 + 1) // 2 * 2)
    region = Box(x0, y0, x1 - x0, y1 - y0)
    shift = np.array([[1, 0, placement.x - x0], [0, 1, placement.y - y0]], np.float32)
    parts = []
    for label in range(1, int(matte.parts.max()) + 1):
        part = np.where(matte.parts == label, matte.alpha, 0.0).astype(np.float32)
        if part.any():
            parts.append(cv2.warpAffine(part, shift, (region.w, region.h), flags=cv2.INTER_LINEAR))
    alpha = np.sum(parts, axis=0)
    template = high_pass(alpha * matte.white, 2.0)
    touched = cv2.dilate((alpha > 0.004).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    rings = [(cv2.dilate((p > 0.004).astype(np.uint8), np.ones((11, 11), np.uint8)) > 0) & ~touched for p in parts]
    outer = borrow.around(region, width, height)
    return SegmentPlan(start, end, placement, region, parts, template, _still_in(still, region), matte.white,
                       [detail(p, 2.0) for p in parts], rings, outer, borrow.tracking_points(region, outer, alpha),
                       [high_pass(p * matte.white, 2.0) for p in parts if p.sum() >= MAIN_PART * alpha.sum()])


def _still_in(still: tuple[np.ndarray, np.ndarray, np.ndarray, Box] | None, region: Box
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Cut the region out of the still background the learning pass kept (over a larger, even region)."""
    if still is None:
        return None
    y, u, v, around = still
    dx, dy = region.x - around.x, region.y - around.y
    if dx < 0 or dy < 0 or dx + region.w > around.w or dy + region.h > around.h:
        return None
    return (y[dy:dy + region.h, dx:dx + region.w], u[dy // 2:(dy + region.h) // 2, dx // 2:(dx + region.w) // 2],
            v[dy // 2:(dy + region.h) // 2, dx // 2:(dx + region.w) // 2])


def presence(luma: np.ndarray, plan: SegmentPlan) -> float:
    """How well the frame's detail at the plan's placement matches the mark's, or that of one of its large parts
    alone: before a jump the text fades while the icon stays (which part is the icon, nothing here knows). The
    mark holds still to a tenth of a pixel, so one position is compared, not a search around it."""
    ys, xs = plan.region.slices()
    around = high_pass(luma[ys, xs], 2.0)
    if around.shape != plan.template.shape:  # the region runs off the frame
        return 0.0
    score = correlation(around, plan.template)
    for part_template in plan.main_parts if score < PRESENT_SCORE else ():  # faded text: the icon may stay
        score = max(score, correlation(around, part_template))
    return score


def fade_gains(luma_region: np.ndarray, plan: SegmentPlan) -> list[float]:
    """Each part's strength in this frame (parts fade before a jump), 0 to 1.

    Over locally smooth content, the mark's detail in the frame is ``gain * (white - content)`` times the
    detail of its alpha: project the frame's detail onto the part's, divide by the headroom measured on the
    ring around the part.
    """
    observed = luma_region.astype(np.float32)
    frame_detail = detail(observed, 2.0)
    gains = []
    for part_detail, ring in zip(plan.part_details, plan.rings, strict=True):
        power = float(np.sum(part_detail * part_detail))
        headroom = plan.white - float(np.median(observed[ring])) if ring.any() else 0.0
        if power <= 0 or headroom <= 8:
            gains.append(1.0)
            continue
        gain = float(np.sum(frame_detail * part_detail)) / power / headroom
        gains.append(0.0 if gain < 0.1 else 1.0 if gain > 0.9 else gain)
    return gains


def restore(y: np.ndarray, u: np.ndarray, v: np.ndarray, plan: SegmentPlan, gains: list[float],
            references: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> int:
    """Remove the mark from the frame's planes in place.

    ``references`` hold the region's content from other frames (Y, U, V), best first. Each is trusted pixel
    by pixel, where it explains what this frame shows: ``observed == a * white + (1 - a) * reference`` within
    the codec's noise. Even under the core the content shows through at ``1 - a``, so a passing object or a
    stale copy is caught there. Returns how many pixels came from the references.
    """
    r = plan.region
    shape = plan.shape(gains)
    alpha = shape.alpha
    ys, xs = r.slices()
    observed = y[ys, xs].astype(np.float32)
    core = (alpha > CORE_ALPHA) | ((observed >= plan.white - 3) & (alpha > 0.25))
    source = _choose(observed, shape, [ref[0] for ref in references])
    y[ys, xs] = _restore_plane(observed, alpha, shape.touched, core, plan.white, [ref[0] for ref in references],
                               source)
    cys, cxs = slice(r.y // 2, (r.y + r.h) // 2), slice(r.x // 2, (r.x + r.w) // 2)
    half = (r.w // 2, r.h // 2)
    core_c = cv2.resize(cv2.dilate(core.astype(np.uint8), np.ones((2, 2), np.uint8)), half,
                        interpolation=cv2.INTER_NEAREST) > 0
    source_c = -cv2.dilate(-source, np.ones((2, 2), np.int16))[::2, ::2][:half[1], :half[0]]
    for plane, index in ((u, 1), (v, 2)):
        plane[cys, cxs] = _restore_plane(plane[cys, cxs].astype(np.float32), shape.alpha_c, shape.touched_c,
                                         core_c, 128.0, [ref[index] for ref in references], source_c, smooth=True)
    return int(np.count_nonzero(source > 0))


def _filled(source: np.ndarray, references: list[np.ndarray]) -> np.ndarray:
    filled = np.zeros(source.shape, bool)
    for number, reference in enumerate(references, start=1):
        filled |= (source == number) & np.isfinite(reference)
    return filled


def _choose(observed: np.ndarray, shape: _Shape, references: list[np.ndarray]) -> np.ndarray:
    """Per pixel under the strong part of the mark, the first reference (1-based) that explains the frame
    there, else 0."""
    source = np.zeros(observed.shape, np.int16)
    open_ = shape.strong.copy()  # not taken by a better reference yet
    ring = shape.ring
    for number, reference in enumerate(references, start=1):
        differences = np.abs(observed[ring] - reference[ring])
        seen = differences[np.isfinite(differences)]
        agrees = seen.size > 0 and float(seen.mean()) < RING_AGREES
        tolerance = shape.tolerances[1] if agrees else shape.tolerances[0]
        explained = np.abs(observed - shape.lift - shape.through * reference) <= tolerance
        taken = (cv2.erode(explained.view(np.uint8), _SQUARE3) > 0) & open_  # no lone pixels
        source[taken] = number
        open_ &= ~taken
    return source


def _restore_plane(observed: np.ndarray, alpha: np.ndarray, touched: np.ndarray, core: np.ndarray, white: float,
                   references: list[np.ndarray], source: np.ndarray, *, smooth: bool = False) -> np.ndarray:
    """One plane: reverse blending on the translucent part (``touched`` but not ``core``), content from other
    frames where ``source`` says, inpainting for the rest of the core."""
    restored = observed.copy()
    soft = touched & ~core
    restored[soft] = (observed[soft] - white * alpha[soft]) / (1.0 - alpha[soft])
    for number, reference in enumerate(references, start=1):
        chosen = (source == number) & np.isfinite(reference)  # NaN: content that reference never saw
        restored[chosen] = reference[chosen]
    left = core & ~_filled(source, references)
    if left.any():
        hole = cv2.dilate(left.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & (source == 0)
        restored = inpaint.pull_push(restored, hole) if smooth else inpaint.telea(restored, hole)
    return np.clip(restored + 0.5, 0, 255).astype(np.uint8)
