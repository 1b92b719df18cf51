"""CPU seconds used by process trees, read from /proc: where a request's cost goes
(gunicorn, Redis, Postgres, the Celery worker), beside the load generator's own."""

from __future__ import annotations

import os

TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, str, float] | None:
    """(ppid, comm, cpu seconds) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is state (field 3); utime and stime are fields 14 and 15
    return int(fields[1]), comm, (int(fields[11]) + int(fields[12])) * TICK_S


def snapshot() -> dict[int, tuple[int, str, float]]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                out[int(name)] = st
    return out


def tree_cpu(snap: dict, root: int) -> float:
    """CPU seconds of ``root`` and every live descendant."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in snap.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in snap:
            total += snap[pid][2]
        todo += children.get(pid, [])
    return total


def named_cpu(snap: dict, comm: str) -> float:
    return sum(cpu for _, name, cpu in snap.values() if name == comm)


class CpuMeter:
    """CPU seconds per group between :meth:`start` and :meth:`stop`.

    ``trees`` maps a label to a root pid (its descendants count too); ``names`` maps a
    label to a process name counted machine-wide (e.g. every ``postgres`` process).
    """

    def __init__(self, trees: dict[str, int], names: dict[str, str]) -> None:
        self.trees = trees
        self.names = names

    def _read(self) -> dict[str, float]:
        snap = snapshot()
        out = {label: tree_cpu(snap, pid) for label, pid in self.trees.items()}
        out.update({label: named_cpu(snap, comm) for label, comm in self.names.items()})
        return out

    def start(self) -> None:
        self.before = self._read()

    def stop(self) -> dict[str, float]:
        after = self._read()
        return {k: max(0.0, after[k] - self.before[k]) for k in after}
