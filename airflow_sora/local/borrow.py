"""Content from the frame before, carried along the camera's motion: what the mark hides now was often in
view a moment ago (a pan, a zoom, a drifting shot).

The motion is measured on the ring of content around the mark (never on the mark itself, which holds
still), as a similarity transform (shift, zoom, slight rotation) fitted to tracked points; the previous frame,
already restored, is warped onto this one. Chained frame after frame, content reaches under the mark's core
from where it was last seen. Parallax breaks a single transform: the fill checks the ring's agreement before
it trusts the result.
"""

from __future__ import annotations

import cv2
import numpy as np

from airflow_sora.local.find import Box

MARGIN = 24  # pixels of content around the mark's region used to measure the motion
MIN_POINTS = 12
LK_STOP = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 10, 0.03)  # a twentieth of a pixel per point is plenty:
# the fit over all points is finer than any one
POINT_STEP = 16  # a point every this many pixels: about a hundred around a mark, plenty for 4 parameters


def around(region: Box, width: int, height: int) -> Box:
    """The region widened by ``MARGIN`` on every side, even-aligned for the chroma planes."""
    return region.padded(MARGIN, width, height).even()


def tracking_points(region: Box, outer: Box, alpha: np.ndarray) -> np.ndarray:
    """A grid of points over the outer box, away from the mark, in the outer box's coordinates."""
    keep = np.ones((outer.h, outer.w), np.uint8)
    dy, dx = region.y - outer.y, region.x - outer.x
    keep[dy:dy + region.h, dx:dx + region.w] = (cv2.dilate((alpha > 0.004).astype(np.uint8),
                                                          np.ones((9, 9), np.uint8)) == 0)
    ys, xs = np.mgrid[4:outer.h - 4:POINT_STEP, 4:outer.w - 4:POINT_STEP]
    points = np.stack([xs.ravel(), ys.ravel()], axis=1)
    points = points[keep[points[:, 1], points[:, 0]] > 0]
    return points.astype(np.float32).reshape(-1, 1, 2)


def motion(previous: np.ndarray, current: np.ndarray, points: np.ndarray) -> np.ndarray | None:
    """The 2x3 transform taking the previous crop's pixels to the current one's, or None if it can't be
    measured (too few points tracked, or they disagree)."""
    if len(points) < MIN_POINTS:
        return None
    moved, status, _ = cv2.calcOpticalFlowPyrLK(previous, current, points, None, winSize=(9, 9), maxLevel=2,  # type: ignore[call-overload]
                                                criteria=LK_STOP)
    good = status.ravel() == 1
    if int(good.sum()) < MIN_POINTS:
        return None
    matrix, inliers = cv2.estimateAffinePartial2D(points[good], moved[good], method=cv2.RANSAC,
                                                  ransacReprojThreshold=1.0)
    if matrix is None or inliers is None or int(inliers.sum()) < MIN_POINTS:
        return None
    return matrix


def warp(plane: np.ndarray, matrix: np.ndarray, scale: float = 1.0, *, keep_unseen: bool = True,
         cut: Box | None = None) -> np.ndarray:
    """``plane`` (a crop of another frame) moved as ``matrix`` says; ``scale`` 0.5 for chroma. Pixels whose
    source lies outside the crop repeat its border, or are NaN without ``keep_unseen``. With ``cut`` (in the
    crop's own pixels, at ``scale``) only that part of the result is worked out."""
    m = matrix.copy()
    m[:, 2] *= scale
    h, w = plane.shape
    if cut is not None:  # the same pixels as cutting the whole result, at a fraction of the work
        m[:, 2] -= (cut.x, cut.y)
        w, h = cut.w, cut.h
    source = plane.astype(np.float32, copy=False)
    if keep_unseen:
        return cv2.warpAffine(source, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.warpAffine(source, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=float("nan"))


def compose(later: np.ndarray, earlier: np.ndarray) -> np.ndarray:
    """The 2x3 transform doing ``earlier`` then ``later``."""
    a2, b2 = later[:, :2], later[:, 2]
    a1, b1 = earlier[:, :2], earlier[:, 2]
    return np.hstack([a2 @ a1, (a2 @ b1 + b2)[:, None]]).astype(np.float32)
