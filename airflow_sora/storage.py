"""Small object-storage helpers: atomic writes and reads on any ``ObjectStoragePath``.

Local paths publish by ``os.replace`` of a temporary file in the same folder; S3 through a multipart upload
completed only once everything is verified; other remote stores through fsspec with ``autocommit=False``.
An aborted write, or a commit that fails (a full disk fails the flush, a store the completion), never leaves a
partial object at the final key nor its temporary file beside it.

Reads tell "absent" (None, an empty listing) from "could not read" (an exception): a read that failed is never
taken for "nothing is there", which would pay again. Transient store errors are retried (``storeretry``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any, Protocol, TypeVar

from airflow.sdk import ObjectStoragePath

from airflow_sora import storeretry
from airflow_sora.multipart import DEFAULT_PART_SIZE, ConcurrentMultipartUpload, S3Call
from airflow_sora.storeretry import error_code, is_transient, retrying, unavailable

log = logging.getLogger(__name__)

LOCAL_PROTOCOLS = {"file", "local", ""}
#: Objects per listing request (S3's maximum page).
LIST_PAGE = 1000
#: Multipart part size for remote stores: bounds the memory a landing holds, whatever the file size.
PART_SIZE = DEFAULT_PART_SIZE


def protocol_of(path: ObjectStoragePath) -> str:
    """The storage protocol (``s3``, ``file``...); fsspec may report several aliases, the first is canonical."""
    protocol = path.protocol
    if isinstance(protocol, (tuple, list)):
        protocol = protocol[0] if protocol else ""
    return str(protocol)


def is_local(path: ObjectStoragePath) -> bool:
    return protocol_of(path) in LOCAL_PROTOCOLS


def fs_path(path: ObjectStoragePath) -> str:
    """The path as the underlying fsspec filesystem names it (``bucket/key`` for S3)."""
    return str(path.path)


def bucket_and_key(path: ObjectStoragePath) -> tuple[str, str]:
    """An S3 path as the API names it."""
    bucket, _, key = fs_path(path).partition("/")
    return bucket, key


def s3_api_for(path: ObjectStoragePath) -> S3Call | None:
    """A thread-safe S3 API caller for an ``s3://`` path, built from the path's Airflow connection.

    A plain (synchronous) boto3 client: its calls run truly in parallel in threads, unlike calls funnelled
    through s3fs's single event loop. It retries transient errors itself (botocore's standard mode, see
    ``storeretry``); one it still gets at the end raises ``StoreUnavailableError`` naming the bucket and the
    call. None for other stores, or without the Amazon provider.
    """
    if protocol_of(path) not in ("s3", "s3a", "s3n"):
        return None
    try:
        client = _s3_client(conn_id_of(path))
    except ImportError:
        return None

    def call(method: str, **kwargs: Any) -> Any:
        try:
            return getattr(client, method)(**kwargs)
        except Exception as error:
            if is_transient(error):
                raise unavailable(f"S3 bucket {kwargs.get('Bucket')!r}", _s3_operation(method, kwargs), error,
                                  _max_attempts(client)) from error
            raise

    return call


def _s3_operation(method: str, kwargs: dict[str, Any]) -> str:
    where = kwargs.get("Key", kwargs.get("Prefix", ""))
    upload = f" (upload {kwargs['UploadId']})" if "UploadId" in kwargs else ""
    return f"{method} {where!r}{upload}"


def _max_attempts(client: Any) -> int:
    retries = getattr(client.meta.config, "retries", None) or {}
    if "total_max_attempts" in retries:
        return int(retries["total_max_attempts"])
    return int(retries.get("max_attempts", 4)) + 1  # botocore counts retries there, not attempts


def conn_id_of(path: ObjectStoragePath) -> str | None:
    """The Airflow connection a path names (``s3://conn@bucket/key``), on Airflow 3.1 and 3.3 alike.

    Airflow 3.3 has ``path.conn_id``; 3.1 keeps it only in the path's storage options.
    """
    conn_id = getattr(path, "conn_id", None)
    if conn_id is None:
        conn_id = (getattr(path, "storage_options", None) or {}).get("conn_id")
    return conn_id


@functools.lru_cache(maxsize=8)
def _s3_client(conn_id: str | None) -> Any:
    """One client per connection per process (clients are thread-safe and cost ~0.1 s to build), in
    botocore's standard retry mode unless the connection's extras configure retries of their own."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from botocore.config import Config

    configured = S3Hook(aws_conn_id=conn_id).conn_config.botocore_config
    if configured is not None and getattr(configured, "retries", None):
        return S3Hook(aws_conn_id=conn_id).get_conn()
    retries = Config(retries=storeretry.POLICY.botocore_retries())
    config = configured.merge(retries) if configured is not None else retries
    return S3Hook(aws_conn_id=conn_id, config=config).get_conn()


class Publication:
    """A write that becomes visible at its final key only on ``commit``; ``discard`` leaves nothing there.

    Local paths: a temporary file in the same folder, then ``os.replace``. S3: a multipart upload with
    several parts in flight. Other remote stores: fsspec with ``autocommit=False``.
    """

    def __init__(self, target: ObjectStoragePath) -> None:
        self.target = target
        self._sink: _Sink
        if is_local(target):
            self._sink = _LocalFile(fs_path(target))
        elif (s3 := s3_api_for(target)) is not None:
            self._sink = ConcurrentMultipartUpload(s3, fs_path(target), part_size=PART_SIZE)
        else:
            self._sink = _FsspecFile(target.fs.open(fs_path(target), "wb", autocommit=False, block_size=PART_SIZE))

    def write(self, data: bytes) -> None:
        self._sink.write(data)

    def commit(self) -> None:
        self._sink.commit()

    def discard(self) -> None:
        """Never raises: what could not be removed is logged (an S3 upload left in progress is freed by the
        bucket's ``AbortIncompleteMultipartUpload`` rule, if it has one)."""
        try:
            self._sink.discard()
        except Exception as error:
            log.warning("Could not discard the unfinished write of %s: %s: %s", self.target,
                        type(error).__name__, error)


class _Sink(Protocol):
    def write(self, data: bytes) -> None: ...
    def commit(self) -> None: ...
    def discard(self) -> None: ...


class _LocalFile:
    def __init__(self, final: str) -> None:
        os.makedirs(os.path.dirname(final) or ".", exist_ok=True)
        self.final = final
        self.temp = os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.{uuid.uuid4().hex}.part")
        self.handle: IO[bytes] = open(self.temp, "wb")  # noqa: SIM115 - closed in commit/discard

    def write(self, data: bytes) -> None:
        self.handle.write(data)

    def commit(self) -> None:
        self.close_synced()
        os.replace(self.temp, self.final)

    def close_synced(self) -> None:
        """On disk before it gets its final name: a crash never publishes a short file."""
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()

    def discard(self) -> None:
        """Unlink even when closing fails (closing flushes, which fails again on a full disk)."""
        try:
            self.handle.close()
        except OSError:
            pass  # the descriptor is closed even when the flush before it failed
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.temp)


