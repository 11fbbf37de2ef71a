"""What a machine says about itself for a checklist's target data: names and addresses.

Read from the kernel (`/sys/class/net`, `/proc/net/if_inet6`, the SIOCGIFADDR ioctl) and
the resolver, never from a command, so the probe can report it from any target.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import socket
import struct
from typing import Final

__all__ = ["host_facts"]

_NET: Final = "/sys/class/net"
_SIOCGIFADDR: Final = 0x8915
_IFNAMSIZ: Final = 16


def _interfaces() -> list[str]:
    try:
        return sorted(os.listdir(_NET))
    except OSError:
        return []


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _macs(interfaces: list[str]) -> list[str]:
    macs: list[str] = []
    for name in interfaces:
        # Type 1 is ARPHRD_ETHER; loopback (772), tunnels and the like have no real MAC.
        # An interface that is down (an unused ifb or dummy) identifies nothing.
        if _read(f"{_NET}/{name}/type") != "1" or _read(f"{_NET}/{name}/operstate") == "down":
            continue
        mac = _read(f"{_NET}/{name}/address")
        if mac and mac != "00:00:00:00:00:00":
            macs.append(mac)
    return list(dict.fromkeys(macs))


def _ipv4(name: str) -> str | None:
    # fsencode: an interface name may hold any byte but `/`, `:` and blanks (not UTF-8).
    request = struct.pack("256s", os.fsencode(name)[: _IFNAMSIZ - 1])
    with (
        contextlib.suppress(OSError),
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
    ):
        answer = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)
        return socket.inet_ntoa(answer[20:24])
    return None


def _ipv6() -> list[str]:
    found: list[str] = []
    for line in _read("/proc/net/if_inet6").splitlines():
        words = line.split()
        if len(words) < 6:
            continue
        with contextlib.suppress(ValueError):
            address = ipaddress.IPv6Address(bytes.fromhex(words[0]))
            if not (address.is_loopback or address.is_link_local):
                found.append(str(address))
    return found


def _addresses(interfaces: list[str]) -> list[str]:
    found: list[str] = []
    for name in interfaces:
        address = _ipv4(name)
        if address is not None and not ipaddress.IPv4Address(address).is_loopback:
            found.append(address)
    found.extend(_ipv6())
    return list(dict.fromkeys(found))


def _fqdn(hostname: str) -> str:
    """The resolver's canonical name, when it is a real domain name (else empty)."""
    try:
        fqdn = socket.getfqdn(hostname)
    except OSError:
        return ""
    if "." not in fqdn or fqdn.startswith("localhost"):
        return ""
    return fqdn


def host_facts() -> dict[str, object]:
    """This machine's host name, FQDN, IP addresses and MAC addresses.

    Returns:
        `{"hostname": str, "fqdn": str, "ips": [str], "macs": [str]}`; loopback and
        link-local addresses are left out, and an FQDN the resolver does not know is empty.
    """
    hostname = socket.gethostname()
    interfaces = _interfaces()
    return {
        "hostname": hostname,
        "fqdn": _fqdn(hostname),
        "ips": _addresses(interfaces),
        "macs": _macs(interfaces),
    }
