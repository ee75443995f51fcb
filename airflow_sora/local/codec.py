"""Streams in, frames out: PyAV decodes and encodes with the FFmpeg bundled in its wheel (no system ffmpeg).

Frames travel as YUV 4:2:0 planes (luma, then the two half-size chroma planes): the mark is removed in the
colour space the file is stored in, so nothing is converted to RGB and back. Audio is remuxed packet by
packet, never re-encoded. Every frame keeps its timestamp, so the output has the input's frame rate and count.
"""

from __future__ import annotations

import bisect
import os
import shutil
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

from airflow_sora.local.ahead import Behind, ahead, depth_for, yielding
from airflow_sora.local.errors import NotAVideoError
from airflow_sora.local.find import Box
from airflow_sora.local.settings import EngineSettings

DISCLOSURE = "AI-generated (OpenAI Sora)"
# The UUID of the box that carries C2PA content credentials in an ISO-BMFF file (C2PA spec, 11.3.4).
C2PA_UUID = bytes.fromhex("d8fec3d61b0e483c92975828877ec481")
FULL_RANGE = 2  # FFmpeg's AVCOL_RANGE_JPEG
# The scan skips frames, so chains of reference frames leave one frame thread per core idle: twice as many
# keep the cores busy (FFmpeg's own choice is one more than the cores).
SCAN_THREADS = min(8, 2 * (os.cpu_count() or 1))


@dataclass(frozen=True)
class VideoInfo:
    """What the engine needs to know of an input before it reads a frame."""

    path: str
    width: int
    height: int
    fps: float
    frames: int  # from the container header; an estimate when the header has none
    has_audio: bool
    full_range: bool = False  # luma runs 0-255 (JPEG range) rather than 16-235

    @property
    def white(self) -> int:
        """Where white sits in the luma plane: the mark is white, so this is its level."""
        return 255 if self.full_range else 235


