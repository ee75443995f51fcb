"""Deterministic, structurally valid MP4 files of any size, generated on the fly.

Small results are real ISO-BMFF files (``ftyp`` + ``moov/mvhd`` + ``mdat``); large ones for benchmarks keep
the same header and stream a repeated 1 MiB payload block, so serving 4 GiB costs no memory.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator

BLOCK = 1 << 20


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _mvhd() -> bytes:
    matrix = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
    body = struct.pack(">IIIII", 0, 0, 0, 1000, 1000)  # version/flags, ctime, mtime, timescale, duration
    body += struct.pack(">IH", 0x00010000, 0x0100) + b"\0" * 10 + matrix + b"\0" * 24 + struct.pack(">I", 2)
    return _box(b"mvhd", body)


def mp4_header(total_size: int) -> bytes:
    """``ftyp`` + ``moov`` + the ``mdat`` box header sized so the whole file is ``total_size`` bytes."""
    head = _box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isomiso2avc1mp41") + _box(b"moov", _mvhd())
    mdat_size = total_size - len(head)
    if mdat_size < 8:
        raise ValueError(f"an MP4 needs at least {len(head) + 8} bytes, asked for {total_size}")
    if mdat_size > 0xFFFFFFFF:
        return head + struct.pack(">I", 1) + b"mdat" + struct.pack(">Q", mdat_size)
    return head + struct.pack(">I", mdat_size) + b"mdat"


MIN_SIZE = len(mp4_header(1 << 16)) + 1


def _payload_block(seed: str) -> bytes:
    digest = hashlib.sha256(seed.encode()).digest()
    return (digest * (BLOCK // len(digest) + 1))[:BLOCK]


def iter_mp4(seed: str, total_size: int) -> Iterator[bytes]:
    """Yield an MP4 of exactly ``total_size`` bytes whose content depends on ``seed``."""
    header = mp4_header(total_size)
    yield header
    remaining = total_size - len(header)
    block = _payload_block(seed)
    while remaining > 0:
        piece = block if remaining >= BLOCK else block[:remaining]
        remaining -= len(piece)
        yield piece


def make_mp4(seed: str, total_size: int = 32 * 1024) -> bytes:
    return b"".join(iter_mp4(seed, total_size))

