"""The engine logs each flush, batch and reconcile as one JSON object (``event``, then
the record's fields). :class:`JsonLineFormatter` prints those records as JSON lines,
with the time, level, logger and pid, and any other record as before."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

# Loggers whose records are JSON objects.
STRUCTURED_LOGGERS = ("engine",)


class JsonLineFormatter(logging.Formatter):
    """Records of ``STRUCTURED_LOGGERS`` as one JSON object per line; any other record
    by ``fallback``."""

    def __init__(self, fallback: logging.Formatter | None = None) -> None:
        super().__init__()
        self.fallback = fallback or logging.Formatter()

    @staticmethod
    def structured(name: str) -> bool:
        return any(name == n or name.startswith(n + ".") for n in STRUCTURED_LOGGERS)

    def format(self, record: logging.LogRecord) -> str:
        if not self.structured(record.name):
            return self.fallback.format(record)
        message = record.getMessage()
        try:
            fields = json.loads(message)
        except ValueError:
            fields = None
        if not isinstance(fields, dict):
            fields = {"message": message}
        when = datetime.fromtimestamp(record.created, timezone.utc)
        line = {
            "ts": when.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            **fields,
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)  # json escapes newlines: one line


def use_json_lines(logger: logging.Logger | None = None) -> None:
    """Give every handler of ``logger`` (default: the root logger) a JsonLineFormatter
    that wraps its current formatter."""
    for handler in (logger or logging.getLogger()).handlers:
        if not isinstance(handler.formatter, JsonLineFormatter):
            handler.setFormatter(JsonLineFormatter(handler.formatter))
