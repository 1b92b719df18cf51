"""The test servers (``harness.servers``: real Postgres and Redis, never stand-ins).

A server that is missing skips the test locally and fails it in CI.
"""

from __future__ import annotations

import functools

import pytest

from harness import ROOT
from harness import redis_server as _redis_server
from harness import servers as _servers
from harness.scratch import ScratchDatabase, scratch_name
from harness.servers import CI, ServerMissing

__all__ = [
    "CI",
    "ROOT",
    "admin_pg_url",
    "redis_base_url",
    "redis_server_binary",
    "redis_url",
    "scratch_database",
]


def _skip_if_missing(fn):
    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ServerMissing as exc:
            if CI:
                raise
            pytest.skip(str(exc))

    return call


admin_pg_url = _skip_if_missing(_servers.admin_pg_url)
redis_base_url = _skip_if_missing(_servers.redis_base_url)
redis_url = _skip_if_missing(_servers.redis_url)
redis_server_binary = _skip_if_missing(_redis_server.redis_server_binary)


@_skip_if_missing
def scratch_database(label: str) -> ScratchDatabase:
    """A Postgres database ``ctrtest_<label>_<random>`` that this run created."""
    return ScratchDatabase(_servers.admin_pg_url(), scratch_name(f"ctrtest_{label}"))
