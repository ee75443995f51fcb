"""One file in, one clean file out: scan, learn, render, each a pass over the frames with bounded memory.

1. Scan: where and when the mark holds still (``find.Scanner``), from a small copy of each frame of the
   opening and of every frame others refer to after it (``codec.Scanned``: the decoder skips the rest).
2. Learn: full-resolution crops of each segment's region, with the mark and (from other segments' frames)
   without it; the matte is fitted from them (``matte.learn``). Memory is bounded by crop counts. Where the
   scan could keep every few frames whole, and every frame of the opening (``_Reservoir``, fixed budgets:
   short and small videos), the crops come from those and this pass decodes nothing.
3. Render: decode, find the mark in each frame at its segment's placement, restore (``fill``), encode with
   the audio remuxed (``codec.transcode``).
Decoding is cheap next to encoding, so the passes decode again rather than keep frames in memory.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from airflow_sora import __version__
from airflow_sora.local import borrow, codec
from airflow_sora.local.errors import NotAVideoError
from airflow_sora.local.fill import PRESENT_SCORE, SegmentPlan, fade_gains, plan_segment, presence, restore
from airflow_sora.local.find import WINDOW, Box, CoarseSegment, Scanner
from airflow_sora.local.follow import Follower, Reference
from airflow_sora.local.matte import Matte, Samples, learn, still_background
from airflow_sora.local.report import CleanReport, MarkSegment
from airflow_sora.local.settings import EngineSettings

ENGINE = f"airflow-provider-sora local engine {__version__}"
Progress = Callable[[str, int, int], None]
EDGE = 2 * WINDOW + 4  # frames around a coarse segment's ends where the mark may still be, or fading
FADE_LOOKAHEAD = 8  # the mark's text fades over at most this many frames before it jumps
LEARN_PAD = 12  # pixels around a coarse box kept for learning
MARKED_PER_SEGMENT = 16
UNMARKED_PER_SEGMENT = 12
FULL_SEGMENTS = 6  # segments learned from in full; later ones (long videos) keep fewer crops, for memory
FEW_PER_SEGMENT = 6
RESERVOIR_BYTES = 100 * 2**20  # whole frames the scan may keep for learning
RESERVOIR_STRIDE = 5  # kept frames at most this far apart, or too few fall in a hold to learn from
OPENING_BYTES = 160 * 2**20  # every frame of the video's first seconds, kept by the scan for the opening's walk
OPENING_SECONDS = 3.5  # the first hold (about 2.2 s) and its edges: a budget holding less is not used
PROGRESS_EVERY = 10
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 2 * 2**20  # above a 720p frame (1.4 MB), below a 1080p one (3.1 MB)


def clean_file(src: str | os.PathLike[str], dst: str | os.PathLike[str],
               settings: EngineSettings | None = None, *, progress: Progress | None = None) -> CleanReport:
    """Remove the mark from ``src`` into ``dst`` (an .mp4); a file with no mark is copied unchanged.

    Raises ``NotAVideoError`` (naming the file) for a file that is not a readable video. ``progress`` is called
    from the calling thread while the file is scanned and learned from, and from the render's own thread
    (``ahead.yielding``) while it renders: one call at a time, never two at once.
    """
    settings = settings or EngineSettings()
    source, target = os.fspath(src), os.fspath(dst)
    started = time.monotonic()
    _large_blocks_from_the_system()
    info = codec.probe(source)
    tick = _Ticker(progress, info.frames)
    scanner = Scanner(info.width, info.height)
    reservoir = _Reservoir.of(info)
    scanned = codec.Scanned(source, threads=settings.threads, all_until=reservoir.head)
    for index, planes in scanned:
        reservoir.offer(index, planes)
        scanner.add(planes.y, index)
        tick("scan", index + 1)
    scanner.frames = scanned.frames  # the last frames may have been skipped
    if scanner.frames == 0:
        raise NotAVideoError(f"{source}: the video stream has no frames; the file may be truncated")
    tick.total = scanner.frames
    report = CleanReport(frames=scanner.frames, width=info.width, height=info.height, fps=round(info.fps, 3),
                         mark_found=False, positions=[None] * scanner.frames, audio_kept=info.has_audio,
                         engine=ENGINE, settings=settings.as_dict())
    coarse = scanner.segments()
    del scanner  # memory: what the scan kept is no longer needed
    matte, samples, opening = _learn(source, coarse, info, settings, tick, reservoir) if coarse \
        else (None, [], None)
    del reservoir
    if matte is None:
        codec.copy_unchanged(source, target)
    else:
        plans = _plans(matte, samples, (info.width, info.height))
        del samples  # memory: the plans keep what rendering needs
        _give_back_freed_memory()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sora-local-opening") as walk:
            # the opening's walk runs while the render opens the files and decodes its first frames
            walked = walk.submit(_walk, opening, plans) if opening is not None else None
            del opening
            _render(source, target, settings, matte, plans, walked, report, tick)
        report.mark_found = report.marked_frames > 0
        report.segments = _segments(report.positions, plans, matte)
        report.confidence = round(float(np.mean([s.confidence for s in report.segments])), 3) if report.segments \
            else 0.0
        if not report.mark_found:  # the matte fitted nothing frame by frame: never hand back a re-encode
            codec.copy_unchanged(source, target)
    credentials = codec.read_c2pa(source)
    if credentials:
        Path(target + ".c2pa").write_bytes(credentials)
        report.c2pa_kept = True
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _learn(source: str, coarse: list[CoarseSegment], info: codec.VideoInfo, settings: EngineSettings,
           tick: _Ticker, reservoir: _Reservoir) -> tuple[Matte | None, list[Samples], _Opening | None]:
    """Crops of every segment's region: frames with the mark there, and frames without; and every frame of the
    opening's region while the mark sits there from the first frame on. Frames the scan kept whole serve
    first (each kind of crop of a segment comes from one source, so in frame order); one pass decodes the rest,
    up to the last frame still wanted."""
    samples = [Samples(s, s.box.padded(LEARN_PAD + s.box.h // 4, info.width, info.height).even()) for s in coarse]
    wanted: dict[int, list[tuple[Samples, bool]]] = {}
    for number, sample in enumerate(samples):
        s = sample.segment
        few = number >= FULL_SEGMENTS  # later segments need only enough frames to be placed
        marked = range(s.start, s.end + 1)
        elsewhere = [f for o in coarse if o.box.iou(sample.region) == 0 for f in range(o.start, o.end + 1)]
        for frames, count, with_mark in ((marked, FEW_PER_SEGMENT if few else MARKED_PER_SEGMENT, True),
                                         (elsewhere, FEW_PER_SEGMENT if few else UNMARKED_PER_SEGMENT, False)):
            kept = reservoir.among(frames, count)
            if kept is not None:
                for frame in kept:
                    _keep(sample, with_mark, reservoir.frames[frame])
            else:
                for frame in _spread(frames, count):
                    wanted.setdefault(frame, []).append((sample, with_mark))
    opening = _Opening.of(coarse, info)
    through = min(opening.last, reservoir.seen - 1) if opening is not None else -1
    if opening is not None and len(reservoir.opening) > through:
        for planes in reservoir.opening[:through + 1]:
            opening.keep(planes)
        through = -1  # the opening needs no decoding
    last = max([*wanted, through])
    if last >= 0:
        for index, planes in enumerate(codec.iter_planes(source, threads=settings.threads, stop_after=last + 1)):
            if opening is not None and index <= through:
                opening.keep(planes)
            for sample, with_mark in wanted.get(index, ()):
                _keep(sample, with_mark, planes)
            tick("learn", index + 1)
    return learn(samples, info.white), samples, opening


def _keep(sample: Samples, with_mark: bool, planes: codec.Planes) -> None:
    if with_mark:
        ys, xs = sample.region.slices()
        sample.marked.append(planes.y[ys, xs].copy())
    else:
        y, u, v = planes.cut(sample.region, copy=True)
        sample.unmarked.append(y)
        sample.unmarked_chroma.append((u, v))


def _plans(matte: Matte, samples: list[Samples], frame_size: tuple[int, int]) -> list[SegmentPlan]:
    """One plan per segment; segments where the mark sits at a place already planned (within a twentieth of
    a pixel) share that plan's arrays."""
    plans: list[SegmentPlan] = []
    places: dict[tuple[int, int], SegmentPlan] = {}
    for index, placement in sorted(matte.placements.items()):
        key = (round(placement.x * 20), round(placement.y * 20))
        sample = samples[index]
        plan = plan_segment(matte, placement, sample.segment.start, sample.segment.end, frame_size,
                            _still(sample), places.get(key))
        places.setdefault(key, plan)
        plans.append(plan)
    return plans


