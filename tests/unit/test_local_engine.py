"""The local engine's stages alone, on small synthetic frames: detection, segmentation, matte, fill.

Each test builds frames whose truth it knows (a translucent mark of our own drawing over moving content) and
checks the stage recovers it; none of them hands the stage the alpha used to composite.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from airflow_sora.local import borrow, inpaint
from airflow_sora.local.fill import PRESENT_SCORE, SegmentPlan, fade_gains, plan_segment, presence, restore
from airflow_sora.local.find import Box, CoarseSegment, Scanner, high_pass, match
from airflow_sora.local.matte import Matte, Placement, Samples, learn

WHITE = 235.0  # where limited-range video puts white


def drawn_mark(width: int = 72, height: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Alpha of a mark of our own: a blob with a hole (the icon) and two bars (a word), soft edges, max 0.8.
    Returns the icon's alpha and the word's, drawn apart so they can fade apart."""
    icon = np.zeros((height, width), np.uint8)
    word = np.zeros((height, width), np.uint8)
    cv2.circle(icon, (12, 15), 9, 255, -1, cv2.LINE_AA)
    cv2.circle(icon, (12, 15), 3, 0, -1, cv2.LINE_AA)
    cv2.rectangle(word, (28, 8), (66, 11), 255, -1)
    cv2.rectangle(word, (28, 18), (58, 21), 255, -1)

    def soft(layer: np.ndarray) -> np.ndarray:
        return (cv2.GaussianBlur(layer.astype(np.float32) / 255.0, (0, 0), 0.8) * 0.8).astype(np.float32)

    return soft(icon), soft(word)


