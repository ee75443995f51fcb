"""Land a file the engine wrote: the same verified, atomic publication and lease as a service result.

The bytes go through ``storage.publish`` (a temporary file and ``os.replace`` locally, a multipart upload
completed only once verified on S3) and are hashed on the way by the landing's ``HashingWriter``; a file that
is empty or not an MP4 never becomes visible. The video, its C2PA manifest and then its sidecar are written
while holding the video's landing lease, the one the service operator takes, so two runs landing the same name
into one folder never leave one's video beside the other's sidecar.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from airflow.sdk import ObjectStoragePath

from airflow_sora.exceptions import LandingError
from airflow_sora.landing import CHUNK_SIZE, HashingWriter, LandedObject, ResultLander, looks_like_mp4
from airflow_sora.lease import LandingLease
from airflow_sora.sidecar import Sidecar
from airflow_sora.state import STATE_DIR
from airflow_sora.storage import publish, write_atomic


@dataclass(frozen=True)
class LandedFile:
    video: LandedObject
    sidecar_uri: str
    c2pa_uri: str | None = None


class AlreadyLanded(Exception):
    """The name was landed (by another run) while this one cleaned it; the caller reports it by ``if_exists``."""

    def __init__(self, sidecar: Sidecar) -> None:
        super().__init__(sidecar.file)
        self.sidecar = sidecar


class FileLander:
    """Lands cleaned files as ``<name>.mp4``, ``<name>.c2pa`` and ``<name>.json`` under ``output``."""

    def __init__(self, output: ObjectStoragePath, *, holder: str, chunk_size: int = CHUNK_SIZE) -> None:
        self.output = output
        self.holder = holder
        self.chunk_size = chunk_size
        self._results = ResultLander(output, holder=holder)  # for its one definition of "already landed"

    def close(self) -> None:
        self._results.close()

    def video_path(self, name: str) -> ObjectStoragePath:
        return self.output / f"{name}.mp4"

    def sidecar_path(self, name: str) -> ObjectStoragePath:
        return self.output / f"{name}.json"

    def c2pa_path(self, name: str) -> ObjectStoragePath:
        return self.output / f"{name}.c2pa"

    def lease_path(self, name: str) -> ObjectStoragePath:
        return self.output / STATE_DIR / "_leases" / f"{name}.json"

    def landed(self, names: Iterable[str]) -> dict[str, Sidecar]:
        """The sidecar of every name already landed here (video and a sidecar naming it, sizes agreeing), at a
        cost that follows the names asked about (``ResultLander.landed_copies``)."""
        return self._results.landed_copies(names)

    def land(self, name: str, cleaned: Path, *, c2pa: Path | None, sidecar: Callable[[LandedObject, str | None],
             Sidecar], replace: bool) -> LandedFile:
        """Publish video, C2PA manifest and sidecar under the lease. Unless ``replace``, a copy another run landed
        meanwhile is left alone (``AlreadyLanded``)."""
        with LandingLease(self.lease_path(name), self.holder).held():
            if not replace and (found := self.landed([name]).get(name)) is not None:
                raise AlreadyLanded(found)
            video = self.publish_file(cleaned, self.video_path(name))
            c2pa_uri = None
            if c2pa is not None and c2pa.exists():
                c2pa_path = self.c2pa_path(name)
                write_atomic(c2pa_path, c2pa.read_bytes())
                c2pa_uri = str(c2pa_path)
            document = sidecar(video, c2pa_uri.rsplit("/", 1)[-1] if c2pa_uri else None)
            sidecar_path = self.sidecar_path(name)
            write_atomic(sidecar_path, document.to_json())
        return LandedFile(video=video, sidecar_uri=str(sidecar_path), c2pa_uri=c2pa_uri)

    def publish_file(self, local: Path, target: ObjectStoragePath) -> LandedObject:
        """Stream a local file to ``target``, hashing it; nothing is visible there unless it is a whole MP4."""
        expected = local.stat().st_size
        size, head = 0, b""
        with open(local, "rb") as handle, publish(target) as publication, \
                HashingWriter(publication.write) as writer:
            while chunk := handle.read(self.chunk_size):
                if len(head) < 8:
                    head += chunk[: 8 - len(head)]
                writer.write(chunk)
                size += len(chunk)
            digest = writer.finish()
            if size != expected:
                raise LandingError(f"{target.name}: read {size} of {expected} bytes of the cleaned file")
            if size == 0 or not looks_like_mp4(head):
                raise LandingError(f"{target.name}: the cleaned file is not an MP4 ({size} bytes); nothing landed")
        return LandedObject(uri=str(target), size=size, sha256=digest)
