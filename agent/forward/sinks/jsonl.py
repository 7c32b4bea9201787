"""JSON-lines sink: one reading per line, to stdout or an append-only file."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from agent.forward.sinks.base import Sink, SinkStats
from drivers.core.reading import Reading


class JsonLinesSink(Sink):
    def __init__(self, name: str, path: str = "-", flush_interval: float = 0.2) -> None:
        self.name = name
        self._path = path
        self._flush_interval = flush_interval
        self._fh: TextIO | None = None
        self.written = 0

    def _open(self) -> TextIO:
        if self._fh is None:
            if self._path == "-":
                self._fh = sys.stdout
            else:
                p = Path(self._path)
                p.parent.mkdir(parents=True, exist_ok=True)
                self._fh = p.open("a", encoding="utf-8", buffering=1 << 16)
        return self._fh

    async def submit(self, batch: Sequence[Reading]) -> None:
        fh = self._open()
        fh.write("".join(json.dumps(r.to_dict(), separators=(",", ":")) + "\n" for r in batch))
        self.written += len(batch)

    def stats(self) -> SinkStats:
        return SinkStats(name=self.name, kind=type(self).__name__, readings=self.written)

    async def run(self) -> None:
        # Bounded latency: whatever was submitted is on disk/terminal within flush_interval.
        while True:
            await asyncio.sleep(self._flush_interval)
            if self._fh is not None:
                self._fh.flush()

    async def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            if self._fh is not sys.stdout:
                self._fh.close()
            self._fh = None
