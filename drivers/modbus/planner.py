"""Optimal read planner: the fewest Modbus requests, then the fewest registers, for a point set.

Model (per table). Drop every point whose span lies inside another point's span: whatever reads
the outer one reads it too. The remaining *maximal* spans, sorted by start, also have strictly
increasing ends, so a request reads a contiguous run of them, and the unused registers inside a
request are exactly the holes between consecutive maximal spans (overlaps are holes of size 0).
A request over spans i..k is feasible iff ``end_k - start_i`` fits the cap and every hole between
i and k is at most ``max_gap`` and holds no undefined / excluded register. Any optimal set of
requests can be rewritten as such a partition (see the test's exact set-cover oracle), so a
shortest-path DP over the sorted spans with the lexicographic cost (requests, registers) - or
a weighted sum of the two, e.g. RTU wire time - is optimal; a sliding-window minimum makes it
O(n) after the O(n log n) sort.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from drivers.core.profile import Limits, Point, Table

MAX_REGISTERS = 125  # FC3/FC4, Modbus Application Protocol v1.1b3 §6.3/§6.4
MAX_BITS = 2000  # FC1/FC2, §6.1/§6.2
_FC = {Table.COIL: 1, Table.DISCRETE: 2, Table.HOLDING: 3, Table.INPUT: 4}
_TABLE_ORDER = (Table.COIL, Table.DISCRETE, Table.HOLDING, Table.INPUT)  # = function code order


class PlanError(ValueError):
    """A point that no request can read; ``point`` names it, ``reason`` says why."""

    def __init__(self, point: Point | str, reason: str) -> None:
        self.point: str = point if isinstance(point, str) else point.name
        self.reason = reason
        super().__init__(f"point '{self.point}': {reason}")


@dataclass(frozen=True, slots=True)
class ReadRequest:
    table: Table
    start: int
    count: int  # registers, or bits for coil/discrete
    points: tuple[Point, ...]  # decoded from this request; each planned point is in exactly one

    @property
    def function_code(self) -> int:
        return _FC[self.table]

    def __hash__(self) -> int:
        # Points holding enum/flags dicts are unhashable; names identify them within a device.
        return hash((self.table, self.start, self.count, tuple(p.name for p in self.points)))

    @property
    def end(self) -> int:
        """One past the last address read."""
        return self.start + self.count

    def offset_of(self, point: Point) -> int:
        """Index of the point's first register (or bit) in this request's response."""
        return point.address - self.start


def cap_for(table: Table, limits: Limits) -> int:
    """Largest request for a table under the protocol limit and the device's own cap."""
    if table.is_bits:
        return min(MAX_BITS, limits.max_bits)
    return min(MAX_REGISTERS, limits.max_registers)


def forbidden_addresses(
    limits: Limits, excluded: Iterable[tuple[Table, int]] = ()
) -> dict[Table, frozenset[int]]:
    """Per table, the addresses no request may read (undefined ranges + learned exclusions)."""
    out: dict[Table, set[int]] = {}
    for rng in limits.undefined:
        out.setdefault(rng.table, set()).update(range(rng.start, rng.end + 1))
    for table, address in excluded:
        out.setdefault(table, set()).add(address)
    return {t: frozenset(a) for t, a in out.items()}


def _blocked_reason(point: Point, table_forbidden: frozenset[int], cap: int) -> str | None:
    width = point.registers
    if width > cap:
        unit = "bits" if point.table.is_bits else "registers"
        return f"needs {width} {unit} but a request may read at most {cap}"
    for a in range(point.address, point.address + width):
        if a in table_forbidden:
            return f"covers address {a}, which is undefined or rejected by the device"
    return None


def blocked_points(
    points: Sequence[Point], limits: Limits, *, excluded: frozenset[tuple[Table, int]] = frozenset()
) -> tuple[Point, ...]:
    """The points :func:`plan_reads` would refuse: wider than the cap or covering a forbidden
    address. The driver drops these (reporting them unsupported) before re-planning."""
    forbidden = forbidden_addresses(limits, excluded)
    return tuple(
        p
        for p in points
        if _blocked_reason(p, forbidden.get(p.table, frozenset()), cap_for(p.table, limits))
        is not None
    )


