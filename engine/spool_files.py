"""A process' own view spool file (:mod:`engine.spool`): created whole (its header
written under a temporary name), locked with ``flock`` for as long as the process lives,
appended to record by record, deleted once every view in it is in Redis, or let go of
for a survivor to take over (:mod:`engine.spool_orphans`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from pathlib import Path

from .spool_format import HEADER_SIZE, header

SUFFIX = ".spool"
PARTIAL = ".new"  # a spool file being created (its header not yet written)
TOKEN_FILE = "spool.id"  # names the directory: its spools' ids start with it


def dir_token(directory: Path) -> str:
    """The directory's token (made by the first process to ask): the prefix of the
    ids of its spools, so a sweep removes only fences of spools it can see."""
    path = directory / TOKEN_FILE
    if not path.exists():
        tmp = directory / f".{TOKEN_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        tmp.write_text(secrets.token_hex(6) + "\n")
        try:
            os.link(tmp, path)  # atomic: the first one wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolFile:
    """A process' own spool file, locked (``flock``) for as long as the process lives."""

    def __init__(self, directory: Path, token: str, scope: str, shards: int) -> None:
        self.id = f"{token}-{os.getpid()}-{secrets.token_hex(4)}"
        self.path = directory / f"{self.id}{SUFFIX}"
        partial = directory / f"{self.id}{PARTIAL}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        fd = os.open(partial, flags, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # new: nobody else has it
            os.write(fd, header(scope, shards))
            os.rename(partial, self.path)  # found by survivors only from now on, whole
            _sync_dir(directory)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                partial.unlink()
            raise
        self.fd = fd
        self.size = HEADER_SIZE
        self.chain: dict[int, int] = {}  # shard -> the fence its next part follows (0: none)
        self.mark = HEADER_SIZE  # the last checkpoint written

    def append(self, data: bytes) -> None:
        """Write whole records; OSError (the file cut back to its last whole record)
        when the disk refuses them."""
        try:
            written = os.write(self.fd, data)
        except OSError:
            self._cut()
            raise
        if written != len(data):
            self._cut()
            raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
        self.size += len(data)

    def _cut(self) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, self.size)

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def delete(self) -> None:
        """Every view in it is in Redis: remove it."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.fd)

    def abandon(self) -> None:
        """Let go of it with views not yet in: a survivor takes it over."""
        os.close(self.fd)
