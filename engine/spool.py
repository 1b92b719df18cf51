"""The view spool: coalesced views that survive a SIGKILL of their web process
(``COUNTERS_COALESCE_SPOOL_DIR``, with ``COUNTERS_COALESCE_MS``).

Each process appends every view it tallies to a file of its own before the view is
answered, and holds the file with ``flock``. The page cache keeps what was written
when the process dies; only a machine crash loses what was not fdatasync'ed (once per
push interval, as Redis' ``appendfsync everysec``). The kernel drops the lock of a dead
process, so a survivor (another process' push thread, a new process at its start, or
:func:`drain`) takes the orphaned file over and pushes what is in it.

The parts, each in its own module:

* ``engine.spool_format``: the file's bytes (header, CRC'd records, intents,
  checkpoints) and :func:`parse`, which stops at the first torn record;
* ``engine.spool_files``: a process' own file (:class:`SpoolFile`): created whole,
  locked, appended to, deleted or let go of;
* ``engine.spool_push``: the fenced push (:class:`Pusher`, ``lua/spool.lua``): each
  shard keeps, per spool, the offset up to which it holds its views, moved in the same
  atomic step that adds them, so a push whose reply was lost is simply sent again;
* ``engine.spool_orphans``: taking over the files of dead processes
  (:func:`take_over`) and sweeping the fences of deleted spools (:func:`sweep_fences`);
* this module: :class:`SpooledCoalescer`, which ties them together, and :func:`drain`.

A Redis that went back may have lost fences of views it had added (and a flush
applied): a push that may have been added is then counted as unknown, never sent again
(:meth:`SpooledCoalescer._rebase`, :func:`push_contents`). A spool file whose views are
all in is deleted (a process also starts a new one once its file is ``ROTATE_BYTES``
long). Fences of deleted spools are removed once they have been seen without a file
twice, ``SWEEP_S`` apart (a push still travelling when its file went must find its
fence).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import time
from collections import Counter
from pathlib import Path

from .coalesce import KNOWN_MAX, KNOWN_TTL_S, ViewCoalescer
from .errors import BufferUnavailable, CounterError
from .spool_files import SUFFIX, SpoolFile, dir_token
from .spool_format import HEADER_SIZE, RECORD_SIZE, checkpoint, intent, parse, record
from .spool_orphans import adopt_orphans, push_contents, sweep_fences, take_over, unpushed
from .spool_push import PUSH_ROUNDS, Part, Pusher, Status

__all__ = [
    "HEADER_SIZE",
    "RECORD_SIZE",
    "SUFFIX",
    "Part",
    "Pusher",
    "SpoolFile",
    "SpooledCoalescer",
    "Status",
    "dir_token",
    "drain",
    "intent",
    "parse",
    "push_contents",
    "record",
    "sweep_fences",
    "take_over",
    "unpushed",
]

log = logging.getLogger(__name__)

ROTATE_BYTES = 1 << 20  # a process starts a new spool file past this size (~43k views)
ADOPT_EVERY_S = 1.0  # how often a push thread looks for orphaned spool files
SWEEP_S = 60.0  # how often it sweeps the fences of deleted spools (seen twice: removed)


def drain(counters, directory: str | Path) -> int:
    """Push every spool file of ``directory`` whose process is gone, and delete them:
    for after the web processes were stopped (say, before a reshard), or a check.
    Returns the views added; files of live processes are left to them."""
    return adopt_orphans(Pusher(counters), Path(directory))


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
            fresh, fences, _ = unpushed(self.pusher, spool.id, contents, upto)
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
