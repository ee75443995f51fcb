"""Stream a result URL into object storage: verify, then publish, with a provenance sidecar beside it.

Memory stays constant whatever the file size (fixed-size chunks). Bytes are counted against
Content-Length, hashed, and checked to be an MP4 before the object becomes visible at its final key; a
failed or truncated download leaves nothing there. Result URLs are fetched only over https and only from
globally routable addresses (``netguard``: each connection goes to the very address that was checked), unless
the connection explicitly allows private hosts (the sandbox).
"""

from __future__ import annotations

import hashlib
import os
import queue
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx
from airflow.sdk import ObjectStoragePath

from airflow_sora import __version__
from airflow_sora.exceptions import LandingError
from airflow_sora.lease import LandingLease
from airflow_sora.netguard import PinnedTransport, Resolver, check_url_scheme, resolve_checked, system_resolve
from airflow_sora.services.errors import ResultDownloadError, ResultLinkExpiredError
from airflow_sora.services.models import RemovalResult
from airflow_sora.services.transport import user_agent
from airflow_sora.services.urls import is_post_id
from airflow_sora.sidecar import SIDECAR_SCHEMA as SIDECAR_SCHEMA
from airflow_sora.sidecar import Sidecar, SourceFile
from airflow_sora.state import STATE_DIR, utcnow
from airflow_sora.storage import (
    delete_if_present,
    in_parallel,
    list_sizes,
    list_sizes_within,
    listing_budget,
    publish,
    read_bytes_or_none,
    size_or_none,
    write_atomic,
)

CHUNK_SIZE = 1 << 20
MAX_REDIRECTS = 5


def looks_like_mp4(head: bytes) -> bool:
    """The ISO-BMFF signature: the first box's type, at offset 4, is ``ftyp``."""
    return len(head) >= 8 and head[4:8] == b"ftyp"


def safe_object_name(post_id: str) -> str:
    """Object names come from service data: accept only the ``s_<32 hex>`` shape, so no key can escape."""
    if not is_post_id(post_id):
        raise ResultDownloadError(f"refusing to name an object after post id {post_id!r}: expected s_<32 hex>")
    return post_id


def check_result_url(url: str, *, allow_private: bool, resolve: Resolver | None = None) -> None:
    """Refuse non-https URLs and hosts with any address that is not globally routable.

    A standalone check: downloads check each connection's address in their transport instead, so the
    address checked is the one connected to.
    """
    host = check_url_scheme(url, allow_private=allow_private)
    if not allow_private:
        resolve_checked(host, allow_private=False, resolve=resolve or system_resolve)


@dataclass(frozen=True)
class LandedObject:
    uri: str
    size: int
    sha256: str


@dataclass(frozen=True)
class LandedVideo:
    video: LandedObject
    sidecar_uri: str
    source: LandedObject | None = None


class SidecarNotPublishedError(LandingError):
    """The video was published but its sidecar could not be: the video was withdrawn (retryable: a retry lands
    the pair from the known result, free)."""


