"""Logging setup: one line per event, text or JSON (every process).

Each process calls :func:`setup` once at start with its own name, so merged logs say who spoke.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

_STD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra=`` fields become keys. ``pid`` is always the logging
    process's own; an ``extra`` key that would shadow one of the fixed keys is refused, so a
    line about another process names it in a field of its own (e.g. ``child_pid``)."""

    def __init__(self, process_name: str) -> None:
        super().__init__()
        self._proc = process_name

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "proc": self._proc,
            "pid": record.process,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                out.setdefault(key, value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup(process_name: str, level: str = "info", fmt: str = "text") -> None:
    """Configures the root logger to stderr for this process (replacing inherited handlers)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(process_name))
    else:
        formatter = logging.Formatter(
            f"%(asctime)s %(levelname)-7s {process_name}[{os.getpid()}] %(name)s: %(message)s"
        )
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(level.upper())
