"""Spool files whose process died (:mod:`engine.spool`): the kernel drops the lock of a
dead process, so a survivor (another process' push thread, a new process at its start,
or :func:`engine.spool.drain`) takes the orphaned file over, pushes what of it Redis
does not hold by the spool's fences, and deletes it.

A Redis that went back may have lost fences of views it had added (and a flush
applied): views the dead owner had sent to a Redis that restarted since are counted as
unknown, never sent again (:func:`push_contents`).

Fences of deleted spools are removed by :func:`sweep_fences` once they have been seen
without a file twice, one sweep apart (a push still travelling when its file went must
find its fence).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections import Counter
from pathlib import Path

from .errors import CounterError, redis_errors
from .keys import spool_fences
from .spool_files import PARTIAL, SUFFIX
from .spool_format import Contents, intent, parse
from .spool_push import PUSH_ROUNDS, Part, Pusher, Status

log = logging.getLogger("engine.spool")  # the spool logs under one name, whichever part

PARTIAL_TTL_S = 60.0  # a ".new" file this old was left by a process that died creating it


def push_contents(pusher: Pusher, spool: str, contents: Contents, fd: int) -> int | None:
    """Push what of ``contents`` (an orphan's, open as ``fd``) Redis does not hold, by
    the spool's fences: the views added, or None when some could not be pushed now
    (Redis or Postgres unavailable).

    Views its owner had sent when it died are pushed by the fences too, unless Redis
    restarted since (another identity): its fences may have gone back then, while the
    views they covered were added and flushed, so those views are counted as unknown
    instead (never twice). This push's own intent goes in the file first."""
    identity = pusher.identity()
    os.write(fd, intent(contents.end, identity))
    doubtful = contents.sent if contents.sent_to != identity else 0
    added = 0
    for _ in range(PUSH_ROUNDS):
        parts, _, unknown = unpushed(pusher, spool, contents, contents.end, doubtful)
        pusher.push(parts)
        added += sum(sum(p.views.values()) - p.dropped for p in parts if p.status is Status.ADDED)
        if all(p.status.done for p in parts):
            if unknown:
                log.warning(
                    "spool %s: %d views sent before Redis restarted may or may not have "
                    "been counted",
                    spool,
                    unknown,
                )
                pusher.counters.stats.record_unknown(unknown)
            return added
        if any(p.status is Status.WAITING for p in parts):
            return None
        # out of step: a push of the dead owner landed meanwhile; read the fences again
    return None


def unpushed(pusher: Pusher, spool: str, contents: Contents, upto: int, doubtful: int = 0):
    """Per shard, a part of the views before ``upto`` that its fence does not cover
    (nor the spool's checkpoint), following that fence; the fences; and how many of
    those views lie before ``doubtful`` (left out of the parts)."""
    fences = pusher.fences(spool)
    start = {s: max(f, contents.checkpoint) for s, f in fences.items()}
    views: dict[int, Counter] = {}
    unknown = 0
    for offset, code, row_id, n in contents.views:
        s = pusher.keys.shard_of(row_id)
        if start[s] <= offset < upto:
            if offset < doubtful:
                unknown += n
            else:
                views.setdefault(s, Counter())[(code, row_id)] += n
    parts = [Part(spool, s, fences[s], upto, v) for s, v in sorted(views.items())]
    return parts, fences, unknown


def take_over(pusher: Pusher, path: Path) -> int | None:
    """Push an orphaned spool file and delete it: the views added, or None when it is
    not an orphan (its owner lives, another survivor has it) or could not be finished
    now (it is left for the next try)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # its owner is alive
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # another survivor pushed and deleted it meanwhile
            return None
        size = os.fstat(fd).st_size
        contents = parse(os.pread(fd, size, 0))
        if contents is None:  # its header torn: it never held an answered view
            path.unlink()
            return 0
        keys = pusher.keys
        if (contents.scope, contents.shards) != (keys.scope, keys.shards):
            log.warning(
                "spool %s is of scope %s with %d shards: left alone",
                path,
                contents.scope,
                contents.shards,
            )
            return None
        spool = path.name[: -len(SUFFIX)]
        if contents.end < size:  # the torn tail goes: this push's intent follows the views
            os.ftruncate(fd, contents.end)
        added = push_contents(pusher, spool, contents, fd)
        if added is None:
            return None
        path.unlink()
        record = {"event": "spool_taken_over", "spool": spool, "views_added": added}
        record["torn_bytes"] = size - contents.end
        log.info("%s", json.dumps(record))
        return added
    except (CounterError, OSError) as exc:
        log.warning("spool %s not taken over now: %s", path, exc)
        return None
    finally:
        os.close(fd)


def adopt_orphans(pusher: Pusher, directory: Path) -> int:
    """Take over every orphaned spool file of ``directory`` (see :func:`take_over`);
    removes ``.new`` files of processes that died creating one. Returns views added."""
    added = 0
    now = time.time()
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if entry.name.endswith(SUFFIX):
            added += take_over(pusher, Path(entry.path)) or 0
        elif entry.name.endswith(PARTIAL):
            with contextlib.suppress(OSError):
                if now - entry.stat().st_mtime > PARTIAL_TTL_S:
                    os.unlink(entry.path)
    return added


def sweep_fences(pusher: Pusher, directory: Path, token: str, seen: set[str]) -> set[str]:
    """Remove the fences of this directory's spools whose file is gone and was gone
    at the previous sweep (``seen``, what that sweep returned); returns those gone now."""
    keys = pusher.keys
    with redis_errors("spool fences"):
        pipe = pusher.buffer.redis.pipeline(transaction=False)
        for s in range(keys.shards):
            pipe.hkeys(spool_fences(keys, s))
        found = pipe.execute()
    prefix = f"{token}-"
    gone_now: set[str] = set()
    remove: dict[int, list[str]] = {}
    for s, ids in enumerate(found):
        for raw in ids:
            spool = raw.decode() if isinstance(raw, bytes) else raw
            if not spool.startswith(prefix) or (directory / f"{spool}{SUFFIX}").exists():
                continue
            if spool in seen:
                remove.setdefault(s, []).append(spool)
            else:
                gone_now.add(spool)
    if remove:
        with redis_errors("spool fences"):
            pipe = pusher.buffer.redis.pipeline(transaction=False)
            for s, ids in remove.items():
                pipe.hdel(spool_fences(keys, s), *ids)
            pipe.execute()
    return gone_now