class ResultLander:
    """Downloads results into ``output`` with verification; one instance serves many videos (thread-safe).

    A ``client`` passed in must use ``netguard.PinnedTransport``: the address checks happen there.
    """

    def __init__(self, output: ObjectStoragePath, *, allow_private_hosts: bool = False,
                 client: httpx.Client | None = None, chunk_size: int = CHUNK_SIZE,
                 read_timeout: float = 120.0, holder: str | None = None) -> None:
        self.output = output
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}"
        self.allow_private_hosts = allow_private_hosts
        self.chunk_size = chunk_size
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(read_timeout, connect=15.0), follow_redirects=False,
            transport=PinnedTransport(allow_private=allow_private_hosts),
            headers={"User-Agent": user_agent()},
        )

    def close(self) -> None:
        self._client.close()

    def video_path(self, post_id: str, suffix: str = "") -> ObjectStoragePath:
        return self.output / f"{safe_object_name(post_id)}{suffix}.mp4"

    def sidecar_path(self, post_id: str) -> ObjectStoragePath:
        return self.output / f"{safe_object_name(post_id)}.json"

    def listing(self) -> dict[str, int]:
        """Name -> size of everything in the output folder: one listing answers "is it here?" for a batch."""
        return list_sizes(self.output)

    def landed_copies(self, post_ids: Iterable[str], *, concurrency: int = 8) -> dict[str, Sidecar]:
        """The sidecar of every video among ``post_ids`` already landed here, by post id. A sidecar counts only
        if it names the same post and the size of the video beside it.

        The cost follows the videos asked about, not the folder's history: a listing of at most
        ``listing_budget`` pages (none for fewer than a thousand videos), then, ``concurrency`` at a time, the
        sidecars the listing showed beside their video, and for the videos it did not reach a GET of the
        sidecar (a new video costs that one request) and, where there is one, a HEAD of the video.
        """
        wanted = list(dict.fromkeys(post_ids))
        listing = list_sizes_within(self.output, pages=listing_budget(len(wanted)))

        def look_up(post_id: str) -> Sidecar | None:
            video, sidecar_name = f"{post_id}.mp4", f"{post_id}.json"
            listed = listing.answers(video)
            if listed and (video not in listing.sizes or sidecar_name not in listing.sizes):
                return None
            raw = read_bytes_or_none(self.output / sidecar_name)
            sidecar = Sidecar.parse(raw) if raw is not None else None
            if sidecar is None or sidecar.post_id != post_id:
                return None
            size = listing.sizes[video] if listed else size_or_none(self.output / video)
            return sidecar if sidecar.size == size else None

        found = in_parallel(look_up, wanted, concurrency)
        return {post_id: sidecar for post_id, sidecar in zip(wanted, found, strict=True) if sidecar is not None}

    def landed_fields(self, post_id: str, sidecar: Sidecar) -> dict[str, Any]:
        """What the manifest says of a video found landed (by this run or another)."""
        return {"output_uri": str(self.video_path(post_id)), "sidecar_uri": str(self.sidecar_path(post_id)),
                "size": sidecar.size, "sha256": sidecar.sha256, "task_id": sidecar.task_id}

    def lease_path(self, post_id: str) -> ObjectStoragePath:
        return self.output / STATE_DIR / "_leases" / f"{safe_object_name(post_id)}.json"

    def land(self, result: RemovalResult, *, provenance: dict[str, Any], keep_source: bool = False,
             refresh: Callable[[str], str] | None = None, lease_token: str | None = None,
             mark_landed: bool = False) -> LandedVideo:
        """Download, verify and publish the video, then its sidecar, holding the video's lease throughout,
        so two runs landing the same post id here never leave one's video beside the other's sidecar.

        ``lease_token``: the lease was already taken by this holder (its claim, before paying) under it.
        ``mark_landed``: leave the lease as a "landed" mark (claims: see ``claim``).
        """
        post_id = safe_object_name(result.post_id)
        lease = LandingLease(self.lease_path(post_id), self.holder, token=lease_token)
        with lease.held(acquired=lease_token is not None, mark_landed=mark_landed, keep_on_failure=mark_landed):
            return self._land(result, post_id, provenance=provenance, keep_source=keep_source, refresh=refresh)

    def claim(self, post_id: str, *, ttl: float, looked_at: float) -> tuple[str | None, dict[str, Any] | None]:
        """Take the video's lease before paying for it: (our token, None), or (None, the live holder's lease).

        The claim lasts ``ttl`` (the wait for the service plus the landing), so one run pays and the others
        wait for its file; if the holder dies, the claim expires and another run may take over. A video landed
        by another run since ``looked_at`` (when the caller saw the folder without it) is held, not free.
        """
        lease = LandingLease(self.lease_path(post_id), self.holder, ttl=ttl)
        held_by = lease.try_acquire(landed_after=looked_at)
        return (lease.token, None) if held_by is None else (None, held_by)

    def read_claim(self, post_id: str) -> dict[str, Any] | None:
        return LandingLease(self.lease_path(post_id), self.holder).read()

    def unclaim(self, post_id: str, token: str) -> None:
        """Give a claim up without landing (the video failed): others may try, within the service's verdict."""
        LandingLease(self.lease_path(post_id), self.holder, token=token).release()

    def _land(self, result: RemovalResult, post_id: str, *, provenance: dict[str, Any], keep_source: bool,
              refresh: Callable[[str], str] | None) -> LandedVideo:
        video = self.download(result.clean_url, self.video_path(post_id), refresh=refresh)
        source = None
        if keep_source and result.source_url:
            source = self.download(result.source_url, self.video_path(post_id, ".source"), refresh=refresh)
        sidecar = Sidecar(
            source_url=result.video_url,
            post_id=post_id,
            service=result.service,
            task_id=result.task_id,
            prompt=result.prompt,
            thumbnail_url=result.thumbnail_url,
            file=str(video.uri).rsplit("/", 1)[-1],
            sha256=video.sha256,
            size=video.size,
            watermarked_source=SourceFile(file=source.uri.rsplit("/", 1)[-1], sha256=source.sha256,
                                          size=source.size) if source else None,
            watermark_removed_by=result.service,
            landed_at=utcnow(),
            provider=f"airflow-provider-sora/{__version__}",
            **provenance,
        )
        sidecar_path = self.sidecar_path(post_id)
        try:
            write_atomic(sidecar_path, sidecar.to_json())
        except Exception as error:
            raise self._withdrawn(sidecar_path, error, video, source) from error
        return LandedVideo(video=video, sidecar_uri=str(sidecar_path), source=source)

    def _withdrawn(self, sidecar_path: ObjectStoragePath, error: Exception, *published: LandedObject | None
                   ) -> LandingError:
        """A video is never left visible without its sidecar: take back what this landing published."""
        left = []
        for landed in filter(None, published):
            target = self.output / landed.uri.rsplit("/", 1)[-1]
            try:
                delete_if_present(target, outlast=True)
            except Exception as failure:
                left.append(f"{target.name} ({type(failure).__name__}: {failure})")
        why = f"its sidecar {sidecar_path.name} could not be published ({type(error).__name__}: {error})"
        if left:
            return SidecarNotPublishedError(f"{why}, and withdrawing the video failed too, so these are left "
                                            f"without a sidecar until a retry lands the pair: {', '.join(left)}")
        return SidecarNotPublishedError(f"{why}; the video was withdrawn, and a retry lands the pair from the "
                                        "known result without paying again")

    def download(self, url: str, target: ObjectStoragePath, *,
                 refresh: Callable[[str], str] | None = None) -> LandedObject:
        """Stream ``url`` to ``target``; an expired link is refreshed once through ``refresh``."""
        try:
            return self._download(url, target)
        except ResultLinkExpiredError:
            if refresh is None:
                raise
            return self._download(refresh(url), target)

    def _download(self, url: str, target: ObjectStoragePath) -> LandedObject:
        for _ in range(MAX_REDIRECTS + 1):
            check_url_scheme(url, allow_private=self.allow_private_hosts)  # the address: per connection
            try:
                with self._client.stream("GET", url) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    return self._store(response, target)
            except httpx.HTTPError as error:
                raise ResultDownloadError(f"download of {target.name} failed: {type(error).__name__}") from None
        raise ResultDownloadError(f"download of {target.name}: more than {MAX_REDIRECTS} redirects")

    def _store(self, response: httpx.Response, target: ObjectStoragePath) -> LandedObject:
        if response.status_code in (401, 403, 404, 410):
            raise ResultLinkExpiredError(f"result link for {target.name} answered HTTP {response.status_code}")
        if response.status_code != 200:
            raise ResultDownloadError(f"result link for {target.name} answered HTTP {response.status_code}")
        expected = response.headers.get("content-length")
        size, head = 0, b""
        with publish(target) as publication, HashingWriter(publication.write) as writer:
            for chunk in response.iter_bytes(self.chunk_size):
                if len(head) < 8:
                    head += chunk[: 8 - len(head)]
                writer.write(chunk)
                size += len(chunk)
            digest = writer.finish()
            if expected is not None and size != int(expected):
                raise ResultDownloadError(f"{target.name}: truncated download ({size} of {expected} bytes)")
            if size == 0 or not looks_like_mp4(head):
                raise ResultDownloadError(f"{target.name}: the downloaded file is not an MP4 ({size} bytes)")
        return LandedObject(uri=str(target), size=size, sha256=digest)


class HashingWriter:
    """Hash and write in a helper thread, so the download never waits for a part upload or the hash.

    Hashing, socket reads and storage writes all release the GIL, so they overlap on separate cores. The
    queue is bounded: memory stays at a few chunks whatever the file size. A write error surfaces on the
    next ``write`` or in ``finish``.
    """

    def __init__(self, sink: Callable[[bytes], None], depth: int = 4) -> None:
        self._sink = sink
        self._digest = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sora-landing-writer", daemon=True)

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain without writing, so the producer never blocks
            try:
                self._digest.update(chunk)
                self._sink(chunk)
            except BaseException as error:  # re-raised in the producer's thread
                self._error = error

    def __enter__(self) -> HashingWriter:
        self._thread.start()
        return self

    def write(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def finish(self) -> str:
        """Wait for every chunk to be written; return the hex SHA-256."""
        self._stop()
        if self._error is not None:
            raise self._error
        return self._digest.hexdigest()

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def __exit__(self, *exc: Any) -> None:
        self._stop()
