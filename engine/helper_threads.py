"""Helper threads on which a combined flush overlaps one server's wait with other work
(engine/flush_combined.py): the ledger statement while the claims are split, the
numbering round trip while the batches are applied.

Each round in flight borrows a helper of its own: two rounds can wait on each other's
Postgres row locks, and a helper shared between them could hold one round's task behind
the other's for good. A helper given back is kept for the next round rather than started
anew. A forked child starts with none: its parent's threads do not exist there.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

_idle: list[ThreadPoolExecutor] = []
_lock = threading.Lock()


def _forked() -> None:
    global _idle, _lock
    _idle, _lock = [], threading.Lock()  # the parent may have held the lock in a thread


os.register_at_fork(after_in_child=_forked)


@contextmanager
def borrowed() -> Iterator[ThreadPoolExecutor]:
    """A helper thread of this caller's own until the block ends. Leaving the block on an
    error first waits for what the helper still runs (a statement on the caller's
    connection, say), as leaving an executor's own block would."""
    with _lock:
        helper = _idle.pop() if _idle else ThreadPoolExecutor(1, "counter-flush-helper")
    try:
        yield helper
    except BaseException:
        helper.submit(int).result()  # one thread, in order: everything before it is done
        raise
    finally:
        with _lock:
            _idle.append(helper)
