"""Which files a task cleans, what each lands as, and a local copy of each for the engine.

``source`` may name files, folders or prefixes in any store ``ObjectStoragePath`` reads. A folder means every
file matching ``pattern`` under it, at any depth, except hidden files and the provider's own ``_state``
records. Every problem (a missing path, an empty folder, two files that would land under one name) is a
``SourceProblem`` naming the path, so it is reported beside the other files instead of stopping them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from airflow.sdk import ObjectStoragePath

from airflow_sora.services.urls import POST_ID_PATTERN
from airflow_sora.state import STATE_DIR
from airflow_sora.storage import fs_path, is_local, protocol_of

CHUNK_SIZE = 1 << 20
_POST_ID_IN_NAME = re.compile(POST_ID_PATTERN)


@dataclass(frozen=True)
class InputVideo:
    """One watermarked file to clean: where it is, its size when the listing said, and its landing name."""

    path: ObjectStoragePath
    name: str  # the clean file lands as ``<name>.mp4`` beside ``<name>.json``
    post_id: str | None
    size: int | None = None

    @property
    def uri(self) -> str:
        return display_uri(self.path)


@dataclass(frozen=True)
class SourceProblem:
    source: str
    reason: str


@dataclass(frozen=True)
class ResolvedSources:
    videos: list[InputVideo]
    problems: list[SourceProblem]


@dataclass(frozen=True)
class LocalSource:
    """The source as a local file the engine can open, with the checksum of exactly the bytes it reads."""

    path: Path
    sha256: str
    size: int


def display_uri(path: ObjectStoragePath) -> str:
    """The path as a URI without the connection id: what sidecars, manifests and logs name."""
    protocol = protocol_of(path)
    if protocol in ("", "file", "local"):
        return f"file://{fs_path(path)}"
    return f"{protocol}://{fs_path(path)}"


def output_name(file_name: str) -> tuple[str, str | None]:
    """``(name, post id)``: the Sora post id when the file's name carries one (``s_<32 hex>``), so a file
    lands under the same name as the services land it; otherwise the file's stem and no post id."""
    match = _POST_ID_IN_NAME.search(file_name)
    if match:
        return match.group(0), match.group(0)
    return PurePosixPath(file_name).stem, None


def resolve_sources(sources: Iterable[str], *, pattern: str = "*.mp4",
                    exclude: ObjectStoragePath | None = None) -> ResolvedSources:
    """Every file to clean, in a stable order, and every problem with the sources, each naming its path.

    ``exclude``: a folder never cleaned from (the output: a source folder above it must not re-clean results).
    """
    videos: list[InputVideo] = []
    problems: list[SourceProblem] = []
    for source in sources:
        found, problem = _expand(str(source), pattern=pattern, exclude=exclude)
        videos.extend(found)
        if problem is not None:
            problems.append(problem)
    unique: dict[str, InputVideo] = {}
    by_name: dict[str, InputVideo] = {}
    for video in videos:
        if video.uri in unique:
            continue  # the same file given twice (a file and its folder): cleaned once
        unique[video.uri] = video
        first = by_name.setdefault(video.name, video)
        if first is not video:
            problems.append(SourceProblem(video.uri, f"{video.uri} would land as {video.name}.mp4, as {first.uri} "
                                                     "does; clean them into different output folders"))
    kept = [v for v in unique.values() if by_name[v.name] is v]
    return ResolvedSources(kept, problems)


def _expand(source: str, *, pattern: str, exclude: ObjectStoragePath | None
            ) -> tuple[list[InputVideo], SourceProblem | None]:
    path = ObjectStoragePath(source)
    try:
        info = path.fs.info(fs_path(path))
    except FileNotFoundError:
        return [], SourceProblem(source, f"{display_uri(path)}: no such file or folder")
    if info.get("type") != "directory" and not source.endswith("/"):
        name = path.name
        landed_as, post_id = output_name(name)
        if not landed_as:
            return [], SourceProblem(source, f"{display_uri(path)}: a file name with no stem cannot name its output")
        return [InputVideo(path, landed_as, post_id, _size(info))], None
    found = _listed(path, pattern=pattern, exclude=exclude)
    if not found:
        return [], SourceProblem(source, f"{display_uri(path)}: no file matching {pattern!r} under this folder")
    return found, None


def _listed(folder: ObjectStoragePath, *, pattern: str, exclude: ObjectStoragePath | None) -> list[InputVideo]:
    """One recursive listing (one request per thousand objects on S3), filtered by name."""
    base = fs_path(folder).rstrip("/")
    skip = fs_path(exclude).rstrip("/") + "/" if exclude is not None and _same_store(folder, exclude) else None
    listing = folder.fs.find(base, detail=True)
    videos = []
    for full, info in sorted(listing.items()):
        if info.get("type") == "directory" or (skip and (full + "/").startswith(skip)):
            continue
        relative = full[len(base):].lstrip("/")
        parts = relative.split("/")
        if any(part.startswith(".") or part == STATE_DIR for part in parts):
            continue  # hidden files (a publication in progress) and the provider's own records
        if not fnmatch.fnmatch(parts[-1].lower(), pattern.lower()):
            continue
        landed_as, post_id = output_name(parts[-1])
        if landed_as:
            videos.append(InputVideo(folder / relative, landed_as, post_id, _size(info)))
    return videos


def _same_store(a: ObjectStoragePath, b: ObjectStoragePath) -> bool:
    local = ("", "file", "local")
    return protocol_of(a) == protocol_of(b) or (protocol_of(a) in local and protocol_of(b) in local)


def _size(info: dict[str, object]) -> int | None:
    size = info.get("size")
    return int(size) if isinstance(size, (int, float)) else None


@contextmanager
def local_source(video: InputVideo, work_dir: Path) -> Iterator[LocalSource]:
    """The file itself when it is local (hashed in place), else a copy streamed into ``work_dir`` and hashed
    on the way; the copy is the caller's to remove with ``work_dir``."""
    digest, size = hashlib.sha256(), 0
    if is_local(video.path):
        local = Path(fs_path(video.path))
        with open(local, "rb") as handle:
            while chunk := handle.read(CHUNK_SIZE):
                digest.update(chunk)
                size += len(chunk)
        yield LocalSource(local, digest.hexdigest(), size)
        return
    copy = work_dir / f"source{video.path.suffix or '.mp4'}"
    with video.path.open("rb") as remote, open(copy, "wb") as handle:
        while chunk := remote.read(CHUNK_SIZE):
            digest.update(chunk)
            handle.write(chunk)
            size += len(chunk)
    try:
        yield LocalSource(copy, digest.hexdigest(), size)
    finally:
        copy.unlink(missing_ok=True)
