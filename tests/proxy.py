"""A TCP proxy the tests can cut: makes a real server unreachable without stopping it."""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target``; ``cut()`` closes every connection and
    refuses new ones, ``restore()`` accepts again. ``lose_next_reply(match)`` lets the
    next request whose bytes ``match`` accepts through, and closes its connection when
    the reply comes back, before the client gets it: the server did the work, the
    client cannot know."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopped = False
        self._lose_match = None  # the request whose reply is to be lost, once
        self._lose_reply = threading.Event()
        self.replies_lost = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if not self._open.is_set():  # cut() ran while we were connecting
                    client.close()
                    upstream.close()
                    continue
                self._conns += [client, upstream]
            for a, b, replies in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pipe, args=(a, b, replies), daemon=True).start()

    def lose_next_reply(self, match=lambda request: True) -> None:
        self._lose_match = match

    def _pipe(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        try:
            while data := src.recv(65536):
                match = self._lose_match
                if not replies and match is not None and match(data):
                    self._lose_match = None
                    self._lose_reply.set()
                if replies and self._lose_reply.is_set():
                    self._lose_reply.clear()
                    self.replies_lost += 1
                    break  # the finally below closes both sides
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self._lock:
            self._open.clear()
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):  # already shut down by its pipe thread
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._stopped = True
        self.cut()
        self._listener.close()
