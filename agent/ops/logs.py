"""Logging to stderr with levels; journald priorities when running under systemd.

When stderr is connected to the journal (``$JOURNAL_STREAM`` set by systemd) each line gets the
``<N>`` syslog-priority prefix that journald's stream parser turns into PRIORITY=N, so
``journalctl -p warning`` works without a journald library.
"""

from __future__ import annotations

import logging
import os
import sys

_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6)
        return f"<{prio}>{record.name}: {super().format(record)}"


class DedupFilter(logging.Filter):
    """Collapse a burst of identical messages (a dead device failing every poll) into one line
    plus a periodic "repeated N times" summary, so the journal on an SD card is not flooded."""

    def __init__(self, window: float = 300.0) -> None:
        super().__init__()
        self.window = window
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not getattr(record, "dedup", False):
            return True
        key = (record.name, record.levelno, record.getMessage())
        first, count = self._seen.get(key, (record.created, 0))
        if count == 0:
            self._seen[key] = (record.created, 1)
            return True
        if record.created - first < self.window:
            self._seen[key] = (first, count + 1)
            return False
        self._seen[key] = (record.created, 1)
        if count > 1:
            record.msg = (
                f"{record.getMessage()} (repeated {count - 1} times in "
                f"{record.created - first:.0f} s)"
            )
            record.args = ()
        return True


def setup_logging(level: str = "info") -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"
            )
        )
    handler.addFilter(DedupFilter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # we log its errors ourselves