def texture(height: int, width: int, seed: int) -> np.ndarray:
    """Content with detail at several scales (a stand-in for a photograph), 30-200."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.uniform(0, 1, (height // 8 + 2, width // 8 + 2)).astype(np.float32), (width, height),
                      interpolation=cv2.INTER_CUBIC)
    fine = cv2.GaussianBlur(rng.uniform(0, 1, (height, width)).astype(np.float32), (0, 0), 1.0)
    return (30 + 130 * base + 40 * fine).astype(np.float32)


def composite(content: np.ndarray, alpha: np.ndarray, x: int, y: int, gain: float = 1.0) -> np.ndarray:
    out = content.copy()
    h, w = alpha.shape
    a = alpha * gain
    out[y:y + h, x:x + w] = a * WHITE + (1 - a) * out[y:y + h, x:x + w]
    return out


def pan(canvas: np.ndarray, frame: int, width: int, height: int, speed: float = 1.5) -> np.ndarray:
    """The frame a camera sees panning right over ``canvas`` (sub-pixel, bilinear)."""
    shift = np.float32([[1, 0, -speed * frame], [0, 1, -0.4 * frame]])
    return cv2.warpAffine(canvas, shift, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


# detection and segmentation ------------------------------------------------------------------------------
SPOTS = ((20, 14), (200, 110))  # where the mark sits, in turn: top-left, bottom-right of a 320x180 frame
HOLD = 48  # frames at one spot


def marked_sequence(frames: int, *, marked: bool = True) -> list[np.ndarray]:
    icon, word = drawn_mark()
    alpha = icon + word
    canvas = texture(400, 600, seed=1)
    out = []
    for i in range(frames):
        content = pan(canvas, i, 320, 180)
        if marked and i % HOLD not in (HOLD - 1,):  # one blank frame at each jump
            x, y = SPOTS[(i // HOLD) % 2]
            content = composite(content, alpha, x, y)
        out.append(np.clip(content + 0.5, 0, 255).astype(np.uint8))
    return out


def scan(frames: list[np.ndarray]) -> list[CoarseSegment]:
    scanner = Scanner(320, 180)
    for luma in frames:
        scanner.add(luma)
    return scanner.segments()


def test_the_scan_finds_each_hold_of_the_mark_where_and_when_it_was():
    segments = scan(marked_sequence(3 * HOLD))
    assert len(segments) == 3
    for index, segment in enumerate(segments):
        x, y = SPOTS[index % 2]
        truth = Box(x, y, 72, 30)
        assert segment.box.iou(truth) > 0.3, (segment, truth)
        assert segment.start <= index * HOLD + 12 and segment.end >= (index + 1) * HOLD - 14


def test_the_scan_finds_nothing_in_moving_content_without_a_mark():
    assert scan(marked_sequence(3 * HOLD, marked=False)) == []


def test_the_scan_finds_the_same_holds_from_every_other_frame():
    """After the opening the scan decodes only the frames others refer to: about every other one."""
    frames = marked_sequence(3 * HOLD)
    scanner = Scanner(320, 180)
    for index, luma in enumerate(frames):
        if index < 16 or index % 2 == 0:
            scanner.add(luma, index)
    scanner.frames = len(frames)
    assert [(s.start, s.end, s.box) for s in scanner.segments()] == [(s.start, s.end, s.box) for s in scan(frames)]


def test_a_window_that_straddles_a_jump_does_not_start_or_end_a_segment():
    from airflow_sora.local.find import _trim_weak_ends

    here = Box(20, 14, 80, 40)
    run = [(3, here, 300.0), (4, here, 9000.0), (5, here, 10000.0), (6, here, 11000.0), (7, here, 10500.0),
           (8, here, 2000.0)]
    _trim_weak_ends(run)
    assert [index for index, _, _ in run] == [4, 5, 6, 7]
    short = [(0, here, 100.0), (1, here, 9000.0), (2, here, 9000.0)]
    _trim_weak_ends(short)
    assert len(short) == 3  # never below the shortest segment: a weak hold is judged as a whole


def test_a_hold_the_scan_lost_for_a_window_is_one_segment():
    from airflow_sora.local.find import _joined

    here, there = Box(20, 14, 80, 40), Box(200, 110, 80, 40)
    split = [CoarseSegment(0, 23, here, 1.0), CoarseSegment(32, 55, here, 2.0), CoarseSegment(64, 119, there, 1.0)]
    joined = _joined(split)
    assert [(s.start, s.end) for s in joined] == [(0, 55), (64, 119)]
    far = [CoarseSegment(0, 23, here, 1.0), CoarseSegment(64, 90, here, 1.0)]  # a later return, not a gap
    assert len(_joined(far)) == 2


def test_match_places_a_template_to_a_tenth_of_a_pixel():
    icon, word = drawn_mark()
    detail = high_pass((icon + word) * 255.0, 2.0)
    region = np.zeros((70, 110), np.float32)
    region[20:50, 17:89] = icon + word
    shifted = cv2.warpAffine(region * 255.0, np.float32([[1, 0, 0.3], [0, 1, -0.2]]), (110, 70))
    found = match(high_pass(shifted, 2.0), detail)
    assert found is not None
    assert found[0] == pytest.approx(17.3, abs=0.1) and found[1] == pytest.approx(19.8, abs=0.1)
    assert found[2] > 0.95


def test_the_correlation_at_one_position_is_the_searchs_score_there():
    from airflow_sora.local.find import correlation

    rng = np.random.default_rng(3)
    icon, word = drawn_mark()
    template = high_pass((icon + word) * 255.0, 2.0)
    for noise in (0.0, 20.0, 200.0):
        frame = high_pass((icon + word) * 255.0 + rng.normal(0, noise, icon.shape).astype(np.float32), 2.0)
        searched = cv2.matchTemplate(frame, template, cv2.TM_CCOEFF_NORMED)[0, 0]
        assert correlation(frame, template) == pytest.approx(float(searched), abs=1e-4)
    assert correlation(np.zeros_like(template), template) == 0.0  # no detail at all: no match, no division


# the matte -------------------------------------------------------------------------------------------------
def segment_samples(alpha: np.ndarray) -> list[Samples]:
    """Two segments, 24 frames each, of a mark over panning content; each region also seen without it."""
    canvas = texture(400, 600, seed=2)
    samples = []
    for index, (x, y) in enumerate(SPOTS):
        region = Box(x - 12, y - 12, alpha.shape[1] + 24, alpha.shape[0] + 24)
        sample = Samples(CoarseSegment(index * HOLD, index * HOLD + 40, region, 1.0), region)
        for i in range(24):
            frame = composite(pan(canvas, i * 3 + 100 * index, 320, 180), alpha, x, y)
            sample.marked.append(np.clip(frame[region.slices()] + 0.5, 0, 255).astype(np.uint8))
        for i in range(8):
            clean = pan(canvas, 60 + 7 * i + 100 * index, 320, 180)
            sample.unmarked.append(np.clip(clean[region.slices()] + 0.5, 0, 255).astype(np.uint8))
        samples.append(sample)
    return samples


def test_the_matte_learns_the_alpha_the_white_level_and_the_placements_from_the_frames():
    icon, word = drawn_mark()
    truth = icon + word
    matte = learn(segment_samples(truth))
    assert matte is not None
    assert matte.white == pytest.approx(WHITE, abs=6)
    assert sorted(matte.placements) == [0, 1]
    # the matte's pixel (0, 0) sits at the placement in the frame; the drawn mark's at its spot
    first = matte.placements[0]
    ox, oy = first.x - SPOTS[0][0], first.y - SPOTS[0][1]
    assert abs(ox - round(ox)) < 0.3 and abs(oy - round(oy)) < 0.3  # placed to a fraction of a pixel
    estimated = np.zeros_like(truth)
    h, w = matte.alpha.shape
    for yy in range(truth.shape[0]):
        for xx in range(truth.shape[1]):
            my, mx = yy - round(oy), xx - round(ox)
            if 0 <= my < h and 0 <= mx < w:
                estimated[yy, xx] = matte.alpha[my, mx]
    strong = truth > 0.3
    assert float(np.abs(estimated - truth)[strong].mean()) < 0.06
    assert float(estimated[truth < 0.01].mean()) < 0.02
    second = matte.placements[1]
    assert second.x - first.x == pytest.approx(SPOTS[1][0] - SPOTS[0][0], abs=0.3)
    assert second.y - first.y == pytest.approx(SPOTS[1][1] - SPOTS[0][1], abs=0.3)


def test_frames_of_a_hold_without_the_mark_do_not_dilute_the_alpha():
    """Blank frames at a jump (or a hold placed wrongly) are in the segment's span but show no mark."""
    icon, word = drawn_mark()
    truth = icon + word
    samples = segment_samples(truth)
    canvas = texture(400, 600, seed=9)
    for sample in samples:
        for i in range(8):  # a third of the frames: the alpha would come out a third too low
            blank = pan(canvas, 5 * i, 320, 180)
            sample.marked.append(np.clip(blank[sample.region.slices()] + 0.5, 0, 255).astype(np.uint8))
    matte = learn(samples)
    assert matte is not None
    assert float(matte.alpha.max()) == pytest.approx(float(truth.max()), abs=0.05)