class _FsspecFile:
    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def write(self, data: bytes) -> None:
        self.handle.write(data)

    def commit(self) -> None:
        self.handle.close()  # uploads the last part; with autocommit=False nothing is visible yet
        self.handle.commit()

    def discard(self) -> None:
        try:
            self.handle.discard()  # aborts the multipart upload
        finally:
            self.handle.closed = True  # nothing left to flush


@contextlib.contextmanager
def publish(target: ObjectStoragePath) -> Iterator[Publication]:
    """Commit on a clean exit; discard on any exception, the commit's own included."""
    publication = Publication(target)
    try:
        yield publication
        publication.commit()
    except BaseException:
        publication.discard()
        raise


def write_atomic(target: ObjectStoragePath, data: bytes, *, outlast: bool = False) -> None:
    """The whole object or nothing, retried as a whole on transient errors (S3: by botocore, per call).

    ``outlast``: keep trying after the store's own retries gave up (the record of a paid create).
    """
    def write() -> None:
        with publish(target) as publication:
            publication.write(data)

    if s3_api_for(target) is not None and not outlast:
        write()
        return
    retrying(write, store=store_name(target), operation=f"writing {target.name}", outlast=outlast)


def store_name(path: ObjectStoragePath) -> str:
    """How errors name a store: its protocol and bucket or folder, never credentials."""
    if is_local(path):
        return "local folder " + os.path.dirname(fs_path(path))
    bucket = fs_path(path).partition("/")[0]
    return f"{protocol_of(path)} bucket {bucket!r}"