def _still(sample: Samples) -> tuple[np.ndarray, np.ndarray, np.ndarray, Box] | None:
    luma = still_background(sample)
    if luma is None:
        return None
    u = np.median(np.stack([c[0] for c in sample.unmarked_chroma]), axis=0).astype(np.float32)
    v = np.median(np.stack([c[1] for c in sample.unmarked_chroma]), axis=0).astype(np.float32)
    return luma, u, v, sample.region


def _render(source: str, target: str, settings: EngineSettings, matte: Matte, plans: list[SegmentPlan],
            opening: Future[dict[int, tuple[SegmentPlan, Reference]]] | None, report: CleanReport, tick: _Ticker
            ) -> None:
    """``opening``: the opening's frames cleaned by its walk (``_Opening.hindsight``), awaited at the first
    frame."""
    support = matte.support()
    follower = Follower()
    leaving = _Leaving(plans)
    hindsight: dict[int, tuple[SegmentPlan, Reference]] = {}
    previous: list[tuple[codec.Planes, SegmentPlan | None]] = []  # the frame before (restored), its plan

    def edit(index: int, planes: codec.Planes) -> None:
        def references(plan: SegmentPlan) -> list[Reference]:
            if not previous:
                return []
            before, before_plan = previous[0]
            return follower.references(before, planes, plan, fresh=before_plan is not plan)

        nonlocal hindsight
        if index == 0 and opening is not None:
            hindsight = opening.result()  # the future's own dict: each crop popped is freed once pasted
            leaving.pasted = set(hindsight)
        restored = hindsight.pop(index, None)
        plan: SegmentPlan | None
        if restored is not None:  # the opening's walk cleaned this frame already
            plan = restored[0]
            planes.paste(plan.region, restored[1])
        else:
            plan = _clean(index, planes, plans, references, previous[0][1] if previous else None, leaving,
                          leaving.score)
        if plan is not None:
            report.positions[index] = _corner(plan, support)
            report.marked_frames += 1
        previous[:] = [(planes, plan)]
        tick("render", index + 1)

    written = codec.transcode(source, target, settings, edit, lookahead=FADE_LOOKAHEAD, peek=leaving.peek)
    report.frames = written


