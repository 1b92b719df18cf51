"""Rewriting server URLs: the database of a Postgres URL, the db number of a Redis URL,
the address (for a proxy in front of a server)."""

from __future__ import annotations

from urllib.parse import urlsplit

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def with_database(url: str, name: str) -> str:
    """``url`` naming the Postgres database ``name`` instead."""
    return urlsplit(url)._replace(path=f"/{name}").geturl()


def with_redis_db(url: str, db: int) -> str:
    """``url`` naming the Redis db number ``db`` instead."""
    return urlsplit(url)._replace(path=f"/{db}").geturl()


def address(url: str, default_port: int) -> tuple[str, int]:
    """(host, port) of the server ``url`` names."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def with_address(url: str, host: str, port: int) -> str:
    """``url`` with another host and port; user, password, path and query kept."""
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{userinfo}{at}{host}:{port}").geturl()


def require_loopback(url: str) -> str:
    """``url`` itself, if it names a server on this machine; else SystemExit."""
    host = urlsplit(url).hostname
    if host not in LOOPBACK:
        raise SystemExit(f"refusing {host!r}: this sends traffic to 127.0.0.1 only")
    return url
