"""Filling a hole from its surroundings: the last resort where no other frame shows what is there.

``telea`` (OpenCV's fast marching) keeps edges running into the hole; ``pull_push`` (masked averages down a
pyramid and back up) is smooth and far cheaper, for planes whose content is smooth anyway (chroma) and for
rough estimates.
"""

from __future__ import annotations

import cv2
import numpy as np

TELEA_RADIUS = 3
TELEA_PAD = 8  # the hole's box is widened by this much: Telea looks this far around it


def telea(plane: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """``plane`` (float) with the pixels of ``hole`` filled; only the box around the hole is worked on."""
    out = plane.astype(np.float32).copy()
    ys, xs = np.nonzero(hole)
    if ys.size == 0:
        return out
    y0, y1 = max(0, int(ys.min()) - TELEA_PAD), min(hole.shape[0], int(ys.max()) + TELEA_PAD + 1)
    x0, x1 = max(0, int(xs.min()) - TELEA_PAD), min(hole.shape[1], int(xs.max()) + TELEA_PAD + 1)
    box = (slice(y0, y1), slice(x0, x1))
    image = np.clip(out[box] + 0.5, 0, 255).astype(np.uint8)
    mask = hole[box].astype(np.uint8)
    filled = cv2.inpaint(image, mask, TELEA_RADIUS, cv2.INPAINT_TELEA).astype(np.float32)
    out[box][mask > 0] = filled[mask > 0]
    return out


def pull_push(plane: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """``plane`` (float) with the pixels of ``hole`` filled by a smooth membrane from the known pixels."""
    known = (~hole.astype(bool)).astype(np.float32)
    values = plane.astype(np.float32) * known
    levels: list[tuple[np.ndarray, np.ndarray]] = []
    while min(values.shape) > 2:
        levels.append((values, known))
        values, known = np.asarray(cv2.pyrDown(values)), np.asarray(cv2.pyrDown(known))
    filled: np.ndarray = values / np.maximum(known, 1e-6)
    for level_values, level_known in reversed(levels):
        up = cv2.resize(filled, (level_values.shape[1], level_values.shape[0]), interpolation=cv2.INTER_LINEAR)
        weight = np.minimum(level_known * 4.0, 1.0)  # trust the known pixels where they are dense
        filled = weight * (level_values / np.maximum(level_known, 1e-6)) + (1.0 - weight) * up
    return np.where(hole.astype(bool), filled, plane).astype(np.float32)
