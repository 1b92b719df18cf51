"""A lean Redis connection for the requests' own round trip: the view beacon's one
``EVALSHA``, a page's pipeline (its view, delta snapshot and read model).

redis-py's per-command path (a pool checkout with its ``can_read`` poll, argument
encoding, event hooks, ``sendall``, a socket read wrapped in timeouts) costs several
times what the round trip itself costs the caller. A beacon or a page makes exactly one
such round trip per request, so the engine sends it here instead (:meth:`Wire.call`,
:meth:`Wire.pipeline`), on a plain socket that this process (and thread) owns, with the
commands packed by the caller and the replies parsed by hiredis. Everything else still
goes through redis-py.

The rules are those of ``engine.clients``:

* a command is sent once. A connection error or timeout while the command is being sent
  or its reply read raises ``redis.exceptions.ConnectionError`` / ``TimeoutError`` (the
  buffer turns it into ``BufferUnavailable``, a 503): Redis may have run it. The
  connection is dropped, and the next call opens a new one;
* before a command is written on a connection that sat idle, the socket is polled:
  a connection Redis closed meanwhile (a restart, ``CLIENT KILL``, an idle timeout) is
  replaced before anything is sent on it, so nothing can have run;
* ``NOSCRIPT`` (a new, restarted or failed-over server, ``SCRIPT FLUSH``) means Redis
  ran nothing: the script is loaded and that one command sent again;
* the connect and socket timeouts are the client's (2 s / 10 s by default), kept by the
  kernel (``SO_RCVTIMEO`` / ``SO_SNDTIMEO``) rather than by a poll before every read.

Connections are per thread (gunicorn's gthread workers run requests in threads) and per
process: a forked child never writes on its parent's socket (see :func:`_forked`).

Only a single Redis reached by TCP or a unix socket over RESP2 qualifies
(:meth:`Wire.of`); a Redis Cluster client, TLS, a credential provider, RESP3 keep
redis-py's path.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import threading
import weakref

try:
    import hiredis  # redis[hiredis], a dependency of the engine
    from hiredis import pack_command
except ImportError:  # pragma: no cover - then every call keeps redis-py's path
    hiredis = None

    def pack_command(args) -> bytes:
        return command(*args)


from redis import exceptions as rx
from redis.connection import Connection, UnixDomainSocketConnection

from .clients import CONNECT_TIMEOUT_S, SOCKET_TIMEOUT_S

READ_SIZE = 16_384
_POLLIN_OR_CLOSED = select.POLLIN | select.POLLERR | select.POLLHUP
_fork_generation = 0  # bumped in every forked child: connections from before are not ours


def _forked() -> None:
    global _fork_generation
    _fork_generation += 1


os.register_at_fork(after_in_child=_forked)


def bulk(value) -> bytes:
    """One RESP bulk string (``str`` as UTF-8, ``int`` and ``float`` as their repr)."""
    data = value if isinstance(value, bytes) else str(value).encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def command(*args) -> bytes:
    """A whole RESP command."""
    return b"*%d\r\n" % len(args) + b"".join(bulk(a) for a in args)


def evalsha_head(sha: str, keys, argc: int) -> bytes:
    """The start of ``EVALSHA sha len(keys) *keys`` followed by ``argc`` arguments: what
    stays the same from one call of a script on the same keys to the next. Append
    ``argc`` :func:`bulk` strings to make the command."""
    return (
        b"*%d\r\n" % (3 + len(keys) + argc)
        + bulk("EVALSHA")
        + bulk(sha)
        + (bulk(len(keys)) + b"".join(bulk(k) for k in keys))
    )


def _error(reply) -> rx.ResponseError:
    """An error reply as redis-py raises it."""
    message = str(reply)
    if message.startswith("NOSCRIPT"):
        return rx.NoScriptError(message)
    return rx.ResponseError(message)


class _Conn:
    """One connection: its file descriptor (no ``socket`` object: a client dropped without
    ``close()`` closes it in ``__del__``, quietly, whatever order the garbage collector
    takes), its reply parser and a poll on it."""

    __slots__ = ("fd", "reader", "poll", "__weakref__")

    def __init__(self, sock: socket.socket) -> None:
        self.fd = sock.detach()
        self.reader = hiredis.Reader()
        self.poll = select.poll()
        self.poll.register(self.fd, _POLLIN_OR_CLOSED)

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def shut(self) -> None:
        """End the connection but keep its descriptor until its thread lets go of it: a
        call under way in that thread fails instead of writing to a reused number."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                sock = socket.socket(fileno=self.fd)
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                finally:
                    sock.detach()

    __del__ = close


