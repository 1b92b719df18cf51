"""The view spool: coalesced views that survive a SIGKILL of their web process
(``COUNTERS_COALESCE_SPOOL_DIR``, with ``COUNTERS_COALESCE_MS``).

Each process appends every view it tallies to a file of its own before the view is
answered, and holds the file with ``flock``. The page cache keeps what was written
when the process dies; only a machine crash loses what was not fdatasync'ed (once per
push interval, as Redis' ``appendfsync everysec``). The kernel drops the lock of a dead
process, so a survivor (another process' push thread, a new process at its start, or
:func:`drain`) takes the orphaned file over and pushes what is in it.

The push is fenced. Each shard keeps, per spool, the offset up to which it holds the
spool's views (``{ctr:7}:spool``, spool id -> offset), and the script that adds a
shard's part of a push (``lua/spool.lua``) moves that offset in the same atomic step.
A part names the offset it follows and the one it brings the shard to; one that is
already covered adds nothing. So a push whose reply was lost is simply sent again,
and a survivor pushing an orphan's tail never adds what its owner had pushed.

The file: a header (magic, shard count, scope, CRC), then fixed-size records, each a
CRC-32 and (counter code, row id, views), or an intent (views up to an offset are being
sent, to the Redis of a given identity), or a checkpoint (all views before an offset
are in). A Redis that went back may have lost fences of views it had added (and a
flush applied): a push that may have been added is then counted as unknown, never
sent again (:meth:`SpooledCoalescer._rebase`, :func:`push_contents`). A record torn
by the kill fails its CRC: it, and anything after it, is ignored; its view was never
answered.

A spool file whose views are all in is deleted (a process also starts a new one once
its file is ``ROTATE_BYTES`` long). Fences of deleted spools are removed by
:func:`sweep_fences` once they have been seen without a file twice, ``SWEEP_S`` apart
(a push still travelling when its file went must find its fence).
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import fcntl
import json
import logging
import os
import secrets
import struct
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .buffer import LAYOUT_CHANGED, LAYOUT_UNKNOWN, RoundTrip, _load, now_ms
from .coalesce import KNOWN_MAX, KNOWN_TTL_S, ViewCoalescer
from .errors import BufferUnavailable, CounterError, StoreUnavailable, redis_errors
from .keys import field as delta_field
from .keys import spool_fences

log = logging.getLogger(__name__)

MAGIC = b"CVS1"
HEADER = struct.Struct("<4sI32s")  # magic, shard count, scope; then its CRC-32
HEADER_SIZE = HEADER.size + 4
BODY = struct.Struct("<8sqI")  # counter code, row id (a checkpoint: offset), views
RECORD_SIZE = 4 + BODY.size  # CRC-32 of the body, then the body
CHECKPOINT = b"\0" * 8  # the code of a checkpoint record (codes are alphanumeric)
INTENT = b"\0" * 7 + b"\1"  # the code of a record "sending views up to here"
SUFFIX = ".spool"
PARTIAL = ".new"  # a spool file being created (its header not yet written)
TOKEN_FILE = "spool.id"  # names the directory: its spools' ids start with it

ROTATE_BYTES = 1 << 20  # a process starts a new spool file past this size (~43k views)
ADOPT_EVERY_S = 1.0  # how often a push thread looks for orphaned spool files
SWEEP_S = 60.0  # how often it sweeps the fences of deleted spools (seen twice: removed)
PARTIAL_TTL_S = 60.0  # a ".new" file this old was left by a process that died creating it
PUSH_ROUNDS = 3  # rounds of a push whose rows Redis' existence index does not show


# -- the file ----------------------------------------------------------------------


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
    ``redis_id``" (:meth:`Pusher.identity`), written before they are."""
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


