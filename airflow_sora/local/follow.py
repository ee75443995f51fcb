"""Content from other frames for one segment's region, followed along the camera's motion frame by frame.

Two references come out of each step, best first:
- the anchor: the region as last seen whole (the frame before the mark came, or for the opening, the first
  frame after it left), moved by the motion accumulated since; one resampling however long the mark stays,
  so fine texture stays sharp. Where the anchor never saw the content (it came from outside its crop), the
  reference is NaN and the fill takes it from elsewhere.
- the frame before, already restored, moved by one step's motion: reaches everywhere, softens a little each
  step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from airflow_sora.local import borrow
from airflow_sora.local.codec import Planes
from airflow_sora.local.fill import SegmentPlan

Reference = tuple[np.ndarray, np.ndarray, np.ndarray]  # the content of a region (Y, U, V) seen in other frames


@dataclass
class _Anchor:
    crop: Reference  # the outer box's Y, U, V when the region was last seen whole
    matrix: np.ndarray  # from the anchor's pixels to the current frame's


class Follower:
    """Follows segments' regions through consecutive frames (forwards, or backwards for the opening)."""

    def __init__(self) -> None:
        self._anchors: dict[int, _Anchor] = {}

    def references(self, before: Planes, now: Planes, plan: SegmentPlan, *, fresh: bool) -> list[Reference]:
        """References for ``now`` from ``before`` (the neighbouring frame, restored); ``fresh`` when ``before``
        showed the region whole (the mark was not there)."""
        outer, region = plan.outer, plan.region
        if outer is None or plan.points is None:
            return []
        crop = before.cut(outer)
        oys, oxs = outer.slices()
        step = borrow.motion(crop[0], now.y[oys, oxs], plan.points)
        key = id(plan)
        if step is None:
            self._anchors.pop(key, None)
            return []
        if fresh:  # one anchor at a time, its own copy: a view would keep the whole frame it came from alive
            self._anchors = {key: _Anchor((crop[0].copy(), crop[1].copy(), crop[2].copy()),
                                          np.array([[1, 0, 0], [0, 1, 0]], np.float32))}
        dx, dy = region.x - outer.x, region.y - outer.y
        found = [_cut(crop, step, dx, dy, region.w, region.h, keep_unseen=True)]
        anchor = self._anchors.get(key)
        if anchor is not None:  # only a frame that showed the region whole anchors it
            anchor.matrix = borrow.compose(step, anchor.matrix)
            found.insert(0, _cut(anchor.crop, anchor.matrix, dx, dy, region.w, region.h, keep_unseen=False))
        return found


def _cut(crop: Reference, matrix: np.ndarray, dx: int, dy: int, w: int, h: int, *, keep_unseen: bool
         ) -> Reference:
    """The crop moved by ``matrix``, cut to the region (at ``dx``, ``dy`` in the crop; even, as boxes are)."""
    luma = borrow.Box(dx, dy, w, h)
    y, u, v = (borrow.warp(plane, matrix, scale, keep_unseen=keep_unseen, cut=box) for plane, scale, box in
               ((crop[0], 1.0, luma), (crop[1], 0.5, luma.half()), (crop[2], 0.5, luma.half())))
    return y, u, v