class Wire:
    """Script calls on a connection of this thread's own (see the module doc)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 6379,
        db: int = 0,
        *,
        path: str | None = None,
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float | None = CONNECT_TIMEOUT_S,
        socket_timeout: float | None = SOCKET_TIMEOUT_S,
    ) -> None:
        self.address = path if path is not None else (host, port)
        self.db = int(db or 0)
        self.username = username
        self.password = password
        self.connect_timeout = connect_timeout
        self.socket_timeout = socket_timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: weakref.WeakSet[_Conn] = weakref.WeakSet()  # for close()
        self._generation = _fork_generation
        self.handshake = self._handshake()

    @classmethod
    def of(cls, client) -> Wire | None:
        """A Wire to the same server, db, credentials and timeouts as a ``redis.Redis``
        built by ``engine.clients.redis_client``; None for any client it cannot stand in
        for (a cluster, TLS, RESP3, a credential provider, a custom connection class)."""
        pool = getattr(client, "connection_pool", None)
        cluster = getattr(client, "get_node_from_key", None) is not None
        if hiredis is None or pool is None or cluster:
            return None
        kw = pool.connection_kwargs
        if pool.connection_class not in (Connection, UnixDomainSocketConnection):
            return None
        if kw.get("credential_provider") is not None or kw.get("protocol") not in (None, 2, "2"):
            return None
        return cls(
            kw.get("host", "127.0.0.1"),
            int(kw.get("port", 6379)),
            kw.get("db", 0),
            path=kw.get("path") if pool.connection_class is UnixDomainSocketConnection else None,
            username=kw.get("username"),
            password=kw.get("password"),
            connect_timeout=kw.get("socket_connect_timeout") or kw.get("socket_timeout"),
            socket_timeout=kw.get("socket_timeout"),
        )

    def _handshake(self) -> list[bytes]:
        out = []
        if self.password is not None:
            user = (self.username,) if self.username else ()
            out.append(command("AUTH", *user, self.password))
        if self.db:
            out.append(command("SELECT", self.db))
        return out

    # -- connections -------------------------------------------------------------

    def _connect(self) -> _Conn:
        try:
            if isinstance(self.address, str):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.settimeout(self.connect_timeout)
                    sock.connect(self.address)
                except OSError:
                    sock.close()
                    raise
            else:
                sock = socket.create_connection(self.address, self.connect_timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except TimeoutError as exc:  # socket.timeout
            raise rx.TimeoutError(f"connecting to {self.address}: {exc}") from exc
        except OSError as exc:
            raise rx.ConnectionError(f"connecting to {self.address}: {exc}") from exc
        # blocking socket, timeouts kept by the kernel: no poll before every read
        sock.settimeout(None)
        if self.socket_timeout:
            whole = int(self.socket_timeout)
            tv = struct.pack("ll", whole, int((self.socket_timeout - whole) * 1e6))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        conn = _Conn(sock)
        try:
            for cmd in self.handshake:
                reply = self._round_trip(conn, cmd)
                if isinstance(reply, hiredis.ReplyError):
                    raise _error(reply)
        except BaseException:
            conn.close()
            raise
        with self._lock:
            self._open.add(conn)
        return conn

    def _conn(self) -> _Conn:
        """This thread's connection, opened (or replaced) when it has none, when it was
        opened before a fork, or when Redis closed it while it was idle."""
        if self._generation != _fork_generation:
            self._forget_parent()
        conn = getattr(self._local, "conn", None)
        if conn is not None and conn.poll.poll(0):  # idle, yet readable: closed by Redis
            self._drop(conn)
            conn = None
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def _forget_parent(self) -> None:
        """In a forked child: the parent's connections are never written to, read from
        or shut down here (the parent still uses them); the child opens its own. Their
        file descriptors are closed in the child only, which leaves the parent's
        connections as they are."""
        self._lock = threading.Lock()  # the parent may have held it in another thread
        self._open = weakref.WeakSet()
        self._local = threading.local()
        self._generation = _fork_generation

    def _drop(self, conn: _Conn) -> None:
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._lock:
            self._open.discard(conn)
        conn.close()

    def close(self) -> None:
        """End every connection of this process: this thread's is closed, the other
        threads' are shut down (each thread then closes its own and opens a new one at
        its next call)."""
        if self._generation != _fork_generation:
            self._forget_parent()
            return
        with self._lock:
            conns = list(self._open)
            self._open = weakref.WeakSet()
        mine = getattr(self._local, "conn", None)
        self._local.conn = None
        for conn in conns:
            if conn is mine:
                conn.close()
            else:
                conn.shut()

    # -- calls --------------------------------------------------------------------

    def _round_trip(self, conn: _Conn, payload: bytes):
        """Send one command (or, with an empty payload, nothing) and read one reply; an
        error reply is returned, not raised. Any failure drops the connection: the
        command is never sent again from here."""
        reader, fd = conn.reader, conn.fd
        try:
            sent = os.write(fd, payload) if payload else 0
            while sent < len(payload):  # a short write: only for very large commands
                sent += os.write(fd, payload[sent:])
            while True:
                data = os.read(fd, READ_SIZE)
                if not data:
                    raise rx.ConnectionError("Redis closed the connection before replying")
                reader.feed(data)
                reply = reader.gets()
                if reply is not False:
                    return reply
        except BlockingIOError as exc:  # SO_RCVTIMEO / SO_SNDTIMEO ran out
            self._drop(conn)
            raise rx.TimeoutError(f"no reply from Redis within {self.socket_timeout}s") from exc
        except (OSError, hiredis.ProtocolError) as exc:
            self._drop(conn)
            raise rx.ConnectionError(f"Redis connection lost: {exc}") from exc
        except rx.ConnectionError:
            self._drop(conn)
            raise

    def pipeline(self, payloads: list[bytes]) -> list:
        """Send packed commands in one write and read their replies, in order; an error
        reply is given back as its ``redis`` exception (``NoScriptError`` for
        ``NOSCRIPT``: Redis ran nothing), not raised. A connection error or timeout
        raises, as for :meth:`call`: any of them may have run, none is sent again."""
        if not payloads:
            return []
        conn = self._conn()
        replies = [self._round_trip(conn, b"".join(payloads))]
        while len(replies) < len(payloads):
            replies.append(self._next_reply(conn))
        return [_error(r) if isinstance(r, hiredis.ReplyError) else r for r in replies]

    def _next_reply(self, conn: _Conn):
        """The next reply already sent for on ``conn`` (see :meth:`_round_trip`)."""
        reply = conn.reader.gets()
        return reply if reply is not False else self._round_trip(conn, b"")

    def call(self, sha: str, source: str, payload: bytes):
        """Run a script's ``EVALSHA`` command (``payload``, packed with
        :func:`evalsha_head` + :func:`bulk`); returns its reply. A ``NOSCRIPT`` reply
        loads the script (``source``, whose SHA-1 is ``sha``) and sends that command
        once more: Redis ran nothing. Other error replies raise ``ResponseError``."""
        conn = self._conn()
        reply = self._round_trip(conn, payload)
        if isinstance(reply, hiredis.ReplyError):
            error = _error(reply)
            if not isinstance(error, rx.NoScriptError):
                raise error
            loaded = self._round_trip(conn, command("SCRIPT", "LOAD", source))
            if isinstance(loaded, hiredis.ReplyError):
                raise _error(loaded)
            if loaded.decode() != sha:
                raise rx.NoScriptError(f"SCRIPT LOAD gave {loaded!r}, not {sha}")
            reply = self._round_trip(conn, payload)
            if isinstance(reply, hiredis.ReplyError):
                raise _error(reply)
        return reply