@dataclass
class Planes:
    """One frame as YUV 4:2:0 planes, with the timestamp it had in the input. ``frame`` is the PyAV frame
    whose memory the planes are views of, when they are: then the encoder takes that frame as it is."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    pts: int | None
    time_base: Fraction | None
    frame: av.VideoFrame | None = None

    def cut(self, box: Box, *, copy: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The box's Y, U and V (chroma at half size; the box even-aligned, as regions are): views, or copies
        that keep nothing of the frame alive."""
        ys, xs = box.slices()
        cys, cxs = box.half().slices()
        planes = (self.y[ys, xs], self.u[cys, cxs], self.v[cys, cxs])
        return (planes[0].copy(), planes[1].copy(), planes[2].copy()) if copy else planes

    def paste(self, box: Box, content: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        """Write ``content`` (what ``cut`` gives) back over the box."""
        ys, xs = box.slices()
        cys, cxs = box.half().slices()
        self.y[ys, xs], self.u[cys, cxs], self.v[cys, cxs] = content


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Open ``path`` and describe its video stream, or raise ``NotAVideoError`` naming the file."""
    name = os.fspath(path)
    try:
        with av.open(name) as container:
            if not container.streams.video:
                raise NotAVideoError(f"{name}: has no video stream; give the engine an .mp4 with a video track")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            if not ctx.width or not ctx.height:
                raise NotAVideoError(f"{name}: the video stream has no frame size; the file may be damaged")
            rate = stream.average_rate or stream.guessed_rate or Fraction(30)
            frames = stream.frames
            if not frames and stream.duration and stream.time_base:
                frames = round(float(stream.duration * stream.time_base) * float(rate))
            full_range = ctx.color_range == FULL_RANGE or (ctx.pix_fmt or "").startswith("yuvj")
            return VideoInfo(name, ctx.width, ctx.height, float(rate), int(frames or 0),
                             bool(container.streams.audio), full_range)
    except NotAVideoError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise NotAVideoError(f"{name}: is not a video the engine can read ({_reason(exc)}); "
                             "check that it is a complete .mp4") from exc


def iter_planes(path: str, *, threads: int = 0, stop_after: int | None = None) -> Iterator[Planes]:
    """Decode every frame of the first video stream (read-only planes are fine for analysis passes), on a
    thread of its own a few frames ahead of the caller."""
    try:
        yield from ahead(_decoded(path, threads, stop_after))
    except av.FFmpegError as exc:
        raise NotAVideoError(f"{path}: decoding failed ({_reason(exc)}); the file may be truncated") from exc


class Scanned:
    """The frames a scan needs, each with its index in display order: every frame of the first ``all_until``,
    then only the frames others refer to. The decoder skips the frames nothing refers to (the B-frames between
    references: about half of an x264 file) at a fraction of their cost, and the scan averages frames over
    windows anyway. A file without such frames is decoded whole. ``frames`` counts every frame of the stream
    (one packet is one frame), known once the iteration has ended."""

    def __init__(self, path: str, *, threads: int = 0, all_until: int = 0) -> None:
        self.path, self.threads, self.all_until = path, threads, all_until
        self.frames = 0

    def __iter__(self) -> Iterator[tuple[int, Planes]]:
        try:
            yield from ahead(self._decoded())
        except av.FFmpegError as exc:
            raise NotAVideoError(f"{self.path}: decoding failed ({_reason(exc)}); the file may be truncated") from exc

    def _decoded(self) -> Iterator[tuple[int, Planes]]:
        with av.open(self.path) as container:
            stream = container.streams.video[0]
            _thread(stream, self.threads or SCAN_THREADS)
            stamps: list[int] = []  # every packet's timestamp so far, sorted: a frame's index is its rank
            count, sparse = 0, False
            for packet in container.demux(stream):
                if packet.size:
                    self.frames += 1
                    if packet.pts is not None:
                        bisect.insort(stamps, packet.pts)
                for frame in packet.decode():
                    # the decoder hands a frame out only once every earlier one has come in (it reorders)
                    timed = frame.pts is not None and len(stamps) == self.frames
                    index = bisect.bisect_left(stamps, frame.pts) if timed else count
                    count += 1
                    if timed and not sparse and index + 1 >= self.all_until:  # untimed: every frame, counted
                        stream.codec_context.skip_frame, sparse = "NONREF", True
                    yield index, to_planes(frame, writable=False)


def _decoded(path: str, threads: int, stop_after: int | None) -> Iterator[Planes]:
    with av.open(path) as container:
        stream = container.streams.video[0]
        _thread(stream, threads)
        for index, frame in enumerate(container.decode(stream)):
            if stop_after is not None and index >= stop_after:
                return
            yield to_planes(frame, writable=False)


def to_planes(frame: av.VideoFrame, *, writable: bool = True) -> Planes:
    """The frame's planes. Read-only planes are views of the decoder's own frame (no copy: the decoder never
    writes to a frame it handed out). Writable ones are one copy, into a new frame the encoder can take as it
    is: the decoder's frame may still be a reference for the frames after it."""
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    if writable:
        owner = av.VideoFrame(frame.width, frame.height, "yuv420p")
        for source, target in zip(frame.planes, owner.planes, strict=True):
            np.copyto(_view(target), _view(source))
        owner.pts, owner.time_base = frame.pts, frame.time_base
        frame = owner
    y, u, v = (_view(plane, writable) for plane in frame.planes)
    return Planes(y, u, v, frame.pts, frame.time_base, frame)


def _view(plane: Any, writable: bool = True) -> np.ndarray:
    """A plane's pixels as an array over the frame's own memory (rows are ``line_size`` apart)."""
    rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:plane.height, :plane.width]
    rows.flags.writeable = writable
    return rows


