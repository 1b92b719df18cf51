"""A small progress display on stderr: numbered steps, their duration and a one-line
result, plus a live elapsed/expected clock while a step runs (only on a terminal)."""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager


class Progress:
    def __init__(self, total: int, stream=None) -> None:
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.started = time.monotonic()
        self._result = ""

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def note(self, text: str) -> None:
        self._write(f"        {text}\n")

    def result(self, text: str) -> None:
        """The one-line outcome printed when the current step ends."""
        self._result = text

    @contextmanager
    def step(self, label: str, expected_s: float | None = None):
        self.done += 1
        head = f"[{self.done:>2}/{self.total}] {label}"
        self._result = ""
        stop = threading.Event()
        clock = None
        if self.live:
            clock = threading.Thread(target=self._tick, args=(head, expected_s, stop), daemon=True)
            clock.start()
        else:
            self._write(f"{head} ...\n")
        t0 = time.monotonic()
        try:
            yield self
        finally:
            stop.set()
            if clock is not None:
                clock.join()
            took = time.monotonic() - t0
            total = time.monotonic() - self.started
            tail = f"  {self._result}" if self._result else ""
            prefix = "\r\033[K" + head if self.live else head
            self._write(f"{prefix}  ({took:.1f}s, total {total:.0f}s){tail}\n")

    def _tick(self, head: str, expected_s: float | None, stop: threading.Event) -> None:
        t0 = time.monotonic()
        while not stop.wait(0.25):
            elapsed = time.monotonic() - t0
            of = f"/~{expected_s:.0f}" if expected_s else ""
            self._write(f"\r\033[K{head}  {elapsed:5.1f}s{of}")
