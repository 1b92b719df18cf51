"""``--redis-rollback``: SIGKILL the counter buffer's Redis during the load and start it
again from its RDB dump, which is older than Postgres by then.

The counter Redis is a redis-server of the run's own (``servers.Servers``) that snapshots
on an ordinary schedule (``save 3 1``). Each fault:

1. fixes the dump Redis will come back from. Even faults take the schedule's last
   snapshot (waiting until it is ``MIN_DUMP_AGE_S`` old); odd ones take an explicit one
   (``SAVE``) ``CHECKPOINT_LEAD_S`` before the kill. Either way Postgres is then a few
   flushes ahead of the dump. The schedule is switched off (``CONFIG SET save ""``)
   from then until the kill and a snapshot still being written is waited for: the dump
   on disk at the kill is the one recorded, with ``LASTSAVE`` and a lower bound of the
   instant it holds (:attr:`Restart.dump_from`);
2. kills the server (with a snapshot child it may have) right after a flush committed
   a batch, or right after the worker received a flush task, alternately;
3. keeps it down ``DOWNTIME_S`` (requests get 503), then starts it on the same port
   from its folder, i.e. from that dump, with the snapshot schedule on again.

The plan runs from the main thread (children must be forked by the main thread).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from harness.redis_server import RedisProcess

from .stack import Stack

FIRST_AT = 0.25  # of the duration: let the load ramp up and a few snapshots happen
LAST_AT = 0.7  # leave time for the windows to close and a few clean flushes
CHECKPOINT_LEAD_S = 3.0  # an explicit dump this long before the kill
MIN_DUMP_AGE_S = 2.5  # a scheduled dump at least this old at the kill
SETTLE_S = 2.0  # no checkpoint sooner than this after a restart: let it flush first
DOWNTIME_S = (0.5, 2.0)
MARK_WAIT_S = 3.0  # longest wait for a flush mark in the worker log before a kill
SNAPSHOT_WAIT_S = 10.0  # longest wait for a snapshot in progress to finish
FLUSH_COMMITTED = b'"event": "counter_flush"'
TASK_RECEIVED = b"received"


@dataclass
class Restart:
    """One kill and restart, in wall-clock seconds (``time.time()``)."""

    n: int
    dump: str  # "scheduled" (save 3 1) or "checkpoint" (explicit SAVE)
    dump_from: float  # the dump holds every write acknowledged before this instant
    lastsave: int  # LASTSAVE just before the kill
    killed_at: float = 0.0  # just before the SIGKILL
    restarted_at: float = 0.0  # once it answers again, its dump loaded
    how: str = ""


@dataclass
class _Fault:
    at_s: float
    checkpoint: bool
    after_commit: bool
    restart: Restart | None = None  # set once its dump is fixed
    checkpoint_s: float = 0.0  # when it was (monotonic, since the start)


@dataclass
class RedisRollback:
    server: RedisProcess
    stack: Stack
    duration_s: float
    seed: int | None = None
    restarts: list[Restart] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.started = time.monotonic()
        self.started_at = time.time()  # the same instant on the wall clock
        self.faults = self._plan()
        # dump_from of the dump on disk (0: none yet, a restart would lose everything)
        self._on_disk = 0.0
        self._back_s = 0.0  # when the last restart was done (monotonic, since the start)

    def _plan(self) -> list[_Fault]:
        kills = max(2, round(self.duration_s / 20))
        span = (LAST_AT - FIRST_AT) * self.duration_s
        faults = []
        for i in range(kills):
            at = FIRST_AT * self.duration_s + span * (i + self.rng.uniform(0.2, 0.8)) / kills
            faults.append(_Fault(at, checkpoint=i % 2 == 1, after_commit=i % 2 == 0))
        return faults

    def _note(self, text: str) -> None:
        self.log.append(f"t={time.monotonic() - self.started:5.1f}s  {text}")

    def pending(self) -> int:
        return len(self.faults)

    def step(self) -> None:
        """Inject what is due now: an explicit checkpoint, or a kill and restart."""
        while self.faults:
            now = time.monotonic() - self.started
            fault = self.faults[0]
            if fault.checkpoint and fault.restart is None:
                if now < max(fault.at_s - CHECKPOINT_LEAD_S, self._back_s + SETTLE_S):
                    return
                fault.restart = self._checkpoint(len(self.restarts) + 1)
                fault.checkpoint_s = time.monotonic() - self.started
            if now < max(fault.at_s, fault.checkpoint_s + CHECKPOINT_LEAD_S):
                return
            self.faults.pop(0)
            self._kill_and_restart(fault)
            self._back_s = time.monotonic() - self.started

    # -- the dump ----------------------------------------------------------------------

    def _freeze(self) -> dict:
        """No snapshot from now until the kill; returns INFO persistence once none is
        being written."""
        client = self.server.client()
        client.config_set("save", "")
        deadline = time.monotonic() + SNAPSHOT_WAIT_S
        while True:
            info = client.info("persistence")
            if not info["rdb_bgsave_in_progress"] or time.monotonic() > deadline:
                return info
            time.sleep(0.01)

    def _checkpoint(self, n: int) -> Restart:
        self._freeze()
        before = time.time()
        client = self.server.client()
        client.save()
        self._on_disk = before
        lastsave = client.info("persistence")["rdb_last_save_time"]
        self._note(f"checkpoint: SAVE, the dump restart #{n} will come back from")
        return Restart(n, "checkpoint", before, lastsave)

    def _scheduled_dump(self, n: int) -> Restart:
        info = self._freeze()
        lastsave = info["rdb_last_save_time"]
        if info["rdb_saves"]:
            # a BGSAVE holds the data of its fork, at its start: LASTSAVE (its end) minus
            # its duration, both in whole seconds, is no later than that
            self._on_disk = float(lastsave - max(0, info["rdb_last_bgsave_time_sec"]))
        # else no snapshot since this server started: the dump it loaded is still there
        time.sleep(max(0.0, self._on_disk + MIN_DUMP_AGE_S - time.time()))
        return Restart(n, "scheduled", self._on_disk, lastsave)

    # -- the kill ----------------------------------------------------------------------

    def _wait_for(self, mark: bytes) -> bool:
        path = self.stack.log_path("worker")
        offset = path.stat().st_size
        deadline = time.monotonic() + MARK_WAIT_S
        while time.monotonic() < deadline:
            with open(path, "rb") as f:
                f.seek(offset)
                if mark in f.read():
                    return True
            time.sleep(0.005)
        return False

    def _kill_and_restart(self, fault: _Fault) -> None:
        restart = fault.restart or self._scheduled_dump(len(self.restarts) + 1)
        if fault.after_commit:
            seen = self._wait_for(FLUSH_COMMITTED)
            restart.how = "right after a batch was committed" if seen else "no flush seen"
        else:
            seen = self._wait_for(TASK_RECEIVED)
            restart.how = "right after a flush task was received" if seen else "no task seen"
        pid = self.server.proc.pid
        restart.killed_at = time.time()  # before the signal: requests may fail from now on
        self.server.kill()
        age = restart.killed_at - restart.dump_from
        self._note(
            f"SIGKILL counter Redis pid {pid} ({restart.how}); it comes back from its "
            f"{restart.dump} dump of {age:.1f}s before (LASTSAVE {restart.lastsave})"
        )
        time.sleep(self.rng.uniform(*DOWNTIME_S))
        self.server.start()
        restart.restarted_at = time.time()
        self.restarts.append(restart)
        down = restart.restarted_at - restart.killed_at
        self._note(f"counter Redis back, pid {self.server.proc.pid}, down {down:.1f}s")
