"""The bytes of a view spool file (:mod:`engine.spool`): a header (magic, shard count,
scope, CRC), then fixed-size records, each a CRC-32 and (counter code, row id, views), or
an intent (views up to an offset are being sent, to the Redis of a given identity), or a
checkpoint (all views before an offset are in). A record torn by a kill fails its CRC:
it, and anything after it, is ignored; its view was never answered.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

MAGIC = b"CVS1"
HEADER = struct.Struct("<4sI32s")  # magic, shard count, scope; then its CRC-32
HEADER_SIZE = HEADER.size + 4
BODY = struct.Struct("<8sqI")  # counter code, row id (a checkpoint: offset), views
RECORD_SIZE = 4 + BODY.size  # CRC-32 of the body, then the body
CHECKPOINT = b"\0" * 8  # the code of a checkpoint record (codes are alphanumeric)
INTENT = b"\0" * 7 + b"\1"  # the code of a record "sending views up to here"


def _crc(data: bytes) -> bytes:
    return struct.pack("<I", zlib.crc32(data))


def header(scope: str, shards: int) -> bytes:
    body = HEADER.pack(MAGIC, shards, scope.encode())
    return body + _crc(body)


def record(code: str, row_id: int, n: int = 1) -> bytes:
    body = BODY.pack(code.encode(), row_id, n)
    return _crc(body) + body


def checkpoint(offset: int) -> bytes:
    body = BODY.pack(CHECKPOINT, offset, 0)
    return _crc(body) + body


def intent(offset: int, redis_id: int) -> bytes:
    """ "Views up to ``offset`` are being sent to the Redis whose identity is
    ``redis_id``" (:meth:`engine.spool_push.Pusher.identity`), written before they are."""
    body = BODY.pack(INTENT, offset, redis_id)
    return _crc(body) + body


@dataclass
class Contents:
    """What a spool file holds, up to its first torn or corrupt record."""

    scope: str
    shards: int
    end: int  # offset after the last whole record
    checkpoint: int  # every view before this offset was in Redis (its owner said so)
    views: list[tuple[int, str, int, int]]  # (offset, code, row id, n)
    sent: int = 0  # views before this offset were sent (the last intent), maybe added
    sent_to: int = 0  # the identity of the Redis they were sent to


def parse(data: bytes) -> Contents | None:
    """The contents of a spool file; None when even its header is torn."""
    if len(data) < HEADER_SIZE or _crc(data[: HEADER.size]) != data[HEADER.size : HEADER_SIZE]:
        return None
    magic, shards, scope = HEADER.unpack_from(data)
    if magic != MAGIC:
        return None
    offset, mark, views, sent, sent_to = HEADER_SIZE, HEADER_SIZE, [], 0, 0
    while offset + RECORD_SIZE <= len(data):
        body = data[offset + 4 : offset + RECORD_SIZE]
        if _crc(body) != data[offset : offset + 4]:
            break  # torn by the kill (or the machine's crash): it and what follows
        code, row_id, n = BODY.unpack(body)
        if code == CHECKPOINT:
            mark = row_id
        elif code == INTENT:
            sent, sent_to = row_id, n
        else:
            views.append((offset, code.rstrip(b"\0").decode(), row_id, n))
        offset += RECORD_SIZE
    scope = scope.rstrip(b"\0").decode()
    return Contents(scope, shards, offset, mark, views, sent, sent_to)
