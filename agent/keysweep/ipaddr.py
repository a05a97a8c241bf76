"""IP literals as the agent reports them and ``keysweep trail`` matches them: one canonical text per address."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

MAX_ADDRESSES = 16  # interface addresses reported per host: a message stays small whatever the host's network


def canonical_ip(text: object) -> str | None:
    """``text`` as Python writes the address (lower case, IPv6 compressed, no zone), or None if it is not one."""
    try:
        return str(ipaddress.ip_address(str(text).strip().split("%", 1)[0]))
    except ValueError:
        return None


def reachable_addresses(candidates: Iterable[str]) -> tuple[str, ...]:
    """The addresses of ``candidates`` another host could see calls come from: no loopback, link-local, multicast
    or unspecified address; deduplicated; globally routable ones first, then by family and value; at most
    :data:`MAX_ADDRESSES`."""
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for text in candidates:
        canonical = canonical_ip(text)
        if canonical is None:
            continue
        address = ipaddress.ip_address(canonical)
        if address.is_loopback or address.is_link_local or address.is_multicast or address.is_unspecified:
            continue
        found.add(address)
    ordered = sorted(found, key=lambda a: (not a.is_global, a.version, int(a)))
    return tuple(str(a) for a in ordered[:MAX_ADDRESSES])
