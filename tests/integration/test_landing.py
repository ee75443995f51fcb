"""Landing: the download guard, verification before publishing, and keys that cannot escape the output."""

from __future__ import annotations

import hashlib
import json
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
from airflow.sdk import ObjectStoragePath

from airflow_sora.landing import ResultLander, check_result_url, safe_object_name
from airflow_sora.netguard import PinnedTransport
from airflow_sora.sandbox.media import make_mp4
from airflow_sora.services import RemovalResult, ResultDownloadError, UnsafeResultUrlError

VIDEO = make_mp4("seed", 40_000)
POST = "s_" + "ab" * 16


class _Files(BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}

    def do_GET(self) -> None:
        status, headers, body = self.routes.get(self.path, (404, {}, b""))
        if "X-Jitter" in headers:  # a random pause before the reply, to shuffle concurrent landings
            time.sleep(random.uniform(0, float(headers["X-Jitter"])))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", headers.get("X-Length", str(len(body))))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def files() -> Iterator[tuple[str, dict[str, tuple[int, dict[str, str], bytes]]]]:
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
    handler = type("Files", (_Files,), {"routes": routes})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", routes
    server.shutdown()
    server.server_close()


def result(url: str, post_id: str = POST) -> RemovalResult:
    return RemovalResult(service="kie", video_url=f"https://sora.chatgpt.com/p/{POST}", post_id=post_id,
                         clean_url=url, task_id="t1")


def lander(tmp_path: Path, allow_private: bool = True) -> ResultLander:
    return ResultLander(ObjectStoragePath(f"file://{tmp_path}/out/"), allow_private_hosts=allow_private,
                        chunk_size=4096)


def test_lands_verified_video_and_sidecar(tmp_path: Path, files: tuple) -> None:
    base, routes = files
    routes["/v.mp4"] = (200, {"Content-Type": "video/mp4"}, VIDEO)
    landed = lander(tmp_path).land(result(f"{base}/v.mp4"), provenance={"run": "r1"})
    assert landed.video.sha256 == hashlib.sha256(VIDEO).hexdigest() and landed.video.size == len(VIDEO)
    assert (tmp_path / "out" / f"{POST}.mp4").read_bytes() == VIDEO
    assert (tmp_path / "out" / f"{POST}.json").exists()
    assert published(tmp_path / "out") == [f"{POST}.json", f"{POST}.mp4"]


def published(out: Path) -> list[str]:
    """What a reader of the folder sees: everything but the provider's own ``_state``."""
    return sorted(p.name for p in out.iterdir() if p.name != "_state") if out.exists() else []


def test_redirects_are_followed_and_checked(tmp_path: Path, files: tuple) -> None:
    base, routes = files
    routes["/v.mp4"] = (200, {}, VIDEO)
    routes["/r"] = (302, {"Location": "/v.mp4"}, b"")
    assert lander(tmp_path).download(f"{base}/r", ObjectStoragePath(f"file://{tmp_path}/x.mp4")).size == len(VIDEO)
    routes["/evil"] = (302, {"Location": "http://169.254.169.254/latest/meta-data"}, b"")
    with pytest.raises(UnsafeResultUrlError):  # even an allowed sandbox host cannot bounce us to plain http
        ResultLander(ObjectStoragePath(f"file://{tmp_path}/o/"), allow_private_hosts=False).download(
            f"{base}/evil", ObjectStoragePath(f"file://{tmp_path}/y.mp4"))


@pytest.mark.parametrize(("body", "headers", "match"), [
    (VIDEO[:1000], {"X-Length": str(len(VIDEO))}, "download of"),  # server closes early
    (b"<html>not a video</html>" * 10, {}, "not an MP4"),
    (b"", {}, "not an MP4"),
])
def test_bad_downloads_leave_nothing_at_the_final_key(tmp_path: Path, files: tuple, body: bytes,
                                                      headers: dict[str, str], match: str) -> None:
    base, routes = files
    routes["/v.mp4"] = (200, headers, body)
    with pytest.raises(ResultDownloadError, match=match):
        lander(tmp_path).land(result(f"{base}/v.mp4"), provenance={})
    assert published(tmp_path / "out") == []


