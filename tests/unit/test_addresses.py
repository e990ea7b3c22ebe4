"""The SSRF address policy: literal notations, address classes, allowlists."""

from __future__ import annotations

import ipaddress

import pytest

from proxy.addresses import (
    Allowlist,
    BadHost,
    address_problem,
    literal_address,
    refusal,
)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F.0.0.1", "127.0.0.1"),
        ("0177.0.0.01", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("10.0x10.1", "10.16.0.1"),
        ("0x", "0.0.0.0"),
        ("0", "0.0.0.0"),
        ("1.2.3.4.", "1.2.3.4"),
        ("[::1]", "::1"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1"),
        ("fe80::1%eth0", "fe80::1%eth0"),
        ("images.example", None),
        ("1.2.3.example", None),
        ("1.0x1g", None),  # not a number, so a name (which will not resolve)
    ],
)
def test_literal_address(host: str, address: str | None) -> None:
    got = literal_address(host)
    assert (None if got is None else str(got)) == address


@pytest.mark.parametrize(
    "host",
    ["1.2.3.256", "256.1.1", "1.2.3.4.5", "08.1.1.1", "example.0x", "::zz", "a.1"],
)
def test_numeric_hosts_that_are_no_address(host: str) -> None:
    # "a.1" ends in a number, so it must be an address (WHATWG), and it is not one.
    with pytest.raises(BadHost):
        literal_address(host)


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
        ("2002:808:808::1", None),  # 6to4 around a public address
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::808:808", None),
        ("127.0.0.1", "loopback"),
        ("::ffff:127.0.0.1", "loopback address (embedded"),
        ("::127.0.0.1", "loopback address (embedded"),
        ("64:ff9b:1::a00:1", "private address (embedded"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("100.64.1.1", "CGNAT"),
        ("192.0.0.8", "special-purpose"),
        ("192.0.0.9", "special-purpose"),
        ("2001:2::1", "a"),
        ("198.18.0.1", "private"),
        ("fec0::1", "site-local"),
        ("fe80::1%2", "scoped"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
        ("2001:db8::1", "private"),
        ("::", "unspecified"),
        ("ff02::1", "multicast"),
        ("239.1.1.1", "multicast"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_address_problem(address: str, problem: str | None) -> None:
    got = address_problem(ipaddress.ip_address(address))
    if problem is None:
        assert got is None
    else:
        assert got is not None
        assert problem in got


def test_allowlist_hosts_networks_and_metadata() -> None:
    allow = Allowlist(
        ["Images.Corp.", ".store.corp"], ["10.0.0.0/8", "169.254.169.254"]
    )
    assert allow.host("images.corp")
    assert allow.host("a.b.store.corp")
    assert not allow.host("store.corp.evil")
    assert not allow.host("other.corp")
    private = ipaddress.ip_address("192.168.1.1")
    assert refusal(private, host_allowed=True, allow=allow) is None
    assert refusal(private, host_allowed=False, allow=allow) == "a private address"
    assert (
        refusal(ipaddress.ip_address("10.9.9.9"), host_allowed=False, allow=allow)
        is None
    )
    metadata = ipaddress.ip_address("169.254.169.254")
    # An allowed host never reaches metadata; only an explicit network entry does.
    assert refusal(metadata, host_allowed=True, allow=Allowlist([], [])) is not None
    assert refusal(metadata, host_allowed=False, allow=allow) is None
