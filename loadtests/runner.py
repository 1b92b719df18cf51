"""``python -m loadtests run``: one load test, from empty servers to a verdict.

1. scratch Postgres database and Redis db (or the environment's), migrations;
2. gunicorn, a Celery worker and RedBeat beat on 127.0.0.1, flushing every
   ``--flush-interval`` s;
3. seed posts, articles and comments through the API;
4. Locust, headless, with CSV output (and with ``--chaos``, worker SIGKILLs and a
   beat restart meanwhile; with ``--redis-rollback``, SIGKILLs of the counter Redis,
   restarted from its dump), while the flush lag is polled from the admin stats;
5. right after the load: live counts from the API; then wait for the scheduled
   flush to drain Redis; then Postgres, against the ledger and the recounts.

Exits 0 only when every check passes; the last line of the report is the verdict.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from engine import DEFAULT_SHARDS
from harness import ROOT
from harness.processes import signal_group, spawn, tail

from . import report, verify
from .accounting import EventLog, build_ledger, read_events
from .chaos import Chaos
from .monitor import LagMonitor, PeriodicReconcile
from .rollback import RedisRollback
from .rollback_verify import REFUSED, verify_rollback
from .seed import Seeder
from .servers import Servers
from .stack import Stack

STOP_TIMEOUT_S = 30  # Locust lets users finish their request before stopping them
DRAIN_TIMEOUT_S = 30.0  # after the load, how long the scheduled flush may take
EXIT_GRACE_S = 90.0  # beyond duration + stop timeout, before Locust is killed
SERVER_ERROR = re.compile(r"got 5\d\d")


@dataclass
class Options:
    users: int
    duration_s: float
    chaos: bool = False
    spawn_rate: float | None = None
    processes: int = 1
    web_workers: int = 3
    web_threads: int = 4
    worker_concurrency: int = 1
    flush_interval_s: float = 1.0
    posts: int = 200
    articles: int = 80
    wait_s: tuple[float, float] = (0.5, 2.0)
    out: Path | None = None
    chaos_seed: int | None = None
    reconcile_every_s: float = 0.0
    redis_rollback: bool = False
    visitors: bool = False  # views under the view policy (--visitors)


@dataclass
class Outcome:
    problems: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    checks: list[verify.Check] = field(default_factory=list)

    def say(self, line: str = "") -> None:
        self.lines.append(line)
        print(line, flush=True)


def run(opts: Options) -> int:
    out = opts.out or ROOT / "loadtests" / "out" / time.strftime("run-%Y%m%d-%H%M%S")
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    result = Outcome()
    modes = [
        m
        for m, on in (
            ("with chaos", opts.chaos),
            ("redis rollback", opts.redis_rollback),
            ("visitors under the view policy", opts.visitors),
        )
        if on
    ]
    mode = ", ".join(modes) or "no faults"
    result.say(f"load test: {opts.users} users, {opts.duration_s:g} s, {mode}; output in {out}")
    counter_redis = out / "counter-redis" if opts.redis_rollback else None
    with Servers(counter_redis) as servers:
        stack = Stack(
            servers,
            out,
            web_workers=opts.web_workers,
            web_threads=opts.web_threads,
            worker_concurrency=opts.worker_concurrency,
            flush_interval_s=opts.flush_interval_s,
            keep_alive_s=int(opts.wait_s[1]) + 8,
            view_policy="dedupe" if opts.visitors else "raw",
        )
        try:
            _run(opts, out, servers, stack, result)
        except Exception as exc:  # noqa: BLE001 - any setup failure is a failed run
            result.problems.append(f"run aborted: {type(exc).__name__}: {exc}")
            for name, code in stack.dead().items():
                result.problems.append(f"{name} exited with code {code}")
                result.say(f"--- {stack.log_path(name)} (tail):\n{tail(stack.log_path(name))}")
        finally:
            stack.stop_all()
    verdict = _verdict(result)
    result.say(verdict)
    (out / "report.txt").write_text("\n".join(result.lines) + "\n")
    return 0 if not result.problems else 1


def _run(opts: Options, out: Path, servers: Servers, stack: Stack, result: Outcome) -> None:
    say = result.say
    db = servers.scratch_db or "DATABASE_URL"
    say(f"servers: Postgres {db}, Redis {servers.redis_url}")
    if servers.counters_redis_url:
        say(f"counter buffer: {servers.counters_redis_url} (RDB snapshots, killed and restarted)")
    stack.migrate()
    for name in ("web", "worker", "beat"):
        stack.start(name)
    stack.wait_ready()
    say(f"web {stack.base_url} ({opts.web_workers} gunicorn workers x {opts.web_threads} threads)")

    events = out / "events"
    seed_log = EventLog(events, "seed")
    seed = Seeder(stack.base_url, seed_log).seed(opts.posts, opts.articles)
    seed_log.close()
    seed.write(out / "seed.json")
    say(
        f"seeded {len(seed.posts)} posts, {len(seed.articles)} articles, "
        f"{len(seed.post_comments)} post comments, {len(seed.comments)} article comments"
    )

    monitor = LagMonitor(stack.base_url, stack.admin_token, out)
    monitor.start()
    chaos = Chaos(stack, opts.duration_s, opts.chaos_seed) if opts.chaos else None
    rollback = None
    if opts.redis_rollback:
        rollback = RedisRollback(servers.counter_redis, stack, opts.duration_s, opts.chaos_seed)
    reconciler = None
    if opts.reconcile_every_s > 0:
        reconciler = PeriodicReconcile(stack.admin, opts.reconcile_every_s)
        reconciler.start()
    started = time.monotonic()
    try:
        rc = _load(opts, out, stack, [f for f in (chaos, rollback) if f is not None], result)
    finally:
        load_ended = time.monotonic()
        elapsed = load_ended - started
        if reconciler is not None:
            reconciler.stop()
    say(f"load finished after {elapsed:.1f} s (locust exit {rc})")
    if servers.redis_lost:
        result.problems.append(
            f"someone else flushed or took the Redis db {servers.redis_url} during the run"
        )

    # G3 while the scheduled flushes are still draining: served counts are exact.
    sql = sa.create_engine(servers.database_url)
    rolled = None
    try:
        logged = list(read_events(events))
        ledger = build_ledger(logged, REFUSED if rollback is not None else ())
        if ledger.created:  # posts created during the load are checked too
            created = sorted(tid for tt, tid in ledger.created if tt == "post")
            seed = dataclasses.replace(seed, posts=seed.posts + created)
        keys = verify.stored_counters(sql, seed)
        live = verify.live_counters(stack.base_url, keys)
        windows = verify.window_views(stack.base_url, seed)
        drained, drain_s, backlog = _wait_drained(stack, opts, load_ended)
        monitor.stop()
        if rollback is not None:
            shards = int(stack.env.get("COUNTERS_SHARDS") or DEFAULT_SHARDS)
            rolled = verify_rollback(stack, sql, seed, ledger, logged, live, rollback, shards)
            result.checks += rolled.checks
            result.problems += rolled.problems
        else:
            stored = verify.stored_counters(sql, seed)
            result.checks += [
                verify.check_live(ledger, live, stored),
                verify.check_stored(ledger, stored),
                verify.check_recounts(stored, verify.recounts(sql, stored)),
                verify.check_rows(ledger, verify.action_rows(sql), stored),
                verify.check_buckets(sql, seed),
                verify.check_windows(windows, verify.window_views(stack.base_url, seed)),
                verify.check_served(verify.live_counters(stack.base_url, stored), stored),
            ]
            if opts.visitors:
                result.checks.append(verify.check_uniques(ledger, sql, seed))
    finally:
        sql.dispose()
    if not drained:
        result.problems.append(
            f"the scheduled flush left {backlog} pending counters after {DRAIN_TIMEOUT_S:g} s"
        )
    drain_s = drain_s if drained else None
    _report(out, result, stack, monitor, chaos, reconciler, ledger, drain_s, rollback is not None)
    if rollback is not None:
        _report_rollback(result, rollback, rolled)


def _load(opts: Options, out: Path, stack: Stack, faults: list, result: Outcome) -> int:
    rate = opts.spawn_rate or max(1.0, opts.users / 5)
    cmd = [
        *(sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py")),
        *("--headless", "-u", str(opts.users), "-r", f"{rate:g}"),
        *("--run-time", f"{round(opts.duration_s)}s", "--stop-timeout", str(STOP_TIMEOUT_S)),
        *("--host", stack.base_url, "--csv", str(out / "run"), "--only-summary"),
        *("--loglevel", "WARNING", "--logfile", str(out / "logs" / "locust.log")),
    ]
    if opts.processes > 1:
        cmd += ["--processes", str(opts.processes)]
    env = dict(stack.env)
    env.update(
        LOADTEST_SEED=str(out / "seed.json"),
        LOADTEST_EVENTS=str(out / "events"),
        LOADTEST_WAIT=f"{opts.wait_s[0]},{opts.wait_s[1]}",
        LOADTEST_REDIS_ROLLBACK="1" if opts.redis_rollback else "0",
        LOADTEST_VISITORS="1" if opts.visitors else "0",
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    deadline = time.monotonic() + opts.duration_s + STOP_TIMEOUT_S + EXIT_GRACE_S
    locust = spawn(cmd, env=env, output=out / "logs" / "locust.out")
    try:
        while locust.poll() is None:
            for fault in faults:
                fault.step()
            if died := stack.dead():
                result.problems.append(f"died during the load (not by chaos): {died}")
                for name in died:
                    result.say(f"--- {name} log tail:\n{tail(stack.log_path(name))}")
                break
            if time.monotonic() > deadline:
                result.problems.append("locust did not stop in time: killed")
                break
            time.sleep(0.05)
    finally:
        if locust.poll() is None:
            signal_group(locust, signal.SIGKILL)
        locust.wait()
    if locust.returncode not in (0, 1):  # 1: some requests failed, reported below
        result.problems.append(f"locust exited {locust.returncode}: see {out}/logs/locust.out")
        result.say(tail(out / "logs" / "locust.out"))
    return locust.returncode


def _wait_drained(stack: Stack, opts: Options, since: float) -> tuple[bool, float, int]:
    """Wait for the *scheduled* flush to leave nothing pending or in flight; returns
    (drained, seconds since ``since``, counters left)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    backlog = -1
    while time.monotonic() < deadline:
        try:
            stats = stack.admin("GET", "stats", timeout=10)
            backlog = int(stats.get("pending") or 0)  # inflight included
            if backlog == 0:
                return True, time.monotonic() - since, 0
        except Exception:  # noqa: BLE001 - keep polling until the deadline
            pass
        time.sleep(min(0.25, opts.flush_interval_s / 4))
    return False, time.monotonic() - since, backlog


