"""Which addresses a client's ``image_url`` may reach: the SSRF policy, pure functions.

``literal_address`` reads a URL host the way a resolver would if it is an IP literal in
any notation (``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``, ``[::ffff:7f00:1]``),
so no notation can slip past the checks as a "name". ``address_problem`` says why an
address is not public, looking inside IPv6 forms that embed an IPv4 address.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NUMBER = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)$")

# Cloud instance-metadata endpoints: refused even if a broader allowlist covers them.
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.253",  # AWS DNS resolver
        "168.63.129.16",  # Azure WireServer (a public address)
        "100.100.100.200",  # Alibaba Cloud
        "fd00:ec2::254",  # AWS IPv6
        "fd00:ec2::253",
    )
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
# Special-purpose blocks that older Pythons' is_private/is_global miss (3.11.7 calls
# 192.0.0.8 global); refused whatever the interpreter thinks.
_SPECIAL = (ipaddress.ip_network("192.0.0.0/24"), ipaddress.ip_network("2001::/23"))
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_TEREDO = ipaddress.ip_network("2001::/32")


class BadHost(ValueError):
    """A host that looks numeric but is not a valid address in any notation."""


def _ipv4_number(text: str) -> int:
    if text[:2] in ("0x", "0X"):
        return int(text[2:] or "0", 16)
    if len(text) > 1 and text.startswith("0"):
        if not set(text) <= set("01234567"):
            raise BadHost(text)
        return int(text, 8)
    return int(text)


def literal_address(host: str) -> IPAddress | None:
    """The address a host denotes if it is an IP literal; None for a name.

    Follows inet_aton and the WHATWG URL rules: one to four parts, each decimal,
    octal (leading 0) or hex (0x); the last part fills the remaining bytes. A host whose
    last label is numeric but is no valid address raises ``BadHost``.
    """
    host = host.rstrip(".")
    if ":" in host:
        try:
            return ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            raise BadHost(host) from None
    parts = host.split(".")
    if not parts or not _NUMBER.match(parts[-1]):
        return None
    if len(parts) > 4 or not all(_NUMBER.match(p) for p in parts):
        raise BadHost(host)
    numbers = [_ipv4_number(p) for p in parts]
    last_bits = 8 * (5 - len(numbers))
    if any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 1 << last_bits:
        raise BadHost(host)
    value = 0
    for n in numbers[:-1]:
        value = value << 8 | n
    value = value << last_bits | numbers[-1]
    return ipaddress.IPv4Address(value)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in _NAT64) or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_problem(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public unicast address, or None if it is one."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "a scoped IPv6 address"
        if ip in _TEREDO:
            return "a Teredo address"
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            problem = address_problem(embedded)
            return f"{problem} (embedded in an IPv6 address)" if problem else None
        if ip.is_site_local:
            return "a site-local address"
    if ip in METADATA:
        return "a cloud metadata address"
    checks = (
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip in _CGNAT, "a shared (CGNAT) address"),
        (ip.is_reserved, "a reserved address"),
        (ip.is_private, "a private address"),
        (any(ip in net for net in _SPECIAL), "a special-purpose address"),
        (not ip.is_global, "not a globally routable address"),
    )
    for failed, reason in checks:
        if failed:
            return reason
    return None


class Allowlist:
    """Hosts and networks an operator lets the gateway reach although not public."""

    def __init__(self, hosts: Iterable[str], networks: Iterable[str]) -> None:
        self._hosts = frozenset(h.lower().rstrip(".") for h in hosts)
        self._networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)

    def host(self, host: str) -> bool:
        """``images.corp`` allows that name; ``.corp`` allows every name under it."""
        host = host.lower().rstrip(".")
        if host in self._hosts:
            return True
        return any(h.startswith(".") and host.endswith(h) for h in self._hosts)

    def network(self, ip: IPAddress) -> bool:
        return any(ip in net for net in self._networks)


def refusal(ip: IPAddress, *, host_allowed: bool, allow: Allowlist) -> str | None:
    """Why the gateway must not connect to ``ip``; None if it may."""
    if allow.network(ip):
        return None
    if ip in METADATA:
        return "a cloud metadata address"
    if host_allowed:
        return None
    return address_problem(ip)
