"""Coalesced view beacons: an opt-in mode, off by default (``COUNTERS_COALESCE_MS``).

With the mode on, a view (``FlaskCounters.view``, say ``POST /api/posts/<id>/view``)
makes no Redis round trip in the common case. The view is added to a tally in the web
process and answered 204, and a background thread sends the tally every
``COUNTERS_COALESCE_MS`` milliseconds as one pipelined round trip of existence-checked
increments.

What it costs, and why it is off by default:

* **Loss window.** A 204 no longer means "in Redis". A web process that dies hard
  (SIGKILL, OOM killer, power loss) loses the views of its last interval, plus those
  of a push that was under way. A graceful stop (SIGTERM to gunicorn, Ctrl-C,
  interpreter exit) pushes what is left first. With ``COUNTERS_COALESCE_SPOOL_DIR`` the views
  are also written to a file before they are answered, and a hard kill loses none
  (``engine.spool.SpooledCoalescer``).
* **Existence.** The first view of a row in a process takes the normal synchronous
  path, so an id that does not exist still gets its 404 and leaves no key. After
  that the row is "known": each push checks existence again, in Redis, and a row
  stays known while pushes find it, or for ``KNOWN_TTL_S`` after its last one. A
  row deleted while known gets 204s until the next push, which drops those views
  (as a flush drops deltas of deleted rows) and forgets the row: its next view is a
  404. At most ``KNOWN_MAX`` rows are known per process; views of others go
  synchronous.
* **Redis down.** After a failed push the tally is kept and retried. Views take the
  synchronous path, and so get 503s, until a push succeeds. An outage therefore
  shows as errors, as without the mode, instead of growing an unbounded backlog in
  memory.

The benchmarks' ``coalesced`` row measures this class.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import Counter

from .buffer import Outcome
from .errors import BufferUnavailable, CounterError, StoreUnavailable

log = logging.getLogger(__name__)

KNOWN_TTL_S = 60.0  # a row not seen by a push for this long is checked again
KNOWN_MAX = 100_000  # rows known per process (bounds the memory of the mode)
PRUNE_EVERY_S = 5.0  # expired known rows are swept this often

Key = tuple[str, int]  # (counter name, row id)


class ViewCoalescer:
    """Per-process tally of views of ``counters`` (an ``engine.Counters``), pushed by one
    daemon thread started after fork.

    The first view of a row takes ``Counters.view`` (one round trip, existence checked;
    False when the row does not exist). At push time, the views of a row whose existence
    index Redis has lost are added by ``Counters.view`` too, which asks Postgres.
    """

    def __init__(self, counters, interval_s: float, known_ttl_s: float = KNOWN_TTL_S) -> None:
        if interval_s <= 0:
            raise ValueError("the coalescing interval must be positive")
        self.counters = counters
        self.interval_s = interval_s
        self.known_ttl_s = known_ttl_s
        self.lock = threading.Lock()
        self.push_lock = threading.Lock()  # one push at a time (timer or shutdown)
        self.tally: Counter[Key] = Counter()
        self.known: dict[tuple[str, int], float] = {}  # (table, id) -> expiry (monotonic)
        self.healthy = True  # False after a failed push, until one succeeds
        self.stop = threading.Event()
        self.pid: int | None = None
        self.dropped = 0  # views of rows gone by push time
        self.unknown = 0  # views of pushes whose outcome never came back
        self.next_prune = 0.0  # monotonic time of the next sweep of expired known rows

    # -- the request path ------------------------------------------------------

    def _table(self, name: str) -> str:
        return self.counters.registry.get(name).table

    def count(self, name: str, row_id: int) -> bool:
        """Count one view; False when the row does not exist (checked synchronously)."""
        now = time.monotonic()
        table = self._table(name)
        with self.lock:
            if self.pid != os.getpid():  # first view in this (forked) process
                self._start()
            known = self.healthy and self.known.get((table, row_id), 0.0) > now
            if known and self._tally(name, row_id):
                return True
        if not self.counters.view(name, row_id):
            return False
        with self.lock:
            if len(self.known) < KNOWN_MAX:
                self.known[(table, row_id)] = now + self.known_ttl_s
        return True

    def _tally(self, name: str, row_id: int) -> bool:
        """Tally one view of a known row (under self.lock); False: take the synchronous
        path instead."""
        self.tally[(name, row_id)] += 1
        return True

    def _start(self) -> None:
        self.pid = os.getpid()
        self.stop = threading.Event()
        self.tally, self.known, self.healthy = Counter(), {}, True  # nothing from the parent
        threading.Thread(target=self._run, name="view-coalescer", daemon=True).start()
        atexit.register(self.close)

    # -- pushing ---------------------------------------------------------------

    def _run(self) -> None:
        stop = self.stop
        while not stop.wait(self.interval_s):
            try:
                self.push()
            except Exception:  # never let the pusher die: the tally would only grow
                log.exception("view push failed")

    def push(self) -> int:
        """Send the tally in one round trip; returns the views pushed (0 on failure,
        the tally then waits for the next push)."""
        with self.push_lock:
            with self.lock:
                tally, self.tally = self.tally, Counter()
                self._prune(time.monotonic())
            if not tally:
                if not self.healthy:  # views go synchronous until Redis answers again
                    self._recheck()
                return 0
            items = [(name, row_id, n) for (name, row_id), n in tally.items()]
            try:
                self.counters.ping()  # fails before anything is sent: keep the tally
            except CounterError as exc:
                with self.lock:
                    self.tally.update(tally)
                    self.healthy = False
                log.warning("view push failed, %d views kept for the next one: %s", len(tally), exc)
                return 0
            try:
                outcomes = self.counters.incr_checked(items)
            except CounterError as exc:
                # Sent, but the replies were lost or refused: some increments may have
                # been applied, and sending them again could count them twice.
                self._unknown(sum(tally.values()), exc)
                return 0
            gone, retry = self._settle(items, outcomes)
            with self.lock:
                self.healthy = True
                self.tally.update(retry)
                expiry = time.monotonic() + self.known_ttl_s
                for name, row_id, _ in items:  # seen to exist just now
                    self.known[(self._table(name), row_id)] = expiry
                for name, row_id, n in gone:
                    self.known.pop((self._table(name), row_id), None)
                    self.dropped += n
            return sum(tally.values()) - sum(retry.values())

    def _prune(self, now: float) -> None:
        """Forget expired known rows (under self.lock); not every push: the set can be
        large."""
        if now >= self.next_prune:
            self.known = {k: t for k, t in self.known.items() if t > now}
            self.next_prune = now + PRUNE_EVERY_S

    def _recheck(self) -> None:
        try:
            self.counters.ping()
        except CounterError:
            return
        with self.lock:
            self.healthy = True

    def _unknown(self, n: int, exc: Exception) -> None:
        """``n`` views whose push may or may not have counted them: not sent again,
        counted apart (the ``views_unknown`` total) so the loss shows."""
        with self.lock:
            self.unknown += n
            self.healthy = False
        log.warning("%d coalesced views may or may not have been counted: %s", n, exc)
        try:
            self.counters.stats.record_unknown(n)
        except CounterError:
            log.warning("could not record %d unknown views in the shared stats", n)

    def _settle(self, items, outcomes) -> tuple[list, Counter]:
        """Rows the push found gone, and views to send again: those of rows whose
        existence index Redis lost and that could not be resolved now."""
        gone, retry = [], Counter()
        for (name, row_id, n), outcome in zip(items, outcomes, strict=True):
            if outcome is Outcome.COUNTED:
                continue
            # the index lost, or older than the row (Redis back from a dump): Postgres says
            try:
                if not self.counters.view(name, row_id, n):
                    gone.append((name, row_id, n))
            except BufferUnavailable as exc:  # may or may not have been added: never twice
                self._unknown(n, exc)
            except StoreUnavailable:  # Postgres down: nothing was added
                log.warning("views of %s %d kept for the next push", name, row_id, exc_info=True)
                retry[(name, row_id)] += n
        return gone, retry

    def close(self) -> None:
        """Stop the thread and push what is left (graceful shutdown; also at exit)."""
        self.stop.set()
        atexit.unregister(self.close)
        if self.pid != os.getpid():
            return
        pending = sum(self.tally.values())
        if pending and not self.push():
            log.error("%d coalesced views lost at shutdown: Redis unavailable", pending)