def test_the_matte_refuses_steady_content_seen_in_one_place_only():
    icon, word = drawn_mark()
    samples = segment_samples(icon + word)[:1]  # one place: a still logo of the scene's own, not the mark
    assert learn(samples) is None


# the fill --------------------------------------------------------------------------------------------------
def true_plan(alpha: np.ndarray, x: float, y: float, still: np.ndarray | None = None) -> SegmentPlan:
    parts = np.zeros(alpha.shape, np.int32)
    parts[alpha > 0.004] = 1
    parts[:, 26:][alpha[:, 26:] > 0.004] = 2
    matte = Matte(alpha, parts, {0: Placement(x, y, 1.0)}, WHITE)
    grey = None if still is None else (still, np.full((90, 160), 128.0, np.float32),
                                       np.full((90, 160), 128.0, np.float32), Box(0, 0, 320, 180))
    return plan_segment(matte, matte.placements[0], 0, 40, (320, 180), grey)


def test_plans_at_one_place_share_the_marks_full_shape() -> None:
    icon, word = drawn_mark()
    first = true_plan(icon + word, 40.0, 30.0)
    matte = Matte(icon + word, (icon + word > 0.004).astype(np.int32), {0: first.placement}, WHITE)
    again = plan_segment(matte, first.placement, 100, 140, (320, 180), None, first)
    assert again.shape([1.0] * len(again.parts)) is first.shape([1.0] * len(first.parts))


def planes(luma: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.clip(luma + 0.5, 0, 255).astype(np.uint8), np.full((90, 160), 128, np.uint8),
            np.full((90, 160), 128, np.uint8))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0 ** 2 / max(float(np.mean((a.astype(float) - b.astype(float)) ** 2)), 1e-9)))


def test_the_fill_gives_back_the_still_background_exactly_where_it_explains_the_frame():
    icon, word = drawn_mark()
    alpha = icon + word
    content = texture(180, 320, seed=3)
    y, u, v = planes(composite(content, alpha, 40, 30))
    plan = true_plan(alpha, 40, 30, still=content)
    box = (slice(30, 60), slice(40, 112))
    before = psnr(y[box], content[box])
    restore(y, u, v, plan, [1.0, 1.0], [plan.still] if plan.still is not None else [])
    assert before < 22
    assert psnr(y[box], content[box]) > 45