def test_expired_link_without_refresh_is_reported(tmp_path: Path, files: tuple) -> None:
    from airflow_sora.services import ResultLinkExpiredError

    base, routes = files
    routes["/v.mp4"] = (403, {}, b"<Error>expired</Error>")
    with pytest.raises(ResultLinkExpiredError):
        lander(tmp_path).land(result(f"{base}/v.mp4"), provenance={})
    routes["/fresh.mp4"] = (200, {}, VIDEO)
    landed = lander(tmp_path).land(result(f"{base}/v.mp4"), provenance={}, refresh=lambda url: f"{base}/fresh.mp4")
    assert landed.video.size == len(VIDEO)


@pytest.mark.parametrize("url", [
    "http://cdn.example.com/x.mp4",
    "ftp://cdn.example.com/x.mp4",
    "https://127.0.0.1/x.mp4",
    "https://10.1.2.3/x.mp4",
    "https://192.168.0.10/x.mp4",
    "https://169.254.169.254/latest",
    "https://[::1]/x.mp4",
    "https://[fe80::1]/x.mp4",
    "https://0.0.0.0/x.mp4",
    "file:///etc/passwd",
])
def test_guard_refuses_unsafe_urls(url: str) -> None:
    with pytest.raises(UnsafeResultUrlError):
        check_result_url(url, allow_private=False, resolve=lambda host: [host.strip("[]")])


def test_guard_resolves_names() -> None:
    with pytest.raises(UnsafeResultUrlError, match=r"resolves to non-public address 10\.0\.0\.5"):
        check_result_url("https://cdn.attacker.example/x.mp4", allow_private=False,
                         resolve=lambda host: ["93.184.216.34", "10.0.0.5"])
    check_result_url("https://tempfile.aiquickdraw.com/x.mp4", allow_private=False,
                     resolve=lambda host: ["104.21.3.4"])
    with pytest.raises(UnsafeResultUrlError):  # localhost is loopback through real DNS resolution too
        check_result_url("https://localhost/x.mp4", allow_private=False)


def test_sandbox_hosts_need_the_explicit_switch(tmp_path: Path, files: tuple) -> None:
    base, routes = files
    routes["/v.mp4"] = (200, {}, VIDEO)
    with pytest.raises(UnsafeResultUrlError):
        lander(tmp_path, allow_private=False).land(result(f"{base}/v.mp4"), provenance={})


@pytest.mark.parametrize("post_id", ["../../etc/passwd", "s_" + "a" * 31 + "/", "s_../x", "", "S_" + "a" * 32,
                                     "s_" + "ab" * 16 + "\x00", "/abs/path"])
def test_hostile_post_ids_cannot_name_objects(post_id: str, tmp_path: Path) -> None:
    with pytest.raises(ResultDownloadError, match="refusing to name an object"):
        safe_object_name(post_id)
    with pytest.raises(ResultDownloadError):
        lander(tmp_path).land(result("https://cdn.example.com/x.mp4", post_id=post_id), provenance={})
    assert not (tmp_path / "out").exists()


def test_two_landings_of_one_video_never_mix_their_files(tmp_path: Path, files: tuple) -> None:
    """Two runs land the same post id at once (different bytes each, as two paid tasks give): whichever
    stays, the sidecar beside the video describes that very file."""
    base, routes = files
    bodies = {name: make_mp4(name, 40_000) for name in ("first", "second")}
    for name, body in bodies.items():
        routes[f"/{name}.mp4"] = (200, {"X-Jitter": "0.01"}, body)
    landers = {name: ResultLander(ObjectStoragePath(f"file://{tmp_path}/out/"), allow_private_hosts=True,
                                  holder=f"run-{name}") for name in bodies}
    for _ in range(20):
        threads = [threading.Thread(target=landers[name].land, args=(result(f"{base}/{name}.mp4"),),
                                    kwargs={"provenance": {}}) for name in bodies]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        video = (tmp_path / "out" / f"{POST}.mp4").read_bytes()
        sidecar = json.loads((tmp_path / "out" / f"{POST}.json").read_bytes())
        assert video in bodies.values()
        assert sidecar["sha256"] == hashlib.sha256(video).hexdigest()
    assert published(tmp_path / "out") == [f"{POST}.json", f"{POST}.mp4"]  # every lease was released
    assert list((tmp_path / "out" / "_state" / "_leases").iterdir()) == []


