"""Sorted, disjoint, inclusive integer ranges: the parts of a record already acknowledged or
dropped, and acknowledgements not yet committed.

A record holds the readings of one group commit (ids ``first .. first+n-1``); the publisher
acknowledges whatever its messages covered, which need not line up with records. What is done
inside a record is kept as offset ranges until the whole record is done and deleted, so a
reading acknowledged is never sent again and one not acknowledged is never deleted.
"""

from __future__ import annotations

from collections.abc import Iterable

Ranges = list[tuple[int, int]]


def merged(ranges: Iterable[tuple[int, int]]) -> Ranges:
    """Sorted, with overlapping and adjacent ranges joined."""
    out: Ranges = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def add(ranges: Ranges, lo: int, hi: int) -> Ranges:
    return merged([*ranges, (lo, hi)])


def count(ranges: Ranges) -> int:
    return sum(hi - lo + 1 for lo, hi in ranges)


def contains(ranges: Ranges, x: int) -> bool:
    return any(lo <= x <= hi for lo, hi in ranges)


def first_gap(ranges: Ranges, start: int = 0) -> int:
    """The smallest value >= ``start`` not in ``ranges``."""
    for lo, hi in ranges:
        if lo <= start <= hi:
            start = hi + 1
    return start


def to_text(ranges: Ranges) -> str:
    return ",".join(f"{lo}-{hi}" for lo, hi in ranges)


def from_text(text: str) -> Ranges:
    out: Ranges = []
    for item in text.split(","):
        lo, _, hi = item.partition("-")
        out.append((int(lo), int(hi)))
    return merged(out)