class _Leaving:
    """Whether the mark leaves a place within the next few frames: its text fades only then, so only then are
    the parts' strengths measured (over fine texture that measure errs, and a mark held at full strength
    needs none). Fed each frame ``FADE_LOOKAHEAD`` frames before it is cleaned, near the ends of the holds;
    frames the opening's walk cleaned already (``pasted``) are asked about by no frame cleaned here."""

    def __init__(self, plans: list[SegmentPlan]) -> None:
        self.plans = plans
        self.pasted: set[int] = set()  # known once the first frame is cleaned
        self.scores: dict[int, dict[int, float]] = {}  # frame -> id(plan) -> presence

    def peek(self, index: int, planes: codec.Planes) -> None:
        self.scores.pop(index - FADE_LOOKAHEAD - 2, None)
        if all(i in self.pasted for i in range(index - FADE_LOOKAHEAD, index + 1)):
            return  # neither this frame nor one cleaned just before it looks at this frame's score
        near = [p for p in self.plans if p.end - EDGE <= index <= p.end + EDGE + FADE_LOOKAHEAD]
        if near:
            self.scores[index] = {id(p): presence(planes.y, p) for p in near}

    def score(self, index: int, plan: SegmentPlan) -> float | None:
        return self.scores.get(index, {}).get(id(plan))

    def __call__(self, index: int, plan: SegmentPlan) -> bool:
        ahead = (self.score(j, plan) for j in range(index + 1, index + FADE_LOOKAHEAD + 1))
        return any(score is not None and score < PRESENT_SCORE for score in ahead)


def _clean(index: int, planes: codec.Planes, plans: list[SegmentPlan],
           references: Callable[[SegmentPlan], list[Reference]], before: SegmentPlan | None,
           fading: Callable[[int, SegmentPlan], bool], known: Callable[[int, SegmentPlan], float | None]
           ) -> SegmentPlan | None:
    """Find the mark in one frame (the plan of the segment it belongs to) and remove it; None if absent.
    References come best first after the still background (see ``follow``). ``before`` is the plan the frame
    before was cleaned with: well inside its segment the mark holds still, so it is not looked for again.
    ``fading`` says whether the mark may be fading out at this frame (then each part's strength is measured);
    ``known`` gives a presence score already measured for this frame, if any."""
    if before is not None and before.start + EDGE <= index <= before.end - EDGE:
        plan = before
    else:
        covering = [p for p in plans if p.start - EDGE <= index <= p.end + EDGE]
        def score(plan: SegmentPlan) -> float:
            measured = known(index, plan)
            return measured if measured is not None else presence(planes.y, plan)

        present = _most_present(covering, score) or _most_present(_elsewhere(plans, covering), score)
        if present is None:
            return None
        plan = present
    ys, xs = plan.region.slices()
    gains = fade_gains(planes.y[ys, xs], plan) if fading(index, plan) else [1.0] * len(plan.parts)
    if max(gains) <= 0:
        return None
    found = ([plan.still] if plan.still is not None else []) + references(plan)
    restore(planes.y, planes.u, planes.v, plan, gains, found)
    return plan