def _report(
    out, result, stack, monitor, chaos, reconciler, ledger, drain_s, unavailable_ok=False
) -> None:
    say = result.say
    prefix = out / "run"
    rows, total = report.endpoint_stats(prefix)
    say("")
    say("== throughput and latency (Locust) ==")
    if total is not None:
        say(
            f"  {total.requests} requests, {total.failures} failed, "
            f"{total.rps:.1f} req/s over the run"
        )
        result.lines.extend(report.endpoint_table(rows, total))
        print("\n".join(report.endpoint_table(rows, total)), flush=True)
    else:
        result.problems.append(f"no Locust statistics in {prefix}_stats.csv")

    fails = report.failures(prefix)
    for n, _method, name, error in fails[:15]:
        say(f"  FAILED {n}x {name}: {error[:300]}")
    n_failed = sum(n for n, *_ in fails)
    if n_failed:
        result.problems.append(f"{n_failed} requests failed (wrong status or body)")
    excs = report.exceptions(prefix)
    for n, message in excs[:10]:
        say(f"  EXCEPTION {n}x in a user: {message[:300]}")
    if excs:
        result.problems.append(f"{sum(n for n, _ in excs)} exceptions in the Locust users")
    server_errors = sum(n for n, _m, _n, e in fails if SERVER_ERROR.search(e))
    # with --redis-rollback, 503s are answers (checked to come only while Redis was down)
    down = 503 if unavailable_ok else None
    server_errors = max(
        server_errors, ledger.count(lambda _op, st: st is not None and st >= 500 and st != down)
    )
    if server_errors:
        result.problems.append(f"{server_errors} responses were 5xx")

    say("")
    say("== flush lag (GET /api/admin/counters/stats every 0.5 s) ==")
    at = f" at t={monitor.max_lag_at_s:.1f}s" if monitor.max_lag_at_s is not None else ""
    say(
        f"  largest oldest_pending_age_s: {monitor.max_lag_s:.2f} s{at}; "
        f"most pending counters: {monitor.max_pending}; {monitor.samples} samples"
        + (f", {monitor.errors} failed polls" if monitor.errors else "")
    )
    if drain_s is not None:
        say(f"  Redis seen drained by the scheduled flush {drain_s:.1f} s after the load ended")
    totals = monitor.last.get("totals") or {}
    interesting = ("flushes", "batches", "counters_applied", "claims_resumed")
    interesting += ("batches_already_applied", "flush_errors", "deltas_dropped")
    shown = [f"{k}={totals[k]}" for k in interesting if k in totals]
    if shown:
        say("  engine totals: " + ", ".join(shown))
    if monitor.cpu_samples:
        say(
            f"  machine CPU busy (all processes) during the load: mean {monitor.cpu_mean:.0f}%, "
            f"max {monitor.cpu_max:.0f}% ({os.cpu_count()} cores)"
        )

    if chaos is not None:
        say("")
        say("== chaos ==")
        for line in chaos.log:
            say("  " + line)
        if chaos.pending():
            say(f"  ({chaos.pending()} planned faults not reached: the load ended first)")

    say("")
    say("== accounting ==")
    by_op: dict[str, list[int]] = {}
    for (op, st), n in ledger.statuses.items():
        acked_unknown = by_op.setdefault(op, [0, 0, 0])
        if st is not None and 200 <= st < 300:
            acked_unknown[0] += n
        elif (op, st) not in ledger.refused and (st is None or st == 0 or st >= 500):
            acked_unknown[1] += n
        else:
            acked_unknown[2] += n
    refused = "refused (4xx, 503)" if ledger.refused else "refused (4xx)"
    for op, (acked, unknown, other) in sorted(by_op.items()):
        say(f"  {op:<10} {acked:>7} acknowledged  {unknown:>4} unknown  {other:>5} {refused}")
    say(
        f"  {ledger.requests} counted requests logged by the users, {ledger.unknown} unknown "
        f"({ledger.never_answered} never answered); toggles left in place: {len(ledger.present())}"
    )
    for check in result.checks:
        say("  " + check.line())
        if not check.ok:
            result.problems.append(f"{check.name}: {len(check.mismatches)} wrong")
    if reconciler is not None:
        _report_reconcile(result, reconciler)
    for name in ("web", "worker", "beat"):
        text = stack.log_path(name).read_text(errors="replace")
        if n := text.count("Traceback"):
            say(f"  note: {n} tracebacks in {stack.log_path(name)}")
    say("")
    if ledger.unknown and not result.problems:
        say(
            f"  {ledger.unknown} requests got no answer or a 5xx: their counters were checked "
            "as bounds"
        )