def _plan_table(
    table: Table,
    points: list[Point],
    limits: Limits,
    forbidden: frozenset[int],
    weights: tuple[float, float],
) -> list[ReadRequest]:
    cap = cap_for(table, limits)
    for p in points:
        reason = _blocked_reason(p, forbidden, cap)
        if reason is not None:
            raise PlanError(p, reason)
    # Sort by (start, longest first): a span is nested iff its end <= the running max end, and
    # then the last maximal span contains it.
    order = sorted(points, key=lambda p: (p.address, -p.registers))
    starts: list[int] = []
    ends: list[int] = []
    members: list[list[Point]] = []
    for p in order:
        end = p.address + p.registers
        if ends and end <= ends[-1]:
            members[-1].append(p)
        else:
            starts.append(p.address)
            ends.append(end)
            members.append([p])
    n = len(starts)
    # joinable[j]: spans j and j+1 may share a request (hole small enough and fully readable).
    joinable = []
    for j in range(n - 1):
        hole = range(ends[j], starts[j + 1])
        joinable.append(len(hole) <= limits.max_gap and not any(a in forbidden for a in hole))
    # cost[k]: optimal cost of spans 0..k-1 as (weighted cost, registers); cut[k]: first span of
    # the last request. The default weights (1, 0) make the first component the request count.
    # A last request over spans i..k-1 adds (per_req + per_reg * size, size) with
    # size = ends[k-1] - starts[i], so for a fixed k the best i minimises
    # key(i) = (cost[i][0] - per_reg * starts[i], cost[i][1] - starts[i]), independent of k.
    # Feasible i form a window sliding right as k grows (the cap) and restarting at an unjoinable
    # hole: a monotonic deque yields each window's minimum in O(1) amortised.
    per_req, per_reg = weights
    if table.is_bits:
        per_reg /= 16  # a register is 2 bytes on the wire, a bit 1/8 byte
    cost: list[tuple[float, int]] = [(0, 0)] * (n + 1)
    cut = [0] * (n + 1)
    window: deque[tuple[float, int, int]] = deque()  # (key, i) with increasing keys
    for k in range(1, n + 1):
        last = k - 1
        if last and not joinable[last - 1]:
            window.clear()
        key = (cost[last][0] - per_reg * starts[last], cost[last][1] - starts[last])
        while window and window[-1][:2] >= key:  # on ties keep the later i (shorter request)
            window.pop()
        window.append((*key, last))
        while ends[last] - starts[window[0][2]] > cap:
            window.popleft()  # never empties: every span fits the cap on its own
        weighted, regs, i = window[0]
        cost[k] = (weighted + per_req + per_reg * ends[last], regs + ends[last])
        cut[k] = i
    requests: list[ReadRequest] = []
    k = n
    while k > 0:
        i = cut[k]
        pts = sorted((p for m in members[i:k] for p in m), key=lambda p: p.address)
        requests.append(ReadRequest(table, starts[i], ends[k - 1] - starts[i], tuple(pts)))
        k = i
    requests.reverse()
    return requests


def plan_reads(
    points: Sequence[Point],
    limits: Limits,
    *,
    excluded: frozenset[tuple[Table, int]] = frozenset(),
    weights: tuple[float, float] | None = None,
) -> tuple[ReadRequest, ...]:
    """Optimal requests for ``points``, ordered by (function code, start).

    By default: fewest requests, then fewest registers. ``weights=(per_request, per_register)``
    minimises ``per_request * requests + per_register * registers`` instead (ties: fewer
    registers), e.g. :func:`rtu_weights` for the least RTU wire time; a bit costs 1/16 of a
    register. The rules (caps, ``max_gap``, undefined/excluded addresses) are the same either way.
    Raises :class:`PlanError` for a point no request can read.
    """
    if weights is None:
        weights = (1, 0)
    elif min(weights) < 0 or max(weights) <= 0:
        raise ValueError(f"weights must be >= 0 and not both 0, got {weights}")
    forbidden = forbidden_addresses(limits, excluded)
    by_table: dict[Table, list[Point]] = {}
    for p in points:
        by_table.setdefault(p.table, []).append(p)
    out: list[ReadRequest] = []
    for table in _TABLE_ORDER:
        if table in by_table:
            fb = forbidden.get(table, frozenset())
            out.extend(_plan_table(table, by_table[table], limits, fb, weights))
    return tuple(out)


def rtu_weights(char_time: float, turnaround: float = 0.005) -> tuple[float, float]:
    """(seconds per request, seconds per register) on an RTU line, for ``plan_reads(weights=)``:
    the fixed part of :func:`wire_time` and the 2 bytes each register adds to the response."""
    return (8 + 5 + 7) * char_time + turnaround, 2 * char_time


def plan_by_interval(
    points: Sequence[Point],
    limits: Limits,
    default_interval: float,
    *,
    excluded: frozenset[tuple[Table, int]] = frozenset(),
    weights: tuple[float, float] | None = None,
) -> Mapping[float, tuple[ReadRequest, ...]]:
    """One plan per poll interval (``point.interval`` or the device's), by ascending interval."""
    groups: dict[float, list[Point]] = {}
    for p in points:
        groups.setdefault(p.interval or default_interval, []).append(p)
    return {
        iv: plan_reads(groups[iv], limits, excluded=excluded, weights=weights)
        for iv in sorted(groups)
    }


def wire_time(req: ReadRequest, char_time: float, turnaround: float = 0.005) -> float:
    """Seconds one request occupies an RTU bus: request and response frames, the 3.5-character
    silent interval after each, and the device turnaround. ``char_time == 0`` (TCP) gives just
    the turnaround."""
    if char_time <= 0:
        return turnaround
    # request: unit, fc, start(2), count(2), crc(2); response: unit, fc, byte count, data, crc(2)
    data = (req.count + 7) // 8 if req.table.is_bits else 2 * req.count
    chars = 8 + (5 + data) + 2 * 3.5
    return chars * char_time + turnaround


def plan_wire_time(
    reqs: Sequence[ReadRequest], char_time: float, turnaround: float = 0.005
) -> float:
    return sum(wire_time(r, char_time, turnaround) for r in reqs)