def create_exclusive(target: ObjectStoragePath, data: bytes) -> bool:
    """Write ``data`` at ``target`` only if nothing is there; False if something already is.

    Atomic where the store allows it (``has_exclusive_create``): a hard link of a complete temporary file on
    local paths, S3's conditional ``PutObject`` (``If-None-Match: *``). Other stores check, then write: best
    effort, so callers read the object back to learn whether their write is the one that stayed.
    """
    if is_local(target):
        return _link_exclusive(fs_path(target), data)
    if (s3 := s3_api_for(target)) is not None:
        bucket, key = bucket_and_key(target)
        try:
            s3("put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except Exception as error:  # botocore's ClientError, without importing botocore here
            if _s3_error_code(error) in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise
        return True
    if size_or_none(target) is not None:  # not ``exists()``: fsspec's answers False when it could not look
        return False
    write_atomic(target, data)
    return True


def has_exclusive_create(target: ObjectStoragePath) -> bool:
    """True where ``create_exclusive``'s answer is final, so nobody needs to read the object back."""
    return is_local(target) or s3_api_for(target) is not None


def _link_exclusive(final: str, data: bytes) -> bool:
    """A complete temporary file, then ``os.link``: the name appears whole or not at all, and never twice."""
    local = _LocalFile(final)
    try:
        local.write(data)
        local.close_synced()
        os.link(local.temp, final)
    except FileExistsError:
        return False
    finally:
        local.discard()  # the temporary file goes, whether the link was made or the disk was full
    return True


_s3_error_code = error_code
#: What S3 answers for an object that is not there: a GET says NoSuchKey (or 404); a HEAD has no body to name
#: the error, so botocore reports its status as 404 or NotFound.
S3_ABSENT_ON_GET = ("NoSuchKey", "404")
S3_ABSENT_ON_HEAD = (*S3_ABSENT_ON_GET, "NotFound")


def delete_if_present(target: ObjectStoragePath, *, outlast: bool = False) -> None:
    """One DELETE on S3 (fsspec's ``rm`` lists and batch-deletes); absent is fine. ``outlast``: keep trying
    after the store's own retries gave up (taking back a video whose sidecar could not be published)."""
    if (s3 := s3_api_for(target)) is not None:
        bucket, key = bucket_and_key(target)
        if outlast:
            retrying(lambda: s3("delete_object", Bucket=bucket, Key=key), store=store_name(target),
                     operation=f"deleting {target.name}", outlast=True)
        else:
            s3("delete_object", Bucket=bucket, Key=key)
        return

    def delete() -> None:
        with contextlib.suppress(FileNotFoundError):
            target.unlink()

    retrying(delete, store=store_name(target), operation=f"deleting {target.name}", outlast=outlast)


def read_bytes_or_none(path: ObjectStoragePath) -> bytes | None:
    """The object's bytes, or None if there is none; a read that failed raises, never answers None.

    S3 objects are read with one GET: fsspec's read (a HEAD, then a GET bound to the ETag it saw) fails when
    the object is rewritten between the two, as a lease being renewed is. A body cut short is read again
    (botocore retries the request, not the body).
    """
    if (s3 := s3_api_for(path)) is not None:
        bucket, key = bucket_and_key(path)

        def get() -> bytes | None:
            try:
                return bytes(s3("get_object", Bucket=bucket, Key=key)["Body"].read())
            except Exception as error:  # botocore's ClientError, without importing botocore here
                if _s3_error_code(error) in S3_ABSENT_ON_GET:
                    return None
                raise

        return retrying(get, store=store_name(path), operation=f"reading {path.name}")

    def read() -> bytes | None:
        try:
            return bytes(path.read_bytes())
        except FileNotFoundError:
            return None

    return retrying(read, store=store_name(path), operation=f"reading {path.name}")


def list_sizes(folder: ObjectStoragePath) -> dict[str, int]:
    """Name -> size of every object directly in ``folder`` (empty if there is none): one listing call per
    thousand objects, instead of one request per object a batch asks about. A listing that failed raises."""
    return list_sizes_within(folder, pages=None).sizes


@dataclass(frozen=True)
class Listing:
    """What a listing saw: sizes by name, and which names it answers for (all of them once it is complete;
    a listing stopped early answers for the names up to the last one it reached, as S3 lists in key order)."""

    sizes: dict[str, int]
    complete: bool
    through: str | None = None

    def answers(self, name: str) -> bool:
        return self.complete or (self.through is not None and name <= self.through)


def list_sizes_within(folder: ObjectStoragePath, *, pages: int | None) -> Listing:
    """The folder's listing, stopped after ``pages`` listing requests (None: no limit), so a caller asking
    about a few names never pays for a folder's whole history. Local folders are always listed whole (no
    request is paid); other remote stores list whole or, with ``pages=0``, not at all."""
    if pages == 0 and not is_local(folder):
        return Listing({}, complete=False)
    if s3_api_for(folder) is not None:
        return _list_s3(folder, pages)
    return Listing(retrying(lambda: _list_sizes(folder), store=store_name(folder), operation="listing the folder"),
                   complete=True)


def _list_s3(folder: ObjectStoragePath, pages: int | None) -> Listing:
    s3 = s3_api_for(folder)
    assert s3 is not None
    bucket, key = bucket_and_key(folder)
    prefix = key.rstrip("/") + "/" if key else ""
    sizes: dict[str, int] = {}
    token: dict[str, str] = {}
    listed = 0
    while True:
        page = s3("list_objects_v2", Bucket=bucket, Prefix=prefix, Delimiter="/", MaxKeys=LIST_PAGE, **token)
        listed += 1
        for item in page.get("Contents", []):
            sizes[item["Key"][len(prefix):]] = int(item["Size"])
        if not page.get("IsTruncated"):
            return Listing(sizes, complete=True)
        if pages is not None and listed >= pages:  # the objects come in key order: what is past is answered
            return Listing(sizes, complete=False, through=max(sizes) if sizes else None)
        token = {"ContinuationToken": page["NextContinuationToken"]}


def _list_sizes(folder: ObjectStoragePath) -> dict[str, int]:
    if is_local(folder):
        try:
            with os.scandir(fs_path(folder)) as entries:
                return {e.name: e.stat().st_size for e in entries if e.is_file()}
        except (FileNotFoundError, NotADirectoryError):
            return {}
    try:
        listing = folder.fs.ls(fs_path(folder), detail=True)
    except FileNotFoundError:
        return {}
    return {str(i["name"]).rstrip("/").rsplit("/", 1)[-1]: int(i.get("size") or 0)
            for i in listing if i.get("type") != "directory"}


def listing_budget(names: int, *, at_least: int = 0) -> int:
    """Listing pages worth spending to learn about ``names`` objects before looking them up one by one.

    A folder's size is unknown until it is listed. A page answers for up to a thousand objects but comes one
    after the other (about as long as dozens of lookups made eight at a time); a lookup answers for one.
    ``names / 1000`` pages cost little next to the lookups they may replace: a run larger than its folder
    lists it whole, a small run into a large folder looks its own objects up, after at most that many pages,
    whose names count as answered. Flat in the folder's size either way."""
    return max(at_least, names // LIST_PAGE)


_T = TypeVar("_T")
_R = TypeVar("_R")


def in_parallel(work: Callable[[_T], _R], items: list[_T], concurrency: int) -> list[_R]:
    """``work`` over ``items``, ``concurrency`` at a time, results in order."""
    if not items:
        return []
    with ThreadPoolExecutor(max(1, min(concurrency, len(items))), thread_name_prefix="sora-read") as pool:
        return list(pool.map(work, items))


def read_present(folder: ObjectStoragePath, names: Iterable[str], *, pages: int, concurrency: int = 8
                 ) -> dict[str, bytes]:
    """The objects among ``names`` that are in ``folder``, by name: a listing of at most ``pages`` requests,
    then reads of the names it showed present and of those it did not reach (one GET each, absent or not),
    ``concurrency`` at a time. The cost follows the names asked about, not the folder's size."""
    listing = list_sizes_within(folder, pages=pages)
    return read_listed(folder, names, listing=listing, concurrency=concurrency)


def read_listed(folder: ObjectStoragePath, names: Iterable[str], *, listing: Listing | None = None,
                concurrency: int = 8) -> dict[str, bytes]:
    """The objects among ``names`` that are in ``folder``, by name: one listing (unless the caller has one),
    then reads of only the objects present, ``concurrency`` at a time. Asking about a thousand names in a
    fresh folder costs one request. Names a partial ``Listing`` did not reach are read to find out."""
    seen = list_sizes_within(folder, pages=None) if listing is None else listing
    wanted = [name for name in dict.fromkeys(names) if name in seen.sizes or not seen.answers(name)]
    raws = in_parallel(lambda name: read_bytes_or_none(folder / name), wanted, concurrency)
    return {name: raw for name, raw in zip(wanted, raws, strict=True) if raw is not None}


def size_or_none(path: ObjectStoragePath) -> int | None:
    """The object's size, None if there is none; a look that failed raises. S3: one HEAD, from any thread."""
    if (s3 := s3_api_for(path)) is not None:
        bucket, key = bucket_and_key(path)
        try:
            return int(s3("head_object", Bucket=bucket, Key=key)["ContentLength"])
        except Exception as error:  # botocore's ClientError, without importing botocore here
            if _s3_error_code(error) in S3_ABSENT_ON_HEAD:
                return None
            raise

    def info() -> int | None:
        try:
            found: dict[str, Any] = path.fs.info(fs_path(path))
        except FileNotFoundError:
            return None
        return int(found.get("size") or 0)

    return retrying(info, store=store_name(path), operation=f"looking up {path.name}")
