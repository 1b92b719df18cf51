"""Free TCP ports on 127.0.0.1."""

from __future__ import annotations

import random
import socket


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick; another process may take it later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        # As redis-server does; otherwise a just-closed port in TIME_WAIT looks taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_ports(n: int, *, also_free_at: int = 0, lo: int = 20_000, hi: int = 50_000) -> list[int]:
    """``n`` distinct free ports in [lo, hi) such that ``port + also_free_at`` is free too
    (a Redis Cluster node also listens on its bus port, port + 10000)."""
    rnd = random.Random()
    ports: list[int] = []
    while len(ports) < n:
        p = rnd.randrange(lo, hi)
        if p not in ports and port_free(p) and (not also_free_at or port_free(p + also_free_at)):
            ports.append(p)
    return ports