def _large_blocks_from_the_system() -> None:
    """Blocks of ``MMAP_THRESHOLD`` or more (frames from 1080p up) come straight from the system and go back
    to it when freed. glibc's default raises that threshold as large blocks are freed, and then keeps 1080p
    frames, 30 a second on three threads, in per-thread heaps it never hands back. glibc only; a no-op
    elsewhere. Process-wide, like the allocator itself."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def _give_back_freed_memory(*, collect: bool = True) -> None:
    """Hand what the scan and learning freed back to the system before the render's buffers come: the C
    library keeps freed heap for reuse otherwise, and a worker's peak is what counts. glibc only; a no-op
    elsewhere."""
    if collect:
        gc.collect()  # arrays held only by reference cycles go first
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _walk(opening: _Opening, plans: list[SegmentPlan]) -> dict[int, tuple[SegmentPlan, Reference]]:
    """The opening's walk, then its frames handed back to the system: the render has begun meanwhile."""
    try:
        return opening.hindsight(plans)
    finally:
        _give_back_freed_memory(collect=False)  # the crops are plain arrays, freed as the walk ends


def _most_present(plans: list[SegmentPlan], presence_of: Callable[[SegmentPlan], float]) -> SegmentPlan | None:
    best: tuple[float, SegmentPlan] | None = None
    for plan in plans:
        score = presence_of(plan)
        if score >= PRESENT_SCORE and (best is None or score > best[0]):
            best = (score, plan)
    return best[1] if best is not None else None


def _elsewhere(plans: list[SegmentPlan], covering: list[SegmentPlan]) -> list[SegmentPlan]:
    """One plan per place the mark was seen, but those already tried: the mark comes back to its places, so a
    hold the scan missed (too short, at the end of a video) is still found there."""
    places = {(round(p.placement.x), round(p.placement.y)) for p in covering}
    distinct: list[SegmentPlan] = []
    for plan in plans:
        place = (round(plan.placement.x), round(plan.placement.y))
        if place not in places:
            places.add(place)
            distinct.append(plan)
    return distinct


def _given(found: list[Reference]) -> Callable[[SegmentPlan], list[Reference]]:
    return lambda _plan: found


def _corner(plan: SegmentPlan, support: Box) -> tuple[float, float]:
    """The visible mark's top-left corner in the frame, as the report gives positions."""
    return round(plan.placement.x + support.x, 2), round(plan.placement.y + support.y, 2)


def _segments(positions: list[tuple[float, float] | None], plans: list[SegmentPlan], matte: Matte
              ) -> list[MarkSegment]:
    """Runs of frames where the mark was found at one placement, as the sidecar reports them."""
    support = matte.support()
    scores = {_corner(p, support): p.placement.score for p in plans}
    segments: list[MarkSegment] = []
    start = None
    for index in range(len(positions) + 1):
        here = positions[index] if index < len(positions) else None
        if start is not None and (here is None or here != positions[start]):
            x, y = positions[start]  # type: ignore[misc]
            segments.append(MarkSegment(start, index - 1, x, y, support.w, support.h,
                                        round(scores.get((x, y), 0.0), 3)))
            start = None
        if here is not None and start is None:
            start = index
    return segments


def _spread(frames: range | list[int], count: int) -> list[int]:
    """Up to ``count`` frames evenly spread over ``frames``."""
    items = list(frames)
    if len(items) <= count:
        return items
    picks = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in sorted(set(picks.tolist()))]