def test_under_the_core_a_reference_with_other_content_is_not_taken_for_the_frame():
    icon, word = drawn_mark()
    alpha = icon + word
    content = cv2.GaussianBlur(texture(180, 320, seed=11), (0, 0), 1.0)
    passing = content.copy()
    passing[30:60, 40:70] = np.clip(content[30:60, 40:70] + 40, 0, 255)  # an object over the icon, this frame only
    y, u, v = planes(composite(passing, alpha, 40, 30))
    plan = true_plan(alpha, 40, 30, still=content)  # the still background never saw the object
    restore(y, u, v, plan, [1.0, 1.0], [plan.still] if plan.still is not None else [])
    core = np.zeros((180, 320), bool)
    core[30:60, 40:112] = alpha > 0.6
    core[:, 70:] = False  # the icon's core, where the object is
    error = np.abs(y.astype(np.float32) - passing)[core]
    assert float(np.mean(error)) < 4  # the object, seen through at 1 - a, not the background 40 levels off


def test_without_other_frames_reverse_blending_and_inpainting_still_recover_most_of_it():
    icon, word = drawn_mark()
    alpha = icon + word
    content = cv2.GaussianBlur(texture(180, 320, seed=4), (0, 0), 2.0)  # smooth enough for inpainting
    y, u, v = planes(composite(content, alpha, 40, 30))
    plan = true_plan(alpha, 40, 30)
    box = (slice(30, 60), slice(40, 112))
    before = psnr(y[box], content[box])
    restore(y, u, v, plan, [1.0, 1.0], [])
    assert psnr(y[box], content[box]) > before + 12
    outside = np.ones((180, 320), bool)
    outside[28:62, 38:114] = False
    assert np.array_equal(y[outside], planes(composite(content, alpha, 40, 30))[0][outside])  # untouched


def test_a_frame_without_the_mark_scores_low_and_one_with_it_high():
    icon, word = drawn_mark()
    alpha = icon + word
    content = texture(180, 320, seed=5)
    plan = true_plan(alpha, 40, 30)
    assert presence(planes(composite(content, alpha, 40, 30))[0], plan) > 0.6
    assert presence(planes(content)[0], plan) < 0.2


def test_fade_gains_follow_each_part_of_the_mark():
    icon, word = drawn_mark()
    content = cv2.GaussianBlur(texture(180, 320, seed=6), (0, 0), 3.0)
    plan = true_plan(icon + word, 40, 30)
    faded = composite(composite(content, icon, 40, 30), word, 40, 30, gain=0.5)
    r = plan.region
    gains = fade_gains(planes(faded)[0][r.slices()], plan)
    assert gains[0] == pytest.approx(1.0, abs=0.15)
    assert gains[1] == pytest.approx(0.5, abs=0.15)


def test_the_mark_is_still_found_when_its_largest_part_has_faded_and_a_smaller_one_stays():
    icon, word = drawn_mark()
    word = word * 2.0  # the word outweighs the icon here, as a long name does
    content = texture(180, 320, seed=8)
    plan = true_plan(icon + word, 40, 30)
    icon_only = planes(composite(content, icon, 40, 30))[0]
    assert presence(icon_only, plan) >= PRESENT_SCORE
    assert presence(planes(content)[0], plan) < PRESENT_SCORE


def test_the_parts_of_a_noisy_matte_stay_apart_and_specks_do_not_make_parts():
    from airflow_sora.local.matte import _parts

    icon, word = drawn_mark()
    word = np.roll(word, 4, axis=1)  # a word-space between icon and word, as the mark has
    alpha = icon + word
    rng = np.random.default_rng(9)
    noisy = np.clip(alpha + rng.uniform(0, 0.2, alpha.shape).astype(np.float32)
                    * (rng.uniform(0, 1, alpha.shape) > 0.9), 0, 1)  # faint specks, some bridging the gap
    labels = _parts(noisy)
    icon_labels = set(np.unique(labels[icon > 0.5])) - {0}
    word_labels = set(np.unique(labels[word > 0.5])) - {0}
    assert len(icon_labels) == 1 and icon_labels.isdisjoint(word_labels)
    assert len(set(np.unique(labels)) - {0}) <= 3  # icon and the word's two lines: no part made of specks


