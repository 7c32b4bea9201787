"""Best-effort line numbers for a field path inside a TOML text.

tomllib gives no positions for values, so we walk table headers: the n-th ``[[devices]]`` block,
then the ``key =`` line inside it. Good enough to point a technician at the right line.
"""

from __future__ import annotations

import re
from typing import Any

_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\"-]+)\s*\]\]?\s*(#.*)?$")


def locate(text: str, path: tuple[str | int, ...]) -> int | None:
    lines = text.splitlines()
    start, end = 0, len(lines)
    i = 0
    table: list[str] = []
    while i < len(path):
        part = path[i]
        nxt = path[i + 1] if i + 1 < len(path) else None
        if isinstance(part, str) and isinstance(nxt, int):
            name = ".".join([*table, part])
            found = _nth_header(lines, name, nxt, start, end, array=True)
            if found is None:
                return _key_line(lines, part, start, end)
            start, end = found
            table.append(part)
            i += 2
            continue
        if isinstance(part, str):
            name = ".".join([*table, part])
            found = _nth_header(lines, name, 0, start, end, array=False)
            if found is not None and nxt is not None:
                start, end = found
                table.append(part)
                i += 1
                continue
            line = _key_line(lines, part, start, end)
            if line is not None:
                return line
            if found is not None:
                return found[0] + 1
            # a key that is not there (a missing one, or a default): its table's header
            return start + 1 if table else None
        i += 1
    return start + 1 if start or table else None


def _nth_header(
    lines: list[str], name: str, n: int, start: int, end: int, array: bool
) -> tuple[int, int] | None:
    count = -1
    for idx in range(start, end):
        m = _HEADER.match(lines[idx])
        if (
            m
            and m.group(1).replace('"', "") == name
            and lines[idx].strip().startswith("[[" if array else "[")
        ):
            count += 1
            if count == n:
                stop = end
                for j in range(idx + 1, end):
                    h = _HEADER.match(lines[j])
                    if h and not h.group(1).startswith(name + "."):
                        stop = j
                        break
                return idx, stop
    return None


def _key_line(lines: list[str], key: str, start: int, end: int) -> int | None:
    pat = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=")
    for idx in range(start, end):
        if pat.match(lines[idx]):
            return idx + 1
    return None


def format_path(loc: tuple[Any, ...], data: Any = None) -> str:
    """``devices[1].unit_id``; with the document ``data``, array entries that have an ``id``
    or a ``name`` are named by it instead: ``devices[lamp-2].unit_id``, ``points[power].type``."""
    s = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            item = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
            name = _name_of(item)
            if name is not None and sum(_name_of(x) == name for x in node) > 1:
                name = None  # a duplicate id: only the index tells them apart
            s += f"[{name if name is not None else part}]"
            node = item
        else:
            s += ("." if s else "") + str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return s


def _name_of(item: Any) -> str | None:
    if isinstance(item, dict):
        for key in ("id", "name"):
            v = item.get(key)
            if isinstance(v, str) and v and all(c not in v for c in "[]. "):
                return v
    return None


def locate_named(text: str, table: str, key: str, value: str) -> tuple[int, int] | None:
    """The index of the ``[[table]]`` block whose ``key = "value"``, and the line of that key
    (1-based); None if no block of ``text`` has it."""
    lines = text.splitlines()
    n = -1
    pat = re.compile(rf"^\s*{re.escape(key)}\s*=\s*[\"']{re.escape(value)}[\"']")
    inside = False
    for idx, line in enumerate(lines):
        m = _HEADER.match(line)
        if m:
            inside = line.strip().startswith("[[") and m.group(1).replace('"', "") == table
            if inside:
                n += 1
            continue
        if inside and pat.match(line):
            return n, idx + 1
    return None
