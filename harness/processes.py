"""Child processes of a run, started and stopped one way.

Each child runs in its own session, so its process group holds what it forks (a
Celery worker's pool, gunicorn's workers) and a terminal's Ctrl-C reaches only the
parent, which then stops the children in order. On Linux each child also gets a
parent-death signal, so a parent killed with SIGKILL leaves nothing behind. Only
processes started here are ever signalled, always by their own process group id.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from harness import ROOT

STOP_TIMEOUT_S = 20.0
READY_TIMEOUT_S = 60.0
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
# Every address we wait on is 127.0.0.1: a proxy from the environment must not answer.
_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class NotReady(RuntimeError):
    """A server did not answer in time, exited, or the wait was cancelled."""


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG fires when the forking *thread* exits: spawn from the main thread.
    if _libc is not None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(
    cmd: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    output: Path | int | None = None,
) -> subprocess.Popen:
    """Start ``cmd`` in its own session with a parent-death SIGTERM.

    ``output``: a log file (appended to), ``subprocess.PIPE`` (stdout and stderr in
    ``proc.stdout``), ``subprocess.DEVNULL``, or None to share this process's.
    """
    stream = open(output, "ab") if isinstance(output, Path) else output  # noqa: SIM115
    try:
        return subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=stream,
            stderr=None if output is None else subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    finally:
        if isinstance(output, Path):
            stream.close()


def exited(proc: subprocess.Popen) -> bool:
    """True once the leader has exited. Its zombie is left for ``proc.wait()``, so that
    its pid, the group's id, cannot be reused before the group is signalled."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the process group of ``proc``: the leader and everything it forked."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def stop_all(
    procs: Iterable[subprocess.Popen],
    timeout_s: float = STOP_TIMEOUT_S,
    cancel: threading.Event | None = None,
) -> list[subprocess.Popen]:
    """SIGTERM each leader (a warm shutdown: gunicorn and Celery finish what they are
    doing), wait up to ``timeout_s`` for all of them or until ``cancel`` is set, then
    SIGKILL each process group: a leader still running and whatever a leader left
    behind. Returns the leaders that were still running then."""
    procs = list(procs)
    for proc in procs:
        if not exited(proc):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while not all(exited(p) for p in procs):
        if time.monotonic() > deadline or (cancel is not None and cancel.is_set()):
            break
        time.sleep(0.05)
    stubborn = [p for p in procs if not exited(p)]
    for proc in procs:
        signal_group(proc, signal.SIGKILL)
        proc.wait()
    return stubborn


def stop(proc: subprocess.Popen, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """:func:`stop_all` for one process; True when it stopped on SIGTERM."""
    return not stop_all([proc], timeout_s)


def wait_http(
    url: str,
    *,
    timeout_s: float = READY_TIMEOUT_S,
    procs: Iterable[subprocess.Popen] = (),
    cancel: threading.Event | None = None,
) -> None:
    """Return once ``url`` answers a GET with 2xx; raise :class:`NotReady` after
    ``timeout_s``, as soon as one of ``procs`` exits, or when ``cancel`` is set."""
    procs = list(procs)
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        if cancel is not None and cancel.is_set():
            raise NotReady(f"{url}: waiting cancelled")
        if dead := [p.pid for p in procs if exited(p)]:
            raise NotReady(f"{url}: process {dead} exited")
        try:
            with _no_proxy.open(url, timeout=2) as resp:
                if 200 <= resp.status < 300:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            with exc:
                last = f"HTTP {exc.code}: {exc.read()[:200].decode(errors='replace')}"
        except OSError as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            raise NotReady(f"{url} not ready after {timeout_s:.0f} s ({last})")
        time.sleep(0.3)


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file ('' when there is none)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
