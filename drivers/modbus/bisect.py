"""Find exactly what a device rejects inside a read it refused (sans-I/O).

A read answered with exception 1, 2 or 3 (illegal function / address / value) is explored as
a generator: it yields the reads to try (:class:`Probe`) and is sent back ``True`` (answered)
or ``False`` (rejected again); its return value is the :class:`Findings`. The bus owner does
the I/O and decodes the points each answered probe completes.

Two passes, so that a device which rejects *everything* (booting, a gateway whose serial side
is down) costs one pass over the points and teaches nothing wrong:

1. points: the request is split into halves by point until each half reads or a single
   point is left, as the old bisection did; every point ends up read or unreadable;
2. registers (only when pass 1 got an answer, or the caller knows the device answered in this
   poll): the unread registers - the gaps between halves that read on their own, and the
   registers of unreadable points - are split by register until each is known readable or
   rejected. So the learned holes are exactly what the device rejects: a gap where only one
   half of a pair needed a further split is not taken for a hole as a whole (issue 15).

A request that was rejected although every register in it reads on its own (a device that
refuses long reads) yields a length cap instead: the longest read that was answered.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

from drivers.core.profile import Point


@dataclass(frozen=True, slots=True)
class Probe:
    start: int
    count: int
    points: tuple[Point, ...]  # the points this read covers whole (decoded when it answers)


@dataclass
class Findings:
    readable: list[tuple[int, int]] = field(default_factory=list)  # answered (start, end excl.)
    rejected: set[int] = field(default_factory=set)  # registers the device rejects
    unreadable: list[Point] = field(default_factory=list)  # points no answered read covered
    cap: int | None = None  # longest answered read, when nothing else explains the rejection
    probes: int = 0

    @property
    def answered(self) -> bool:
        return bool(self.readable)


@dataclass(frozen=True, slots=True)
class _Cell:
    """Points whose registers overlap (bits of one register, overlapping types): read whole."""

    start: int
    end: int
    points: tuple[Point, ...]


Explorer = Generator[Probe, bool, Findings]


def cells(points: Sequence[Point]) -> list[_Cell]:
    out: list[_Cell] = []
    for p in sorted(points, key=lambda p: (p.address, p.registers)):
        end = p.address + p.registers
        if out and p.address < out[-1].end:
            c = out[-1]
            out[-1] = _Cell(c.start, max(c.end, end), (*c.points, p))
        else:
            out.append(_Cell(p.address, end, (p,)))
    return out


def explore(points: Sequence[Point], *, deep: bool = False) -> Explorer:
    """Explore a request over ``points`` that the device just rejected. ``deep``: the device
    answered other reads of this poll, so register-level probing is worth it even if no
    half of this request reads."""
    f = Findings()
    later: list[tuple[int, int, bool]] = []  # register ranges for pass 2, and known rejected

    def by_point(cs: Sequence[_Cell], rejected: bool) -> Explorer:
        a, b = cs[0].start, max(c.end for c in cs)
        if not rejected:
            f.probes += 1
            if (yield Probe(a, b - a, tuple(p for c in cs for p in c.points))):
                f.readable.append((a, b))
                return f
        if len(cs) == 1:
            f.unreadable.extend(cs[0].points)
            later.append((a, b, True))
            return f
        mid = len(cs) // 2
        yield from by_point(cs[:mid], False)
        yield from by_point(cs[mid:], False)
        gap = (max(c.end for c in cs[:mid]), cs[mid].start)
        if gap[0] < gap[1]:
            later.append((*gap, False))
        return f

    def by_register(a: int, b: int, rejected: bool) -> Explorer:
        if not rejected:
            f.probes += 1
            if (yield Probe(a, b - a, ())):
                f.readable.append((a, b))
                return f
        if b - a == 1:
            f.rejected.add(a)
            return f
        mid = (a + b) // 2
        yield from by_register(a, mid, False)
        yield from by_register(mid, b, False)
        return f

    cs = cells(points)
    yield from by_point(cs, True)
    if later and (f.answered or deep):
        for a, b, rejected in later:
            yield from by_register(a, b, rejected)
    if f.answered and not f.rejected and not f.unreadable:
        f.cap = max(b - a for a, b in f.readable)  # every part reads: the length is refused
    return f
