"""The download guard's address verdicts: every non-global range refused, bare or inside an IPv6 wrapper."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_sora.netguard import embedded_ipv4, is_public_address, resolve_checked
from airflow_sora.services import UnsafeResultUrlError

V4, V6 = ipaddress.IPv4Address, ipaddress.IPv6Address

NON_GLOBAL_V4 = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16",
                 "100.64.0.0/10", "192.0.0.0/24", "198.18.0.0/15", "0.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4"]
NON_GLOBAL_V6 = ["::1/128", "fc00::/7", "fe80::/10"]
GLOBAL_V4 = ["8.8.8.8", "1.1.1.1", "9.9.9.9", "208.67.222.222", "93.184.216.34"]
GLOBAL_V6 = ["2606:4700:4700::1111", "2001:4860:4860::8888", "2a00:1450:4001:800::200e"]


def addresses_in(*networks: str) -> st.SearchStrategy[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Any address of any of ``networks``, edges included."""
    def of(network: str) -> st.SearchStrategy[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        net = ipaddress.ip_network(network)
        return st.integers(int(net.network_address), int(net.broadcast_address)).map(ipaddress.ip_address)
    return st.one_of(*(of(network) for network in networks))


def mapped(v4: V4) -> V6:
    return V6((0xFFFF << 32) | int(v4))


def sixtofour(v4: V4, rest: int = 1) -> V6:
    return V6((0x2002 << 112) | (int(v4) << 80) | rest)


def teredo(server: V4, client: V4, flags_and_port: int = 0x8000_63BF) -> V6:
    """RFC 4380: prefix, server, flags, obfuscated port, and the client XOR 0xffffffff."""
    return V6((0x2001_0000 << 96) | (int(server) << 64) | (flags_and_port << 32) | (int(client) ^ 0xFFFFFFFF))


def nat64(v4: V4) -> V6:
    return V6((0x0064_FF9B << 96) | int(v4))


def nat64_local(v4: V4, middle: int = 0) -> V6:
    return V6((0x0064_FF9B_0001 << 80) | (middle << 32) | int(v4))


WRAPPERS: list[Callable[[V4], V6]] = [mapped, sixtofour, nat64, nat64_local,
                                       lambda v4: teredo(V4("8.8.8.8"), v4), lambda v4: teredo(v4, V4("8.8.8.8"))]


@pytest.mark.parametrize("address", ["100.64.0.1", "2002:a9fe:a9fe::1", "192.0.0.8"])
def test_the_addresses_the_guard_once_let_through_are_refused(address: str) -> None:
    assert not is_public_address(address)
    with pytest.raises(UnsafeResultUrlError, match=f"{address}, which is not globally routable"):
        resolve_checked("cdn.example.com", allow_private=False, resolve=lambda host: [address])


@given(addresses_in(*NON_GLOBAL_V4, *NON_GLOBAL_V6))
def test_non_global_addresses_are_refused(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    assert not is_public_address(address)


@given(addresses_in(*NON_GLOBAL_V4), st.sampled_from(WRAPPERS))
def test_non_global_ipv4_is_refused_inside_every_ipv6_wrapper(v4: V4, wrap: Callable[[V4], V6]) -> None:
    assert not is_public_address(wrap(v4))


@given(addresses_in("0.0.0.0/0"))
def test_a_wrapped_ipv4_gets_the_verdict_of_the_bare_one(v4: V4) -> None:
    verdict = is_public_address(v4)
    assert all(is_public_address(wrap(v4)) == verdict
               for wrap in (mapped, sixtofour, nat64, nat64_local, lambda a: teredo(a, a)))


@given(addresses_in("2002::/16"))
def test_any_6to4_address_follows_its_embedded_ipv4(address: V6) -> None:
    assert address.sixtofour is not None
    assert is_public_address(address) == is_public_address(address.sixtofour)


@given(addresses_in(*NON_GLOBAL_V4), addresses_in("8.0.0.0/8"), st.integers(0, 0xFFFF_FFFF))
def test_teredo_needs_both_server_and_client_public(private: V4, public: V4, flags_and_port: int) -> None:
    assert teredo(public, private, flags_and_port).teredo == (public, private)  # the wrapper is RFC 4380's
    assert not is_public_address(teredo(public, private, flags_and_port))
    assert not is_public_address(teredo(private, public, flags_and_port))
    assert is_public_address(teredo(public, public, flags_and_port))


@pytest.mark.parametrize("v4", GLOBAL_V4)
def test_known_global_ipv4_is_allowed_bare_and_wrapped(v4: str) -> None:
    address = V4(v4)
    assert is_public_address(address)
    for wrap in (mapped, sixtofour, nat64, nat64_local):
        assert is_public_address(wrap(address)), wrap(address)
        assert embedded_ipv4(wrap(address)) == (address,)


@pytest.mark.parametrize("v6", GLOBAL_V6)
def test_known_global_ipv6_is_allowed(v6: str) -> None:
    assert is_public_address(v6)
    assert embedded_ipv4(V6(v6)) is None


@pytest.mark.parametrize("address", ["::", "0.0.0.0", "ff02::1", "ff0e::1", "255.255.255.255", "192.0.2.1",
                                     "2001:db8::1", "64:ff9b::1:0:0:808:808", "::808:808", "fe80::1%eth0"])
def test_special_purpose_addresses_are_refused(address: str) -> None:
    assert not is_public_address(address)


def test_one_bad_answer_refuses_the_host() -> None:
    with pytest.raises(UnsafeResultUrlError, match=r"cdn\.example\.com.*10\.0\.0\.5"):
        resolve_checked("cdn.example.com", allow_private=False, resolve=lambda host: ["93.184.216.34", "10.0.0.5"])
    answers = resolve_checked("cdn.example.com", allow_private=False,
                              resolve=lambda host: ["93.184.216.34", "2606:4700::1", "93.184.216.34"])
    assert answers == (V4("93.184.216.34"), V6("2606:4700::1"))
    assert resolve_checked("sandbox", allow_private=True, resolve=lambda host: ["127.0.0.1"]) == (V4("127.0.0.1"),)