def dir_token(directory: Path) -> str:
    """The directory's token (made by the first process to ask): the prefix of the
    ids of its spools, so a sweep removes only fences of spools it can see."""
    path = directory / TOKEN_FILE
    if not path.exists():
        tmp = directory / f".{TOKEN_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        tmp.write_text(secrets.token_hex(6) + "\n")
        try:
            os.link(tmp, path)  # atomic: the first one wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolFile:
    """A process' own spool file, locked (``flock``) for as long as the process lives."""

    def __init__(self, directory: Path, token: str, scope: str, shards: int) -> None:
        self.id = f"{token}-{os.getpid()}-{secrets.token_hex(4)}"
        self.path = directory / f"{self.id}{SUFFIX}"
        partial = directory / f"{self.id}{PARTIAL}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        fd = os.open(partial, flags, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # new: nobody else has it
            os.write(fd, header(scope, shards))
            os.rename(partial, self.path)  # found by survivors only from now on, whole
            _sync_dir(directory)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                partial.unlink()
            raise
        self.fd = fd
        self.size = HEADER_SIZE
        self.chain: dict[int, int] = {}  # shard -> the fence its next part follows (0: none)
        self.mark = HEADER_SIZE  # the last checkpoint written

    def append(self, data: bytes) -> None:
        """Write whole records; OSError (the file cut back to its last whole record)
        when the disk refuses them."""
        try:
            written = os.write(self.fd, data)
        except OSError:
            self._cut()
            raise
        if written != len(data):
            self._cut()
            raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
        self.size += len(data)

    def _cut(self) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, self.size)

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def delete(self) -> None:
        """Every view in it is in Redis: remove it."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.fd)

    def abandon(self) -> None:
        """Let go of it with views not yet in: a survivor takes it over."""
        os.close(self.fd)


# -- the fenced push ---------------------------------------------------------------


class Status(enum.Enum):
    ADDED = "added"  # the part's views were added, the fence moved to its end
    ALREADY = "already"  # the fence was past the part already: nothing added
    OUT_OF_STEP = "out_of_step"  # the fence is elsewhere: nothing added
    WAITING = "waiting"  # rows Postgres could not be asked about: nothing added

    @property
    def done(self) -> bool:
        return self in (Status.ADDED, Status.ALREADY)


@dataclass
class Part:
    """One shard's views of one spool's offsets ``[follows, upto)``."""

    spool: str
    shard: int
    follows: int
    upto: int
    views: Counter = field(default_factory=Counter)  # (code, row id) -> n
    status: Status | None = None
    fence: int = 0  # the fence Redis reported (ALREADY, OUT_OF_STEP)
    gone: set = field(default_factory=set)  # (code, row id) of rows found deleted
    dropped: int = 0  # their views (not added)
    uncertain: bool = False  # in a push whose replies were lost: maybe added
    sent_to: int | None = None  # the identity of the Redis it was last sent to


class Pusher:
    """Sends parts of spools to Redis through ``lua/spool.lua``."""

    def __init__(self, counters) -> None:
        self.counters = counters
        self.buffer = counters.buffer
        self.keys = counters.keys
        self.script = self.buffer.redis.register_script(_load("spool.lua"))

    def identity(self) -> int:
        """A checksum of the run ids of the Redis servers: it changes whenever one of
        them restarts (maybe from an older state) or another takes its place."""
        with redis_errors("redis identity"):
            info = self.buffer.redis.info("server")
        if "run_id" in info:
            ids = [info["run_id"]]
        else:  # a cluster: one reply per node
            ids = sorted(v["run_id"] for v in info.values() if isinstance(v, dict))
        return zlib.crc32(",".join(ids).encode())

    def fence_key(self, shard: int) -> str:
        """The shard's hash of spool fences (spool id -> offset)."""
        return spool_fences(self.keys, shard)

    def fences(self, spool: str) -> dict[int, int]:
        """Per shard, the offset of ``spool`` up to which the shard holds its views."""
        with redis_errors("spool fences"):
            pipe = self.buffer.redis.pipeline(transaction=False)
            for s in range(self.keys.shards):
                pipe.hget(spool_fences(self.keys, s), spool)
            return {s: int(v or 0) for s, v in enumerate(pipe.execute())}

    def push(self, parts: list[Part]) -> None:
        """Send ``parts`` (one round trip, one more per round of Postgres checks) and set
        each one's ``status``. Parts of one shard and spool go in the order given.
        BufferUnavailable when Redis did not answer: some parts may have been added;
        sending them again adds nothing twice."""
        for part in parts:
            part.status, part.gone, part.dropped = None, set(), 0
        confirmed: set[tuple[str, int]] = set()  # rows Postgres has, whatever the index says
        gone: set[tuple[str, int]] = set()  # rows Postgres does not have
        todo = [p for p in parts if p.views or p.upto > p.follows]
        for _ in range(PUSH_ROUNDS):
            calls = [self._call(p, confirmed, gone) for p in todo]
            replies = self._run([c[:2] for c in calls])
            unseen: list[tuple[Part, list, list[int]]] = []
            for part, (_, _, entries), reply in zip(todo, calls, replies, strict=True):
                status = int(reply[0])
                if status == 0:
                    part.status, part.fence = Status.ADDED, part.upto
                    part.gone = {k for k in part.views if k in gone}
                    part.dropped = sum(part.views[k] for k in part.gone)
                elif status in (1, 2):
                    part.status = Status.ALREADY if status == 1 else Status.OUT_OF_STEP
                    part.fence = int(reply[1])
                else:  # 3: rows the index does not show
                    unseen.append((part, entries, [int(i) for i in reply[1:]]))
            if not unseen:
                return
            try:
                self._ask_postgres(unseen, confirmed, gone)
            except StoreUnavailable:
                log.warning("spooled views wait for Postgres", exc_info=True)
                break
            todo = [part for part, _, _ in unseen]
        for part in todo:
            if part.status is None:
                part.status = Status.WAITING

    def _ask_postgres(self, unseen, confirmed: set, gone: set) -> None:
        """Sort the rows the index did not show into ``confirmed`` and ``gone``; mark
        rows that exist but a loaded index missed (Redis back from an old dump)."""
        asked: dict[str, set[int]] = {}
        stale: dict[str, set[int]] = {}
        for _, entries, numbers in unseen:
            for i in numbers:
                code, row_id, table = entries[abs(i) - 1]
                asked.setdefault(table, set()).add(row_id)
                if i > 0:
                    stale.setdefault(table, set()).add(row_id)
        existence = self.counters.existence
        found = {table: existence.stored(table, ids) for table, ids in asked.items()}
        for _, entries, numbers in unseen:
            for i in numbers:
                code, row_id, table = entries[abs(i) - 1]
                (confirmed if row_id in found[table] else gone).add((code, row_id))
        for table, ids in stale.items():
            if ids & found[table]:
                try:
                    existence.mark(table, ids & found[table])
                except CounterError:
                    log.warning("could not mark %s rows again in the index", table)

    def _call(self, part: Part, confirmed: set, gone: set):
        k, s = self.keys, part.shard
        keys = [k.pending(s), k.accepted(s), k.gen(s), k.seq(s), k.layout(s), spool_fences(k, s)]
        slots: dict[str, int] = {}

        def slot(key: str) -> int:
            if key not in slots:
                keys.append(key)
                slots[key] = len(keys)
            return slots[key]

        args: list = [now_ms(), self.buffer.gen_token, k.shards, part.spool, part.follows]
        args += [part.upto, self.buffer.bucketed_codes]
        entries = []
        registry = self.counters.registry
        for (code, row_id), n in part.views.items():
            counter = registry.by_code(code)
            if counter is None or (code, row_id) in gone or not n:
                if counter is None:
                    log.error("spooled views of unknown counter code %r dropped", code)
                continue
            bits = far = 0
            where = k.exists_offset(row_id)
            if (code, row_id) not in confirmed:
                bits = slot(k.exists(s, counter.table))
                if not k.in_bitmap(row_id):
                    far, where = slot(k.exists_sparse(s, counter.table)), row_id
            args += [delta_field(row_id, code), n, bits, far, where]
            entries.append((code, row_id, counter.table))
        return keys, args, entries

    def _run(self, calls: list[tuple[list, list]]) -> list:
        if not calls:
            return []
        with redis_errors("spool push"):
            trip = RoundTrip(self.buffer.redis)
            for keys, args in calls:
                trip.script(self.script, keys, args)
            replies = trip.execute()
            unknown = [i for i, r in enumerate(replies) if int(r[0]) == LAYOUT_UNKNOWN]
            if unknown:  # nothing was written: set the layout up, send those again
                self.buffer.on_unknown_layout()
                again = RoundTrip(self.buffer.redis)
                for i in unknown:
                    again.script(self.script, *calls[i])
                for i, reply in zip(unknown, again.execute(), strict=True):
                    replies[i] = reply
        if any(int(r[0]) in (LAYOUT_CHANGED, LAYOUT_UNKNOWN) for r in replies):
            self.buffer.outcome(LAYOUT_CHANGED)  # raises LayoutMismatch
        return replies