class _Connects(httpcore.NetworkBackend):
    """Records where each connection would go and refuses it: no traffic leaves the machine."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        self.calls.append((host, port))
        raise httpcore.ConnectError("recorded, not connected")


def rebinding(*answers: str) -> tuple[list[str], Callable[[str], list[str]]]:
    """A resolver whose n-th lookup answers ``answers[n]`` (the last one from then on), and its lookups."""
    lookups: list[str] = []

    def resolve(host: str) -> list[str]:
        lookups.append(host)
        return [answers[min(len(lookups), len(answers)) - 1]]
    return lookups, resolve


def pinned_lander(tmp_path: Path, *, allow_private: bool, resolve: Callable[[str], list[str]],
                  connector: httpcore.NetworkBackend | None = None, verify: ssl.SSLContext | bool = True,
                  ) -> ResultLander:
    transport = PinnedTransport(allow_private=allow_private, resolve=resolve, connector=connector, verify=verify)
    return ResultLander(ObjectStoragePath(f"file://{tmp_path}/out/"), allow_private_hosts=allow_private,
                        client=httpx.Client(transport=transport, timeout=5.0))


def test_a_rebinding_host_is_connected_to_at_the_address_that_was_checked(tmp_path: Path) -> None:
    lookups, resolve = rebinding("8.8.8.8", "127.0.0.1")
    connects = _Connects()
    with pytest.raises(ResultDownloadError, match="ConnectError"):
        pinned_lander(tmp_path, allow_private=False, resolve=resolve, connector=connects).land(
            result("https://cdn.rebind.example/v.mp4"), provenance={})
    assert lookups == ["cdn.rebind.example"]  # one lookup for the one connection
    assert connects.calls == [("8.8.8.8", 443)]  # the checked answer, never the second one


def test_a_rebinding_host_answering_private_first_is_refused_before_any_connect(tmp_path: Path) -> None:
    lookups, resolve = rebinding("127.0.0.1", "8.8.8.8")
    connects = _Connects()
    with pytest.raises(UnsafeResultUrlError, match=r"cdn\.rebind\.example.*127\.0\.0\.1.*not globally routable"):
        pinned_lander(tmp_path, allow_private=False, resolve=resolve, connector=connects).land(
            result("https://cdn.rebind.example/v.mp4"), provenance={})
    assert lookups == ["cdn.rebind.example"]
    assert connects.calls == []


def test_every_redirect_hop_is_resolved_once_and_checked(tmp_path: Path, files: tuple) -> None:
    """The test server closes each connection (HTTP/1.0): two hosts, two connections, one lookup each."""
    base, routes = files
    port = base.rsplit(":", 1)[1]
    routes["/v.mp4"] = (200, {}, VIDEO)
    routes["/r"] = (302, {"Location": f"http://cdn-b.sandbox.test:{port}/v.mp4"}, b"")
    lookups: list[str] = []

    def resolve(host: str) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]
    target = ObjectStoragePath(f"file://{tmp_path}/v.mp4")
    landed = pinned_lander(tmp_path, allow_private=True, resolve=resolve).download(
        f"http://cdn-a.sandbox.test:{port}/r", target)
    assert landed.size == len(VIDEO)
    assert lookups == ["cdn-a.sandbox.test", "cdn-b.sandbox.test"]


@pytest.fixture
def tls_files(tmp_path: Path) -> Iterator[tuple[int, ssl.SSLContext, dict[str, tuple[int, dict[str, str], bytes]]]]:
    """An https file server on 127.0.0.1 whose certificate names ``cdn.sandbox.test`` only, and a client
    context trusting its test CA."""
    from tests.integration.tls import certificate_for

    ca_pem, cert_pem, key_pem = certificate_for("cdn.sandbox.test")
    (tmp_path / "cert.pem").write_bytes(cert_pem + key_pem)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "cert.pem")
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Files", (_Files,), {"routes": routes}))
    server.socket = server_context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server.server_address[1], ssl.create_default_context(cadata=ca_pem.decode()), routes
    server.shutdown()
    server.server_close()


def test_tls_is_verified_against_the_host_name_not_the_pinned_address(tmp_path: Path, tls_files: tuple) -> None:
    port, trust, routes = tls_files
    routes["/v.mp4"] = (200, {}, VIDEO)
    target = ObjectStoragePath(f"file://{tmp_path}/v.mp4")
    landed = pinned_lander(tmp_path, allow_private=True, resolve=lambda host: ["127.0.0.1"], verify=trust).download(
        f"https://cdn.sandbox.test:{port}/v.mp4", target)
    assert landed.size == len(VIDEO)
    with pytest.raises(ResultDownloadError, match="ConnectError"):  # same address, a name the cert lacks
        pinned_lander(tmp_path, allow_private=True, resolve=lambda host: ["127.0.0.1"], verify=trust).download(
            f"https://other.sandbox.test:{port}/v.mp4", target)