class _Reservoir:
    """Whole frames the scan keeps within fixed budgets, so that learning finds its crops without decoding the
    video again: every ``stride``-th frame (for the segments' crops), and every frame of the first ``head``
    (the opening's walk goes frame by frame). Either is off (0) where its budget would not cover what it is
    for."""

    def __init__(self, stride: int, capacity: int, head: int = 0) -> None:
        self.stride, self.capacity, self.head = stride, capacity, head
        self.frames: dict[int, codec.Planes] = {}  # at the stride
        self.opening: list[codec.Planes] = []  # the first frames, all of them
        self.seen = 0  # frames offered
        self._next = 0  # the next stride multiple to keep a frame at

    @classmethod
    def of(cls, info: codec.VideoInfo) -> _Reservoir:
        frame_bytes = info.width * info.height * 3 // 2
        capacity = RESERVOIR_BYTES // frame_bytes
        stride = -(-info.frames // capacity) if info.frames and capacity else 0
        head = OPENING_BYTES // frame_bytes
        return cls(stride if 0 < stride <= RESERVOIR_STRIDE else 0, capacity,
                   head if head >= OPENING_SECONDS * info.fps else 0)

    def offer(self, index: int, planes: codec.Planes) -> None:
        """Frames come in order, every one in the head, some skipped after it: at the stride, the first frame
        at or after each multiple is kept. The decoder never reuses a frame it handed out: no copy needed."""
        if index < self.head and index == len(self.opening):
            self.opening.append(planes)
        if self.stride and len(self.frames) < self.capacity and index // self.stride >= self._next:
            self.frames[index] = planes
            self._next = index // self.stride + 1
        self.seen = max(self.seen, index + 1)

    def among(self, frames: range | list[int], count: int) -> list[int] | None:
        """Up to ``count`` kept frames spread over ``frames``, or None if too few of them were kept (three in
        four of what a decoding pass would take)."""
        if not self.frames:
            return None
        kept = [f for f in frames if f in self.frames]
        if len(kept) < min(count, len(frames)) * 3 // 4:
            return None
        return _spread(kept, count)


class _Opening:
    """The frames of the video's first segment, around the mark's region, when the mark is there from the
    first frame: nothing before shows what it hides. Walked backwards from the first frames after it jumps
    away, the content it hid is carried back along the camera's motion to every frame of the opening."""

    def __init__(self, region: Box, last: int) -> None:
        self.region, self.last = region, last
        self.crops: list[codec.Planes] = []

    @classmethod
    def of(cls, coarse: list[CoarseSegment], info: codec.VideoInfo) -> _Opening | None:
        if not coarse or coarse[0].start > EDGE:
            return None
        first = coarse[0]
        pad = LEARN_PAD + first.box.h // 4 + borrow.MARGIN + 8
        return cls(first.box.padded(pad, info.width, info.height).even(), first.end + 2 * EDGE)

    def keep(self, planes: codec.Planes) -> None:
        self.crops.append(codec.Planes(*planes.cut(self.region, copy=True), None, None))

    def hindsight(self, plans: list[SegmentPlan]) -> dict[int, tuple[SegmentPlan, Reference]]:
        """Per frame of the opening, the mark's region cleaned with the content the frames after it showed (Y,
        U, V): the render takes it as it is."""
        opening = next((p for p in plans if p.start - EDGE <= 0), None)
        if opening is None or opening.outer is None or not self.region.contains(opening.outer):
            return {}
        local = replace(opening, region=opening.region.moved(-self.region.x, -self.region.y),
                        outer=opening.outer.moved(-self.region.x, -self.region.y))
        seen: dict[int, tuple[SegmentPlan, Reference]] = {}
        follower = Follower()
        scores = [presence(crop.y, local) for crop in self.crops]
        shown = [i for i, score in enumerate(scores) if score >= PRESENT_SCORE]
        leaves = shown[-1] if shown else -1  # the opening's last frame with the mark: it fades just before

        def fading(index: int, _plan: SegmentPlan) -> bool:
            return leaves - FADE_LOOKAHEAD < index <= leaves

        def known(index: int, _plan: SegmentPlan) -> float:
            return scores[index]

        later: tuple[codec.Planes, bool] | None = None  # the frame after (restored), and whether it had the mark
        for index in reversed(range(min(len(self.crops), leaves + 3))):  # from just after the mark left
            now = self.crops[index]
            found = follower.references(later[0], now, local, fresh=not later[1]) if later is not None else []
            marked = _clean(index, now, [local], _given(found), None, fading, known) is not None
            if marked and found and index <= opening.end + EDGE:
                seen[index] = (opening, now.cut(local.region, copy=True))
            later = (now, marked)
        self.crops.clear()
        return seen


class _Ticker:
    """Calls the progress callback every few frames and at the end of each pass."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress = progress
        self.total = total

    def __call__(self, stage: str, done: int) -> None:
        if self.progress is not None and (done % PROGRESS_EVERY == 0 or done == self.total):
            self.progress(stage, done, max(self.total, done))
