"""Publication when the store fails: at the write, at the commit and at the discard, on each store.

Local paths on a real full filesystem (a small tmpfs, where it can be mounted), S3 against moto's server over
HTTP (directly, and through a real fault proxy answering SlowDown and InternalError), and an fsspec store with
``autocommit=False`` (s3fs over the same server). A failure is injected at one exact point only where no real
fault reaches it (a commit, a discard). After each: nothing at the final key, no temporary file, no upload
left in progress, and the error the caller sees is the one that happened.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_sora import storage, storeretry
from airflow_sora.landing import ResultLander, SidecarNotPublishedError
from airflow_sora.sandbox.media import make_mp4
from airflow_sora.services import RemovalResult
from airflow_sora.state import RunScope, VideoStateStore
from airflow_sora.storage import create_exclusive, list_sizes, publish, read_bytes_or_none, write_atomic
from airflow_sora.storeretry import StoreRetryPolicy, StoreUnavailableError
from airflow_sora.verdicts import VerdictBook
from airflow_sora.videos import parse_video_list
from tests.conftest import s3_client, s3_keys
from tests.s3proxy import S3FaultProxy

MIB = 1024 * 1024
VIDEO = make_mp4("store-faults", 40_000)
POST = "s_" + "cd" * 16


# helpers ---------------------------------------------------------------------------------------------------
@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a disk that really fills up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int = 0) -> None:
    """Fill the disk until at most ``leave`` bytes are free."""
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize
    with open(disk / "filler", "wb") as handle:
        try:
            handle.write(b"\0" * max(0, free - leave))
            handle.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC


def everything(folder: Path) -> list[str]:
    """Every file under ``folder``, hidden and temporary ones included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def open_uploads(s3_server: str, bucket: str) -> list[dict[str, Any]]:
    return list(s3_client(s3_server).list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def failing(call: Any, method: str, error: BaseException | None = None, times: int = 1) -> Any:
    """An S3 caller whose ``method`` fails ``times`` times (one exact point), then works."""
    left = [times]

    def wrapped(name: str, **kwargs: Any) -> Any:
        if name == method and left[0] > 0:
            left[0] -= 1
            raise error or StoreUnavailableError(f"injected failure of {method}")
        return call(name, **kwargs)

    return wrapped


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> StoreRetryPolicy:
    """Two attempts with short waits: a store that stays down is declared down within a second."""
    policy = StoreRetryPolicy(attempts=2, base=0.05, cap=0.1)
    monkeypatch.setattr(storeretry, "POLICY", policy)
    storage._s3_client.cache_clear()
    yield policy
    storage._s3_client.cache_clear()


@pytest.fixture
def proxy(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3FaultProxy]:
    """The fault proxy in front of moto, as the ``aws_faulty`` connection."""
    with S3FaultProxy(s3_server, seed=11) as running:
        monkeypatch.setenv("AIRFLOW_CONN_AWS_FAULTY", (
            '{"conn_type": "aws", "login": "testing", "password": "testing", '
            f'"extra": {{"endpoint_url": "{running.url}", "region_name": "us-east-1"}}}}'))
        storage._s3_client.cache_clear()
        yield running
    storage._s3_client.cache_clear()


# local paths -----------------------------------------------------------------------------------------------
def test_local_write_on_a_full_disk_leaves_nothing(tiny_disk: Path) -> None:
    fill(tiny_disk, leave=64 * 1024)
    target = ObjectStoragePath(f"file://{tiny_disk}/out/v.mp4")
    with pytest.raises(OSError) as caught, publish(target) as publication:
        for _ in range(8):
            publication.write(os.urandom(128 * 1024))
    assert caught.value.errno == errno.ENOSPC
    assert everything(tiny_disk) == ["filler"]


def test_local_commit_on_a_full_disk_leaves_no_temporary_file(tiny_disk: Path) -> None:
    """The issue's sidecar: small enough to sit in the write buffer, so the flush at commit is what fails, and
    the discard's close flushes (and fails) again: the temporary file goes all the same."""
    (tiny_disk / "out").mkdir()
    fill(tiny_disk)
    with pytest.raises(OSError) as caught:
        write_atomic(ObjectStoragePath(f"file://{tiny_disk}/out/s.json"), b'{"sha256": "..."}' * 20)
    assert caught.value.errno == errno.ENOSPC
    assert everything(tiny_disk) == ["filler"]


def test_local_exclusive_create_on_a_full_disk_leaves_no_temporary_file(tiny_disk: Path) -> None:
    (tiny_disk / "_leases").mkdir()
    fill(tiny_disk)
    with pytest.raises(OSError):
        create_exclusive(ObjectStoragePath(f"file://{tiny_disk}/_leases/l.json"), b"{}" * 100)
    assert everything(tiny_disk) == ["filler"]


def test_local_discard_unlinks_even_when_close_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Injected at two exact points: the fsync of the commit, then the close of the discard."""
    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage.os, "fsync", no_space)
    target = ObjectStoragePath(f"file://{tmp_path}/out/v.mp4")
    with pytest.raises(OSError, match="No space left"), publish(target) as publication:
        publication.write(b"x" * 1000)
        real = publication._sink.handle  # type: ignore[attr-defined]

        class CloseFails:
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def close(self) -> None:
                real.close()
                raise OSError(errno.EIO, "close failed")

        publication._sink.handle = CloseFails()  # type: ignore[attr-defined]
    assert everything(tmp_path / "out") == []


# S3 --------------------------------------------------------------------------------------------------------
def s3_target(bucket: str, key: str, conn: str = "aws_default") -> ObjectStoragePath:
    return ObjectStoragePath(f"s3://{conn}@{bucket}/{key}")


def test_s3_part_failing_at_write_leaves_no_object_and_no_upload(s3_server: str, s3_bucket: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    target = s3_target(s3_bucket, "clean/v.mp4")
    publication = storage.Publication(target)
    sink = publication._sink
    sink._s3 = failing(sink._s3, "upload_part")  # type: ignore[attr-defined]
    with pytest.raises(StoreUnavailableError, match="upload_part"):
        try:
            for _ in range(3):
                publication.write(os.urandom(8 * MIB))
            publication.commit()
        except BaseException:
            publication.discard()
            raise
    assert s3_keys(s3_server, s3_bucket) == {} and open_uploads(s3_server, s3_bucket) == []


@pytest.mark.parametrize(("size", "method"), [(9 * MIB, "complete_multipart_upload"), (1000, "put_object")])
def test_s3_commit_failing_leaves_no_object_and_no_upload(s3_server: str, s3_bucket: str, size: int,
                                                          method: str) -> None:
    publication = storage.Publication(s3_target(s3_bucket, "clean/v.mp4"))
    sink = publication._sink
    sink._s3 = failing(sink._s3, method)  # type: ignore[attr-defined]
    publication.write(os.urandom(size))
    with pytest.raises(StoreUnavailableError, match=method):
        try:
            publication.commit()
        except BaseException:
            publication.discard()
            raise
    assert s3_keys(s3_server, s3_bucket) == {} and open_uploads(s3_server, s3_bucket) == []


def test_s3_an_abort_the_store_fails_once_is_tried_again(s3_server: str, s3_bucket: str,
                                                         fast_retries: StoreRetryPolicy) -> None:
    """An abort outlasts the client's own retries: one lost to a failing store would leave the upload in
    progress, billed, until a lifecycle rule frees it."""
    target = s3_target(s3_bucket, "clean/v.mp4")
    with pytest.raises(RuntimeError, match="verification failed"), publish(target) as publication:
        sink = publication._sink
        sink._s3 = failing(sink._s3, "abort_multipart_upload",  # type: ignore[attr-defined]
                           storeretry.unavailable("S3 bucket", "abort_multipart_upload", ConnectionResetError(), 6))
        publication.write(os.urandom(9 * MIB))
        raise RuntimeError("verification failed")
    assert open_uploads(s3_server, s3_bucket) == [] and s3_keys(s3_server, s3_bucket) == {}


def test_s3_discard_failing_never_hides_the_error_and_names_the_upload(
        s3_server: str, s3_bucket: str, caplog: pytest.LogCaptureFixture, fast_retries: StoreRetryPolicy) -> None:
    """An abort the store keeps refusing leaves the upload in progress (a bucket lifecycle rule frees it):
    the caller still gets the error that made it discard, and the log names the upload."""
    target = s3_target(s3_bucket, "clean/v.mp4")
    with caplog.at_level(logging.WARNING, logger="airflow_sora.storage"), \
            pytest.raises(RuntimeError, match="verification failed"), publish(target) as publication:
        sink = publication._sink
        sink._s3 = failing(sink._s3, "abort_multipart_upload",  # type: ignore[attr-defined]
                           storeretry.unavailable("S3 bucket", "abort_multipart_upload", ConnectionResetError(), 6),
                           times=1000)
        publication.write(os.urandom(9 * MIB))
        raise RuntimeError("verification failed")
    (left,) = open_uploads(s3_server, s3_bucket)
    assert "Could not discard the unfinished write" in caplog.text and "abort_multipart_upload" in caplog.text
    assert s3_keys(s3_server, s3_bucket) == {}
    s3_client(s3_server).abort_multipart_upload(Bucket=s3_bucket, Key="clean/v.mp4", UploadId=left["UploadId"])


def test_s3_throttling_and_server_errors_cost_retries_not_objects(s3_server: str, s3_bucket: str,
                                                                   proxy: S3FaultProxy) -> None:
    """A third of all calls answered SlowDown or InternalError: every write, read, listing and exclusive
    create still does what it says, through botocore's standard retries."""
    proxy.rate = 0.3
    folder = s3_target(s3_bucket, "out/", conn="aws_faulty")
    for i in range(12):
        write_atomic(folder / f"r{i}.json", b'{"i": %d}' % i)
    big = os.urandom(9 * MIB)
    with publish(folder / "big.mp4") as publication:
        publication.write(big)
    assert create_exclusive(folder / "lease.json", b"{}") is True
    assert create_exclusive(folder / "lease.json", b"{}") is False
    assert read_bytes_or_none(folder / "absent.json") is None
    assert read_bytes_or_none(folder / "r3.json") == b'{"i": 3}'
    assert sorted(list_sizes(folder)) == sorted([f"r{i}.json" for i in range(12)] + ["big.mp4", "lease.json"])
    assert proxy.counts["SlowDown"] + proxy.counts["InternalError"] >= 5, proxy.counts
    assert s3_client(s3_server).get_object(Bucket=s3_bucket, Key="out/big.mp4")["Body"].read() == big
    assert open_uploads(s3_server, s3_bucket) == []


def test_a_store_that_stays_down_fails_reads_never_answers_absent(s3_server: str, s3_bucket: str,
                                                                    proxy: S3FaultProxy,
                                                                    fast_retries: StoreRetryPolicy) -> None:
    """Planning, claims, verdicts and state records: a read that failed raises, naming the store and the call;
    nothing is taken for "nothing is there" (which would pay again)."""
    output = s3_target(s3_bucket, "out/", conn="aws_faulty")
    write_atomic(output / f"{POST}.json", b"{}")  # before the store goes down
    proxy.rate = 1.0
    videos = parse_video_list([f"https://sora.chatgpt.com/p/{POST}"]).videos
    store = VideoStateStore(output, RunScope("d", "t", "r"), service="kie")
    checks = [
        ("list_objects_v2", lambda: store.load_all(videos)),
        ("get_object", lambda: ResultLander(output).landed_copies([POST])),  # a lookup: one video, no listing
        ("list_objects_v2", lambda: VerdictBook(output).load([POST])),
        ("get_object", lambda: ResultLander(output).read_claim(POST)),
        ("put_object", lambda: store.save(store.new_record(videos[0]))),
    ]
    for operation, check in checks:
        with pytest.raises(StoreUnavailableError) as caught:
            check()
        assert f"S3 bucket '{s3_bucket}'" in str(caught.value) and operation in str(caught.value)
    proxy.rate = 0.0
    assert store.load_all(videos) == {POST: None}


# fsspec stores (s3fs over the same server, as any store opened with autocommit=False) ----------------------
@pytest.fixture
def fsspec_branch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Publish S3 paths through fsspec, the branch every store but local and boto3's S3 takes."""
    monkeypatch.setattr(storage, "s3_api_for", lambda path: None)


def fsspec_publication(bucket: str, key: str) -> storage.Publication:
    publication = storage.Publication(s3_target(bucket, key))
    assert isinstance(publication._sink, storage._FsspecFile)
    return publication


def test_fsspec_write_failing_leaves_no_object_and_no_upload(s3_server: str, s3_bucket: str, fsspec_branch: None,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    publication = fsspec_publication(s3_bucket, "f/v.mp4")
    handle = publication._sink.handle  # type: ignore[attr-defined]
    real = handle._upload_chunk
    calls = [0]

    def second_part_fails(final: bool = False) -> Any:
        calls[0] += 1
        if calls[0] == 2:
            raise ConnectionResetError("injected: the second part's connection was reset")
        return real(final)

    handle._upload_chunk = second_part_fails
    with pytest.raises(ConnectionResetError), publish_with(publication, monkeypatch) as pub:
        for _ in range(4):
            pub.write(os.urandom(6 * MIB))
    assert s3_keys(s3_server, s3_bucket) == {} and open_uploads(s3_server, s3_bucket) == []


def test_fsspec_commit_failing_leaves_no_object_and_no_upload(s3_server: str, s3_bucket: str, fsspec_branch: None,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    publication = fsspec_publication(s3_bucket, "f/v.mp4")
    handle = publication._sink.handle  # type: ignore[attr-defined]
    real = handle._call_s3

    def complete_fails(method: str, *args: Any, **kwargs: Any) -> Any:
        if method == "complete_multipart_upload":
            raise ConnectionResetError("injected: the completion's connection was reset")
        return real(method, *args, **kwargs)

    handle._call_s3 = complete_fails
    with pytest.raises(ConnectionResetError), publish_with(publication, monkeypatch) as pub:
        pub.write(os.urandom(12 * MIB))
    assert s3_keys(s3_server, s3_bucket) == {} and open_uploads(s3_server, s3_bucket) == []


def test_fsspec_discard_failing_never_hides_the_error(s3_server: str, s3_bucket: str, fsspec_branch: None,
                                                       caplog: pytest.LogCaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    publication = fsspec_publication(s3_bucket, "f/v.mp4")
    handle = publication._sink.handle  # type: ignore[attr-defined]

    def discard_fails() -> None:
        raise ConnectionResetError("injected: the abort's connection was reset")

    handle.discard = discard_fails
    with caplog.at_level(logging.WARNING, logger="airflow_sora.storage"), \
            pytest.raises(RuntimeError, match="verification"), publish_with(publication, monkeypatch) as pub:
        pub.write(b"x" * 1000)
        raise RuntimeError("verification failed")
    assert handle.closed and "Could not discard the unfinished write" in caplog.text
    assert s3_keys(s3_server, s3_bucket) == {}


def publish_with(publication: storage.Publication, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``storage.publish`` around a publication built by the test (so a failure can be injected first)."""
    monkeypatch.setattr(storage, "Publication", lambda target: publication)
    return publish(publication.target)


# landing: a video is never left without its sidecar ---------------------------------------------------------
@pytest.fixture
def video_url() -> Iterator[str]:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(VIDEO)))
            self.end_headers()
            self.wfile.write(VIDEO)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v.mp4"
    server.shutdown()
    server.server_close()


def removal(url: str) -> RemovalResult:
    return RemovalResult(service="kie", video_url=f"https://sora.chatgpt.com/p/{POST}", post_id=POST,
                         clean_url=url, task_id="t1")


@pytest.mark.parametrize("store", ["local", "s3"])
def test_a_sidecar_that_cannot_be_published_withdraws_its_video(store: str, tmp_path: Path, video_url: str,
                                                                request: pytest.FixtureRequest,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The sidecar's write fails (injected at that one point): the video is taken back, the error says so and
    is retryable, and the retry lands the pair."""
    if store == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        server = request.getfixturevalue("s3_server")
        output = s3_target(bucket, "out/")

        def published() -> list[str]:
            return sorted(k for k in s3_keys(server, bucket) if "/_state/" not in k)
    else:
        output = ObjectStoragePath(f"file://{tmp_path}/out/")

        def published() -> list[str]:
            return [f"out/{name}" for name in everything(tmp_path / "out") if not name.startswith("_state")]

    import airflow_sora.landing as landing

    real = landing.write_atomic

    def sidecar_fails(target: ObjectStoragePath, data: bytes, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    lander = ResultLander(output, allow_private_hosts=True)
    monkeypatch.setattr(landing, "write_atomic", sidecar_fails)
    with pytest.raises(SidecarNotPublishedError) as caught:
        lander.land(removal(video_url), provenance={})
    assert caught.value.retryable
    assert "No space left on device" in str(caught.value) and "the video was withdrawn" in str(caught.value)
    assert published() == []
    monkeypatch.setattr(landing, "write_atomic", real)
    lander.land(removal(video_url), provenance={})
    assert published() == [f"out/{POST}.json", f"out/{POST}.mp4"]


# the operator: a store that goes down after creates were paid, then comes back for the retry -----------------
def remover(urls: list[str], output: str) -> Any:
    from airflow_sora.operators import SoraWatermarkRemoverOperator

    return SoraWatermarkRemoverOperator(task_id="remove", video_url=urls, poll_interval=0.1, deferrable=False,
                                        output_path=output)


def charged(sandbox: Any, urls: list[str]) -> Counter[str]:
    return Counter(c["video_url"] for c in sandbox.charges() if c["video_url"] in urls and not c["refunded"])


def test_a_try_failed_by_the_store_is_resumed_by_the_retry_without_paying_again(
        sandbox_connections: Any, s3_server: str, s3_bucket: str, proxy: S3FaultProxy,
        fast_retries: StoreRetryPolicy) -> None:
    """Every create paid and recorded, then the store stops answering at the first video's upload: the try
    fails with errors naming the store; the retry, with the store back, lands all 8, paying nothing again."""
    from tests.conftest import VIDEO_URLS
    from tests.integration.harness import TaskInstanceStandIn, run_try

    sandbox = sandbox_connections
    urls = VIDEO_URLS[20:28]
    operator = remover(urls, f"s3://aws_faulty@{s3_bucket}/clean/")
    proxy.trip(lambda method, path: method in ("PUT", "POST") and ".mp4" in path)
    ti = TaskInstanceStandIn(try_number=1)
    first = run_try(operator, ti)
    assert first.error is not None and proxy.counts["forwarded"] > 0
    assert f"S3 bucket '{s3_bucket}'" in str(first.error) + str(ti.xcom.get("manifest"))
    assert sum(charged(sandbox, urls).values()) == len(urls)
    proxy.rate = 0.0
    second = run_try(operator, TaskInstanceStandIn(try_number=2))
    assert second.error is None, second.error
    assert second.value["counts"]["landed"] == len(urls), second.value
    assert charged(sandbox, urls) == Counter(urls)  # one charge per video, both tries together
    assert_pairs(s3_server, s3_bucket, urls)


def test_a_store_down_while_creates_are_in_flight_never_pays_twice(
        sandbox_connections: Any, s3_server: str, s3_bucket: str, proxy: S3FaultProxy,
        fast_retries: StoreRetryPolicy) -> None:
    """The store stops answering while creates are being paid: the creates whose task id could not be recorded
    are reported as possibly charged (their task ids are in the log), never paid again; every other video is
    resumed and landed by the retry."""
    import threading

    from tests.conftest import VIDEO_URLS
    from tests.integration.harness import TaskInstanceStandIn, run_try

    sandbox = sandbox_connections
    urls = VIDEO_URLS[28:36]
    operator = remover(urls, f"s3://aws_faulty@{s3_bucket}/clean/")
    stop = threading.Event()

    def store_down_after_three_creates() -> None:
        while not stop.is_set():
            if sum(charged(sandbox, urls).values()) >= 3:
                proxy.rate = 1.0
                return
            stop.wait(0.005)

    watcher = threading.Thread(target=store_down_after_three_creates, daemon=True)
    watcher.start()
    first = run_try(operator, TaskInstanceStandIn(try_number=1))
    stop.set()
    watcher.join()
    assert first.error is not None
    proxy.rate = 0.0
    ti = TaskInstanceStandIn(try_number=2)
    second = run_try(operator, ti)
    manifest = second.value or ti.xcom["manifest"]
    lines = {v["video_url"]: v for v in manifest["videos"]}
    assert charged(sandbox, urls) == Counter(set(charged(sandbox, urls)))  # nothing charged twice
    for url in urls:
        line = lines[url]
        assert line["status"] == "landed" or "may have been charged" in (line["error"] or ""), line
    assert_pairs(s3_server, s3_bucket, [u for u in urls if lines[u]["status"] == "landed"])


def assert_pairs(s3_server: str, s3_bucket: str, urls: list[str]) -> None:
    keys = s3_keys(s3_server, s3_bucket)
    for url in urls:
        name = url.rsplit("/", 1)[1]
        assert f"clean/{name}.mp4" in keys and f"clean/{name}.json" in keys, (name, sorted(keys))
    assert not [k for k in keys if k.startswith("clean/s_") and k.rsplit(".", 1)[0] + ".json" not in keys]
    assert open_uploads(s3_server, s3_bucket) == []