def from_planes(planes: Planes) -> av.VideoFrame:
    """The frame to encode: the one the planes are views of, or a new one built from them."""
    if planes.frame is not None:
        return planes.frame
    height, width = planes.y.shape
    packed = np.concatenate([planes.y.reshape(-1), planes.u.reshape(-1), planes.v.reshape(-1)])
    frame = av.VideoFrame.from_ndarray(packed.reshape(height * 3 // 2, width), format="yuv420p")
    frame.pts = planes.pts
    if planes.time_base is not None:
        frame.time_base = planes.time_base
    return frame


def transcode(src: str, dst: str, settings: EngineSettings, edit: Callable[[int, Planes], None],
              *, metadata: dict[str, str] | None = None, lookahead: int = 0,
              peek: Callable[[int, Planes], None] | None = None) -> int:
    """Decode ``src``, let ``edit`` change each frame's planes in place, encode to
    ``dst`` with the audio remuxed; returns the number of frames written. Timestamps and the audio packets pass
    through unchanged. Decoding runs ahead of ``edit`` and encoding behind it, each on a thread of its own;
    the encoder, the slowest, goes first when the cores are busy (``ahead.yielding``).
    ``peek`` sees each frame as decoded, ``lookahead`` frames before ``edit`` gets it: what comes next can
    decide how a frame is edited."""
    try:
        with av.open(src) as inp, av.open(dst, "w", format="mp4") as out:
            vin = inp.streams.video[0]
            _thread(vin, settings.threads)
            ain = inp.streams.audio[0] if inp.streams.audio else None
            vout = _video_stream(out, vin, settings)
            aout = out.add_stream_from_template(ain) if ain is not None else None
            out.metadata.update(container_metadata(inp.metadata, metadata))

            def write(item: av.VideoFrame | av.Packet) -> None:
                out.mux(item if isinstance(item, av.Packet) else vout.encode(item))

            counts = {"decoded": 0, "written": 0}
            pending: deque[Planes] = deque()

            def finish(planes: Planes, writer: Behind[Any]) -> None:
                edit(counts["written"], planes)
                writer.put(from_planes(planes))  # never the decoder's own frame: see ``to_planes``
                counts["written"] += 1

            depth = depth_for(vin.codec_context.width * vin.codec_context.height * 3 // 2)

            def pump(writer: Behind[Any], stopped: threading.Event) -> None:
                for packet, planes in ahead(_demuxed(inp, vin, ain), depth):
                    if stopped.is_set():
                        raise InterruptedError(f"{src}: stopped while transcoding")
                    if planes is None:  # an audio packet: remuxed as it is
                        packet.stream = aout
                        writer.put(packet)
                        continue
                    if peek is not None:
                        peek(counts["decoded"], planes)
                    counts["decoded"] += 1
                    pending.append(planes)
                    if len(pending) > lookahead:
                        finish(pending.popleft(), writer)
                while pending:
                    finish(pending.popleft(), writer)

            with Behind(write, depth) as writer:  # the encoder's thread keeps the caller's priority
                yielding(lambda stopped: pump(writer, stopped))
            out.mux(vout.encode(None))
            return counts["written"]
    except av.FFmpegError as exc:
        raise NotAVideoError(f"{src}: decoding or encoding failed ({_reason(exc)}); "
                             "the file may be truncated") from exc


def _demuxed(inp: Any, vin: Any, ain: Any) -> Iterator[tuple[Any, Planes | None]]:
    """Decoded video frames' planes (copies: the decoder's frames are released at once), and audio packets
    (with None), in the file's order."""
    for packet in inp.demux(*(s for s in (vin, ain) if s is not None)):
        if packet.stream is vin:
            for frame in packet.decode():
                yield None, to_planes(frame)  # writable: a copy
        elif packet.dts is not None and ain is not None:
            yield packet, None


def _video_stream(out: Any, vin: Any, settings: EngineSettings) -> Any:
    rate = vin.average_rate or vin.guessed_rate or Fraction(30)
    stream = out.add_stream("libx264", rate=rate)
    stream.width, stream.height = vin.codec_context.width, vin.codec_context.height
    stream.pix_fmt = "yuv420p"
    stream.time_base = vin.time_base  # keep the input's timestamps exactly
    stream.options = {"crf": str(settings.crf), "preset": settings.preset}
    if settings.threads:
        stream.codec_context.thread_count = settings.threads
    return stream


def container_metadata(source: dict[str, str], extra: dict[str, str] | None) -> dict[str, str]:
    """The source's tags, the disclosure that the video is AI-generated, and what the caller adds."""
    tags = {k: v for k, v in source.items() if k.lower() in ("title", "artist", "date", "creation_time")}
    tags["comment"] = f"{DISCLOSURE}. Visible watermark removed by airflow-provider-sora."
    tags["description"] = DISCLOSURE
    tags.update(extra or {})
    return tags


def read_c2pa(path: str) -> bytes | None:
    """The C2PA manifest store a file carries in its top-level ``uuid`` box, or None.

    Re-encoding cannot keep the box valid (it binds the original bytes), so the engine keeps it beside the
    output: the credentials still say where the video came from.
    """
    with open(path, "rb") as handle:
        while True:
            header = handle.read(8)
            if len(header) < 8:
                return None
            size, kind = struct.unpack(">I4s", header)
            header_size = 8
            if size == 1:
                size = struct.unpack(">Q", handle.read(8))[0]
                header_size = 16
            elif size == 0:  # to the end of the file
                size = os.fstat(handle.fileno()).st_size - handle.tell() + 8
            if size < header_size:
                return None
            body_size = size - header_size
            if kind == b"uuid" and body_size >= 16:
                body = handle.read(body_size)
                if body[:16] == C2PA_UUID:
                    return _c2pa_manifest(body[16:])
            else:
                handle.seek(body_size, os.SEEK_CUR)


def _c2pa_manifest(payload: bytes) -> bytes | None:
    """Skip version/flags, the purpose string and (for a manifest box) the Merkle offset."""
    rest = payload[4:]
    purpose, sep, rest = rest.partition(b"\0")
    if not sep or purpose != b"manifest":
        return None
    return rest[8:] or None


def _thread(stream: Any, threads: int) -> None:
    stream.thread_type = "AUTO"
    if threads:
        stream.codec_context.thread_count = threads


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def copy_unchanged(src: str, dst: str) -> None:
    """A file with no mark is never re-encoded: its bytes go through as they are."""
    shutil.copyfile(src, dst)