def test_the_parts_strengths_are_measured_only_when_the_mark_is_about_to_leave():
    from airflow_sora.local.codec import Planes
    from airflow_sora.local.engine import FADE_LOOKAHEAD, _Leaving

    icon, word = drawn_mark()
    content = texture(180, 320, seed=10)
    plan = true_plan(icon + word, 40, 30)  # a hold of frames 0..40
    leaving = _Leaving([plan])
    gone = 44
    for index in range(60):
        luma = planes(composite(content, icon + word, 40, 30) if index < gone else content)[0]
        leaving.peek(index, Planes(luma, luma[::2, ::2], luma[::2, ::2], index, None))
        edited = index - FADE_LOOKAHEAD
        if edited >= 0:
            assert leaving(edited, plan) == (edited >= gone - FADE_LOOKAHEAD), edited


# content from other frames ---------------------------------------------------------------------------------
def test_motion_is_measured_around_the_mark_and_composes():
    canvas = texture(300, 400, seed=7)
    before, after = pan(canvas, 0, 200, 120), pan(canvas, 2, 200, 120)  # 3 px right, 0.8 px up
    points = borrow.tracking_points(Box(60, 40, 60, 30), Box(0, 0, 200, 120), np.zeros((30, 60), np.float32))
    step = borrow.motion(before.astype(np.uint8), after.astype(np.uint8), points)
    assert step is not None
    assert step[0, 2] == pytest.approx(-3.0, abs=0.1) and step[1, 2] == pytest.approx(-0.8, abs=0.1)
    twice = borrow.compose(step, step)
    assert twice[0, 2] == pytest.approx(-6.0, abs=0.2)


def test_inpainting_fills_a_hole_in_a_smooth_ramp():
    ramp = np.tile(np.linspace(40, 200, 64, dtype=np.float32), (32, 1))
    hole = np.zeros(ramp.shape, bool)
    hole[10:20, 20:40] = True
    damaged = np.where(hole, 255.0, ramp)
    for fill in (inpaint.telea, inpaint.pull_push):
        filled = fill(damaged, hole)
        assert float(np.abs(filled - ramp)[hole].max()) < 25
        assert np.array_equal(filled[~hole], ramp[~hole])


# learning from the frames the scan kept ------------------------------------------------------------------
def test_the_scan_keeps_whole_frames_for_learning_only_where_they_fall_close_enough() -> None:
    from airflow_sora.local.codec import Planes, VideoInfo
    from airflow_sora.local.engine import RESERVOIR_STRIDE, _Reservoir

    short = _Reservoir.of(VideoInfo("a.mp4", 1280, 720, 30.0, 270, True))
    assert 1 <= short.stride <= RESERVOIR_STRIDE
    long = _Reservoir.of(VideoInfo("b.mp4", 1920, 1080, 30.0, 1800, True))
    assert long.stride == 0  # a minute of 1080p: frames kept within the budget would be seconds apart
    long.offer(0, Planes(np.zeros((4, 4), np.uint8), np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8),
                         0, None))
    assert long.frames == {} and long.among(range(0, 100), 16) is None

    kept = _Reservoir(stride=4, capacity=1000)
    blank = Planes(np.zeros((4, 4), np.uint8), np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8), 0, None)
    for index in range(270):
        kept.offer(index, blank)
    picks = kept.among(range(60, 126), 16)
    assert picks is not None and len(picks) == 16 and all(p % 4 == 0 and 60 <= p <= 125 for p in picks)
    assert picks == sorted(picks)
    assert kept.among(range(61, 64), 3) is None  # a short run between kept frames: decode those instead


def test_the_scan_keeps_every_frame_of_the_opening_only_where_its_budget_spans_the_first_hold() -> None:
    from airflow_sora.local.codec import Planes, VideoInfo
    from airflow_sora.local.engine import OPENING_SECONDS, _Reservoir

    short = _Reservoir.of(VideoInfo("a.mp4", 1280, 720, 30.0, 270, True))
    assert short.head >= OPENING_SECONDS * 30
    blank = Planes(np.zeros((4, 4), np.uint8), np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8), 0, None)
    for index in range(270):
        short.offer(index, blank)
    assert len(short.opening) == short.head and short.seen == 270
    assert all(f % short.stride == 0 for f in short.frames)  # the head does not change what learning picks
    large = _Reservoir.of(VideoInfo("b.mp4", 1920, 1080, 30.0, 270, True))
    assert large.head == 0  # 1080p: the budget would not span the first hold, so nothing is kept for it


