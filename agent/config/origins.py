"""Where each value of the merged gateway config came from, to name it in an error.

A value may come from the gateway file, a ``conf.d`` drop-in, a credential file or an
environment variable; an error names that source itself: the drop-in and its line, the
variable (``$CITYEDGE_METRICS__PORT``), the credential file. Arrays of tables append across
files, so each entry remembers its file and its index there; other keys remember the last file
that set them (the one that wins), tables the first file that opened them (where a missing key
belongs). Paths name array entries by their ``id`` or ``name`` (``devices[lamp-2].unit_id``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from drivers.core.locate import format_path, locate

Loc = tuple[str | int, ...]


class Origins:
    def __init__(self, main: Path) -> None:
        self.main = main
        self.texts: dict[Path, str] = {}
        self.items: dict[str, list[tuple[Path, int]]] = {}  # merged index -> (file, own index)
        self.leaves: dict[Loc, Path] = {}  # the last file setting a value
        self.tables: dict[Loc, Path] = {}  # the first file opening a table
        self.env: dict[tuple[str, ...], str] = {}  # lower-case path -> variable
        self.secrets: dict[str, str] = {}  # secret name -> where its value was read
        self.data: Any = {}  # the merged document (names of array entries)

    def add(self, path: Path, data: Mapping[str, Any]) -> None:
        try:
            self.texts[path] = path.read_text(encoding="utf-8")
        except OSError:
            self.texts[path] = ""
        for k, v in data.items():
            if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
                self.items.setdefault(k, []).extend((path, i) for i in range(len(v)))
            else:
                self._walk(path, (k,), v)

    def _walk(self, path: Path, loc: Loc, v: Any) -> None:
        if isinstance(v, dict):
            self.tables.setdefault(loc, path)
            for k, x in v.items():
                self._walk(path, (*loc, k), x)
        else:
            self.leaves[loc] = path

    def shown(self, loc: Loc) -> str:
        return format_path(loc, self.data)

    def __call__(self, loc: Loc, *, env: bool = True) -> tuple[str, int | None, str]:
        """(file or ``$VARIABLE``, line, path with names) of the value at ``loc``; with
        ``env=False`` the file's, even where a variable overrides it."""
        shown = self.shown(loc)
        low = tuple(str(x).lower() for x in loc)
        for n in range(len(low), 0, -1):
            var = self.env.get(low[:n]) if env else None
            if var is not None:
                return f"${var}", None, shown
        if len(loc) >= 2 and loc[0] == "secrets" and str(loc[1]) in self.secrets:
            return self.secrets[str(loc[1])], None, shown
        if len(loc) >= 2 and isinstance(loc[0], str) and isinstance(loc[1], int):
            entries = self.items.get(loc[0], [])
            if loc[1] < len(entries):
                path, idx = entries[loc[1]]
                return str(path), locate(self.texts[path], (loc[0], idx, *loc[2:])), shown
        for n in range(len(loc), 0, -1):
            f = self.leaves.get(loc[:n]) or self.tables.get(loc[:n])
            if f is not None:
                return str(f), locate(self.texts[f], loc), shown
        return str(self.main), None, shown