# -- orphans -------------------------------------------------------------------------


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
        parts, _, unknown = _unpushed(pusher, spool, contents, contents.end, doubtful)
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


def _unpushed(pusher: Pusher, spool: str, contents: Contents, upto: int, doubtful: int = 0):
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


def drain(counters, directory: str | Path) -> int:
    """Push every spool file of ``directory`` whose process is gone, and delete them:
    for after the web processes were stopped (say, before a reshard), or a check.
    Returns the views added; files of live processes are left to them."""
    return adopt_orphans(Pusher(counters), Path(directory))


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


# -- the coalescer with a spool ------------------------------------------------------


class SpooledCoalescer(ViewCoalescer):
    """A :class:`ViewCoalescer` whose tallied views are in a spool file before they are
    answered; pushes are fenced, so one whose replies are lost is sent again."""

    def __init__(
        self,
        counters,
        interval_s: float,
        directory: str | Path,
        known_ttl_s: float = KNOWN_TTL_S,
    ) -> None:
        super().__init__(counters, interval_s, known_ttl_s)
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.token = dir_token(self.directory)  # fails at startup on a bad directory
        self.pusher = Pusher(counters)
        self.spool: SpoolFile | None = None
        self.retired: list[SpoolFile] = []  # full files whose last views are on their way
        self.batches: list[list[Part]] = []  # sent, not known to be in: oldest first
        self.records: dict[tuple[str, int], bytes] = {}  # (name, row id) -> its record
        self.identity: int | None = None  # of the Redis pushed to (Pusher.identity)
        self.adopted = 0  # views added from orphaned spools
        self.sweep_seen: set[str] = set()
        self.next_adopt = self.next_sweep = 0.0
        try:  # what dead processes left (a new gunicorn worker: the one killed before it)
            self.adopted += adopt_orphans(self.pusher, self.directory)
        except Exception:
            log.exception("orphaned view spools not taken over at startup")

    # -- the request path (under self.lock) --------------------------------------

    def _tally(self, name: str, row_id: int) -> bool:
        if self.spool is None:
            return False
        data = self.records.get((name, row_id))
        if data is None:  # a view's record never changes: made once per row
            if len(self.records) >= KNOWN_MAX:
                self.records.clear()
            data = self.records[(name, row_id)] = record(
                self.counters.registry.get(name).code, row_id
            )
        try:
            self.spool.append(data)
        except OSError:
            log.exception("view spool refused a view: it takes the synchronous path")
            return False
        self.tally[(name, row_id)] += 1
        return True

    def _start(self) -> None:
        for inherited in [*self.retired, self.spool]:  # the parent's: its lock is its own
            if inherited is not None:
                with contextlib.suppress(OSError):
                    os.close(inherited.fd)
        self.retired, self.batches, self.spool = [], [], None
        try:
            self.spool = SpoolFile(
                self.directory, self.token, self.counters.scope, self.counters.shards
            )
        except OSError:  # views then take the synchronous path, as without the mode
            log.exception("no view spool file could be made in %s", self.directory)
        super()._start()

    # -- the push thread ---------------------------------------------------------

    def _run(self) -> None:
        stop = self.stop
        while not stop.wait(self.interval_s):
            try:
                self.push()
            except Exception:  # never let the pusher die
                log.exception("view push failed")
            now = time.monotonic()
            try:
                if now >= self.next_adopt:
                    self.next_adopt = now + ADOPT_EVERY_S
                    self.adopted += adopt_orphans(self.pusher, self.directory)
                if now >= self.next_sweep:
                    self.next_sweep = now + SWEEP_S
                    self.identity = self.pusher.identity()  # a restart no push noticed
                    self.sweep_seen = sweep_fences(
                        self.pusher, self.directory, self.token, self.sweep_seen
                    )
            except Exception:
                log.exception("view spool housekeeping failed")

    def push(self) -> int:
        """Send the tally and what earlier pushes left unconfirmed, in one round trip;
        returns the views now known to be in Redis."""
        with self.push_lock:
            spool = self.spool
            with self.lock:
                tally, self.tally = self.tally, Counter()
                self._prune(time.monotonic())
                if spool is not None and tally:
                    self.batches.append(self._batch(spool, tally))
                if spool is not None and spool.size >= ROTATE_BYTES:
                    self._rotate()
            if spool is not None:
                try:
                    spool.sync()
                except OSError:
                    log.exception("view spool fdatasync failed")
            if not self.batches:
                if not self.healthy:
                    self._recheck()
                self._retire_done()
                return 0
            parts = [p for batch in self.batches for p in batch]
            try:
                self._intend(parts)
            except (CounterError, OSError) as exc:  # nothing was sent
                return self._failed(parts, exc)
            # sent before to a Redis that restarted since: maybe added, and flushed
            # before it came back older; its fence cannot tell
            doubtful = [p for p in parts if p.uncertain and p.sent_to != self.identity]
            if doubtful:
                self._give_up(doubtful, "Redis restarted since they were sent")
                parts = [p for batch in self.batches for p in batch]
            for p in parts:
                p.sent_to = self.identity
            try:
                self.pusher.push(parts)
            except CounterError as exc:
                for p in parts:  # each may have been added: only its fence can tell
                    p.uncertain = True
                return self._failed(parts, exc)
            pushed = sum(sum(p.views.values()) - p.dropped for p in parts if p.status.done)
            dropped = [key for p in parts for key in p.gone]
            left = ([p for p in b if not p.status.done] for b in self.batches)
            self.batches = [b for b in left if b]
            with self.lock:
                self.healthy = True
                self.dropped += sum(p.dropped for p in parts)
                expiry = time.monotonic() + self.known_ttl_s
                registry = self.counters.registry
                for p in parts:
                    if p.status is Status.ADDED:
                        for code, row_id in p.views:
                            self.known[(registry.by_code(code).table, row_id)] = expiry
                for code, row_id in dropped:
                    self.known.pop((registry.by_code(code).table, row_id), None)
            lost = self._rebase(parts)
            if lost:
                files = {f.id: f for f in (*self.retired, self.spool) if f is not None}
                with self.lock:  # the next part of the shard follows the fence Redis has
                    for p in lost:
                        owner = files.get(p.spool)
                        if owner is not None and owner.chain.get(p.shard) == p.upto:
                            owner.chain[p.shard] = p.fence
                self._give_up(lost, "a spool's fence went back in Redis")
            if any(p.status is Status.OUT_OF_STEP and p.fence > p.follows for p in parts):
                try:
                    self._resync(parts)  # not ours to have moved: read the spool again
                except CounterError as exc:
                    log.warning("view spool not read again now: %s", exc)
            self._retire_done()
            return pushed

    def _failed(self, parts: list[Part], exc: Exception) -> int:
        self.identity = None  # Redis may have restarted: ask again
        with self.lock:
            self.healthy = False
        n = sum(sum(p.views.values()) for p in parts)
        log.warning("view push failed, %d views in the spool are sent again: %s", n, exc)
        return 0

    def _give_up(self, parts: list[Part], why: str) -> None:
        """Drop parts that may have been added: counted as unknown, never sent again."""
        ids = {id(p) for p in parts}
        self.batches = [[p for p in b if id(p) not in ids] for b in self.batches]
        self.batches = [b for b in self.batches if b]
        self._unknown(sum(sum(p.views.values()) for p in parts), BufferUnavailable(why))

    def _intend(self, parts: list[Part]) -> None:
        """Write, in each spool file with parts to send, how far they go and to which
        Redis (a survivor of this process needs it: see :func:`push_contents`)."""
        if self.identity is None:
            self.identity = self.pusher.identity()
        files = {f.id: f for f in (*self.retired, self.spool) if f is not None}
        upto: dict[str, int] = {}
        for p in parts:
            upto[p.spool] = max(upto.get(p.spool, 0), p.upto)
        with self.lock:
            for spool, offset in upto.items():
                files[spool].append(intent(offset, self.identity))

    def _batch(self, spool: SpoolFile, tally: Counter) -> list[Part]:
        """The parts of the views tallied up to the spool's end (under self.lock)."""
        upto, parts = spool.size, {}
        registry, keys = self.counters.registry, self.counters.keys
        for (name, row_id), n in tally.items():
            s = keys.shard_of(row_id)
            if s not in parts:
                parts[s] = Part(spool.id, s, spool.chain.get(s, 0), upto)
            parts[s].views[(registry.get(name).code, row_id)] += n
        for s in parts:
            spool.chain[s] = upto
        return list(parts.values())

    def _rotate(self) -> None:
        """Start a new spool file (under self.lock); the full one is deleted once its
        views are in."""
        try:
            fresh = SpoolFile(self.directory, self.token, self.counters.scope, self.counters.shards)
        except OSError:
            log.exception("could not start a new view spool file; the old one grows")
            return
        self.retired.append(self.spool)
        self.spool = fresh

    def _retire_done(self) -> None:
        """Delete the retired files with nothing unconfirmed; checkpoint the current one."""
        waiting = {p.spool for batch in self.batches for p in batch}
        for spool in [s for s in self.retired if s.id not in waiting]:
            spool.delete()
            self.retired.remove(spool)
        spool = self.spool
        if spool is not None and spool.id not in waiting:
            with self.lock:
                done = max(spool.chain.values(), default=HEADER_SIZE)
                if done > spool.mark:
                    try:
                        spool.append(checkpoint(done))
                        spool.mark = done
                    except OSError:
                        log.warning("view spool checkpoint not written", exc_info=True)

    @staticmethod
    def _rebase(parts: list[Part]) -> list[Part]:
        """Parts out of step behind a fence that no unconfirmed part of their own comes
        before: Redis lost the fence (restarted without persistence, from an old dump, a
        replica promoted with lag), while every view before the part was in. A part
        never sent before is sent after that fence. One whose earlier push lost its
        reply may have been added and flushed before Redis went back: sending it again
        could count it twice, so it is returned, to be counted as unknown instead."""
        waiting: set[tuple[str, int]] = set()
        added: set[tuple[str, int]] = set()  # later rounds of the push moved the fence
        lost = []
        for p in parts:
            key = (p.spool, p.shard)
            behind = p.status is Status.OUT_OF_STEP and p.fence < p.follows
            if behind and key not in waiting and key not in added:
                log.warning(
                    "spool %s: shard %d's fence went back from %d to %d (Redis lost it)",
                    p.spool,
                    p.shard,
                    p.follows,
                    p.fence,
                )
                if p.uncertain:
                    lost.append(p)
                    continue
                p.follows = p.fence
            if p.status is Status.ADDED:
                added.add(key)
            if not p.status.done:
                waiting.add(key)
        return lost

    def _resync(self, parts: list[Part]) -> None:
        """A fence moved by someone else (a spool directory shared between hosts, where
        flock does not reach?): rebuild what is unconfirmed from the spool files."""
        log.error("a view spool's fence moved behind its owner's back; reading it again")
        for spool in [*self.retired, self.spool]:
            ours = [p for p in parts if spool is not None and p.spool == spool.id]
            if not any(not p.status.done for p in ours):
                continue
            upto = max(p.upto for p in ours)
            with open(spool.path, "rb") as f:
                contents = parse(f.read(upto))
            fresh, fences, _ = _unpushed(self.pusher, spool.id, contents, upto)
            kept = [[p for p in b if p.spool != spool.id] for b in self.batches]
            self.batches = [fresh, *(b for b in kept if b)] if fresh else [b for b in kept if b]
            with self.lock:
                spool.chain = {s: f for s, f in fences.items() if f}
                for p in fresh:
                    spool.chain[p.shard] = upto

    def close(self) -> None:
        """Stop the thread, push what is left and delete the spool; what could not be
        pushed stays in it for a survivor. Orphans found are taken over too."""
        self.stop.set()
        atexit.unregister(self.close)
        if self.pid != os.getpid() or self.spool is None:
            return
        for _ in range(PUSH_ROUNDS):
            self.push()
            if not self.batches and not self.tally:
                break
        with self.push_lock, self.lock:
            waiting = {p.spool for b in self.batches for p in b}
            left = sum(sum(p.views.values()) for b in self.batches for p in b)
            if self.tally:
                waiting.add(self.spool.id)
                left += sum(self.tally.values())
            files, self.spool, self.retired = [*self.retired, self.spool], None, []
            for spool in files:
                if spool.id in waiting:
                    spool.abandon()
                else:
                    spool.delete()
        if left:
            log.error("%d views left in the spool at shutdown: a survivor pushes them", left)
        try:
            self.adopted += adopt_orphans(self.pusher, self.directory)
        except Exception:
            log.exception("orphaned view spools not taken over at shutdown")