def test_the_follower_keeps_one_anchor_of_its_own_not_a_view_that_pins_a_whole_frame() -> None:
    from airflow_sora.local.codec import Planes
    from airflow_sora.local.follow import Follower

    icon, word = drawn_mark()
    canvas = texture(400, 600, seed=12)
    first, second = (pan(canvas, i, 320, 180) for i in (0, 1))
    plans = [true_plan(icon + word, 40, 30), true_plan(icon + word, 200, 110)]

    def as_planes(luma: np.ndarray) -> Planes:
        y, u, v = planes(luma)
        return Planes(y, u, v, 0, None)

    before, now = as_planes(first), as_planes(second)
    follower = Follower()
    for plan in plans:
        assert follower.references(before, now, plan, fresh=True)
    anchors = list(follower._anchors.values())
    assert len(anchors) == 1  # the plan left behind has no anchor to keep
    assert not any(np.shares_memory(plane, frame) for plane in anchors[0].crop
                   for frame in (before.y, before.u, before.v))


def test_a_regions_planes_cut_as_views_or_copies_and_paste_back() -> None:
    from airflow_sora.local.codec import Planes

    y, u, v = planes(texture(120, 160, seed=3))
    frame = Planes(y.copy(), u.copy(), v.copy(), 0, None)
    box = Box(20, 10, 40, 30)
    views, copies = frame.cut(box), frame.cut(box, copy=True)
    assert [p.shape for p in views] == [(30, 40), (15, 20), (15, 20)]
    assert all(np.shares_memory(view, plane) for view, plane in zip(views, (frame.y, frame.u, frame.v), strict=True))
    assert not any(np.shares_memory(c, plane) for c in copies for plane in (frame.y, frame.u, frame.v))
    for view in views:
        view[:] = 0
    frame.paste(box, copies)
    assert np.array_equal(frame.y, y) and np.array_equal(frame.u, u) and np.array_equal(frame.v, v)


def test_frames_the_openings_walk_cleaned_are_not_measured_unless_a_frame_after_them_asks() -> None:
    from airflow_sora.local.codec import Planes
    from airflow_sora.local.engine import FADE_LOOKAHEAD, _Leaving

    icon, word = drawn_mark()
    luma = planes(composite(texture(180, 320, seed=10), icon + word, 40, 30))[0]
    leaving = _Leaving([true_plan(icon + word, 40, 30)])  # a hold of frames 0..40: its end is looked at
    leaving.pasted = set(range(36))
    measured = []
    for index in range(60):
        leaving.peek(index, Planes(luma, luma[::2, ::2], luma[::2, ::2], index, None))
        if index in leaving.scores:
            measured.append(index)
    assert measured == list(range(36, 60))  # from the plan's end less EDGE (20) on, but for the walk's frames
    assert all(leaving.score(i, leaving.plans[0]) is not None for i in range(60 - FADE_LOOKAHEAD, 60))


def test_a_reference_warped_straight_to_the_region_is_the_region_of_the_whole_warp() -> None:
    crop = texture(90, 140, seed=5)
    matrix = np.array([[1.01, 0.004, 2.37], [-0.004, 1.01, -1.61]], np.float32)
    region = Box(24, 24, 92, 42)
    for keep_unseen in (True, False):
        whole = borrow.warp(crop, matrix, keep_unseen=keep_unseen)[region.slices()]
        cut = borrow.warp(crop, matrix, keep_unseen=keep_unseen, cut=region)
        assert cut.shape == whole.shape
        assert np.array_equal(np.isnan(cut), np.isnan(whole))
        assert np.nanmax(np.abs(cut - whole)) < 0.01  # OpenCV's fixed-point rounding, nothing more
    half = borrow.warp(crop[::2, ::2], matrix, 0.5, cut=region.half())
    assert half.shape == (region.h // 2, region.w // 2)


def test_a_still_shot_keeps_its_background_and_a_moving_one_is_told_apart_on_a_subsample() -> None:
    from airflow_sora.local.matte import _still_background

    rng = np.random.default_rng(4)
    scene = texture(120, 200, seed=8)
    still = [np.clip(scene + rng.normal(0, 1.0, scene.shape), 0, 255).astype(np.uint8) for _ in range(8)]
    found = _still_background(still)
    assert found is not None and np.abs(found - scene).mean() < 1.5
    moving = [pan(texture(300, 400, seed=8), 6 * i, 200, 120).astype(np.uint8) for i in range(8)]
    assert _still_background(moving) is None
    drifting = [np.clip(scene + 4.0 * i, 0, 255).astype(np.uint8) for i in range(8)]  # slow, but more than 6
    assert _still_background(drifting) is None
