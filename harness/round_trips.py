"""Counting the Redis round trips a piece of code makes, in process: every command (or
pipeline) redis-py sends, and every command of the engine's lean script connection
(engine/wire.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.connection import AbstractConnection

from engine.wire import Wire


@contextmanager
def counting_round_trips() -> Iterator[list[bytes]]:
    """Within the block, the list yielded gets each command sent, in order."""
    sent: list[bytes] = []
    pyredis, wire = AbstractConnection.send_packed_command, Wire._round_trip

    def via_redis_py(self, command, check_health=True):
        sent.append(command)
        return pyredis(self, command, check_health)

    def via_wire(self, conn, payload):
        if payload:  # an empty one reads the next reply of a pipeline sent before
            sent.append(payload)
        return wire(self, conn, payload)

    AbstractConnection.send_packed_command = via_redis_py
    Wire._round_trip = via_wire
    try:
        yield sent
    finally:
        AbstractConnection.send_packed_command = pyredis
        Wire._round_trip = wire