def _report_rollback(result: Outcome, rollback: RedisRollback, rolled) -> None:
    result.say("")
    result.say("== counter Redis rollback ==")
    for line in rollback.log:
        result.say("  " + line)
    if rollback.pending():
        result.say(f"  ({rollback.pending()} planned kills not reached: the load ended first)")
    for line in rolled.lines if rolled is not None else ():
        result.say("  " + line)


def _report_reconcile(result: Outcome, reconciler: PeriodicReconcile) -> None:
    result.say(
        f"  reconcile during the load: {reconciler.runs} runs, {reconciler.checked} counters "
        f"checked, {len(reconciler.fixes)} fixed, {len(reconciler.errors)} failed"
    )
    for fix in reconciler.fixes[:10]:
        result.say(f"    fixed {fix}")
    for error in reconciler.errors[:5]:
        result.say(f"    error {error[:300]}")
    if reconciler.fixes:
        result.problems.append(f"reconcile found drift {len(reconciler.fixes)}x during the load")
    if reconciler.errors:
        result.problems.append(f"{len(reconciler.errors)} reconcile calls failed")


def _verdict(result: Outcome) -> str:
    if result.problems:
        return "VERDICT: FAIL - " + "; ".join(result.problems)
    checked = sum(c.checked for c in result.checks)
    return f"VERDICT: PASS - accounting exact ({checked} values checked), no failed requests"
