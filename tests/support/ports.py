"""Ports for servers a test stops and starts again while clients keep reconnecting to them."""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOCAL_PORT_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 10000


def ephemeral_port_range() -> tuple[int, int]:
    """The kernel's range of source ports for outgoing connections (Linux's default if unknown)."""
    try:
        low, high = LOCAL_PORT_RANGE.read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_ports_outside_ephemeral_range(count: int = 1, *, rng: random.Random | None = None) -> int:
    """The first of `count` consecutive free ports, all outside the kernel's ephemeral range.

    A port inside that range can be taken while its server is down: any outgoing connection may
    get it as its source port, and a client reconnecting to 127.0.0.1:port can connect to itself
    (TCP simultaneous open) when the kernel hands it that very port. The server then cannot bind
    it again (seen in CI: a private broker's restart failed on its own port). Ports outside the
    range (below it, or above it) are never handed out as source ports.
    """
    rng = rng or random.Random()
    low, high = ephemeral_port_range()
    spans = [(start, end) for start, end in ((LOWEST_PORT, low - count), (high + 1, 65536 - count)) if start <= end]
    if not spans:
        raise RuntimeError(f"no room outside the ephemeral range ({low}-{high}) for {count} ports")
    for _ in range(200):
        first = rng.randint(*rng.choice(spans))
        sockets = []
        try:
            for port in range(first, first + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no {count} free consecutive ports outside {low}-{high}")
