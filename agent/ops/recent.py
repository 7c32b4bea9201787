"""The last warnings and errors of the daemon, kept in memory for the commissioning page.

A logging handler on the root logger holding a bounded ring of WARNING+ records (the control
socket's ``warnings`` operation serves it, agent/control/views.py). A message repeated while it
is still in the ring is counted on its entry instead of pushing the others out: a device failing
every poll must not hide the one warning that matters. Nothing is written anywhere; the journal
keeps the full log.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from dataclasses import dataclass

from drivers.core.reading import iso_ms

CAPACITY = 100
_MAX_MESSAGE = 2000  # characters kept of one message (a traceback is in the journal)


@dataclass(slots=True)
class Recent:
    seq: int  # increases with every record kept (new or repeated): "what is new since N"
    first_ms: int
    last_ms: int
    level: str
    logger: str
    message: str
    count: int = 1

    def to_dict(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "time": iso_ms(self.last_ms),
            "first": iso_ms(self.first_ms),
            "level": self.level,
            "logger": self.logger,
            "message": self.message,
            "count": self.count,
        }


class RecentLog(logging.Handler):
    def __init__(self, capacity: int = CAPACITY, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self.capacity = capacity
        self._ring: OrderedDict[tuple[str, str, str], Recent] = OrderedDict()
        self._seq = itertools.count(1)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string is the caller's bug, not a reason to fail
            message = str(record.msg)
        message = message[:_MAX_MESSAGE]
        ms = int(record.created * 1000)
        key = (record.levelname, record.name, message)
        seq = next(self._seq)
        entry = self._ring.pop(key, None)
        if entry is None:
            entry = Recent(seq, ms, ms, record.levelname, record.name, message)
        else:
            entry.seq, entry.last_ms, entry.count = seq, ms, entry.count + 1
        self._ring[key] = entry
        while len(self._ring) > self.capacity:
            self._ring.popitem(last=False)

    def records(self, since: int = 0) -> list[dict[str, object]]:
        """Newest last; only entries added or repeated after ``since`` (a ``seq``)."""
        return [e.to_dict() for e in self._ring.values() if e.seq > since]
