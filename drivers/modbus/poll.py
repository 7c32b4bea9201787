"""What one poll of a Modbus device came to, and the exploration of the reads it rejected.

The session (drivers/modbus/session.py) reads a device's plan and collects the outcome in a
``PollResult`` (drivers/owner.py): the readings, whether the device answered at all, the
first failure (for its state, see drivers/device_state.py) and the points failing for a reason
of the device's own. Reads the device answered with exception 1/2/3 are set aside and explored
once the rest of the poll is read (``explore_rejected``): the generator of
drivers/modbus/bisect.py says what to read, the session's ``read`` does it, and what the device
rejects goes to its learned exclusions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from drivers.core.profile import Table
from drivers.core.reading import now_ms
from drivers.device_state import Reason
from drivers.modbus import bisect
from drivers.modbus.device import DeviceState
from drivers.modbus.pdu import GATEWAY_PATH_UNAVAILABLE, GATEWAY_TARGET_FAILED, SPAN_REJECTED
from drivers.modbus.planner import ReadRequest
from drivers.modbus.results import DeviceException
from drivers.polling import PollResult

# (table, start, count) -> (registers or bits, receive time ms); raises DeviceException, Abort
ExploreRead = Callable[[Table, int, int], Awaitable[tuple[list[int] | list[bool], int]]]


def exception_reason(code: int) -> tuple[Reason, str]:
    """The device-state reason of an exception reply to every read of a poll."""
    if code == GATEWAY_TARGET_FAILED:  # the gateway's device behind it is silent
        return Reason.TIMEOUT, "exception 11: the gateway's target device did not respond"
    if code == GATEWAY_PATH_UNAVAILABLE:
        return Reason.NO_ROUTE, "exception 10: gateway path unavailable"
    return Reason.EXCEPTION, f"exception {code} to every read"


class Abort(Exception):
    """Stop the current poll; the remaining points are reported with ``reason``; ``kind`` and
    ``detail`` are what it means for the device's state."""

    def __init__(self, reason: str, kind: Reason, detail: str | None = None) -> None:
        self.reason = reason
        self.kind = kind
        self.detail = detail
        super().__init__(reason)


async def explore_rejected(
    dev: DeviceState,
    poll: PollResult,
    rejected: list[tuple[ReadRequest, int]],
    read: ExploreRead,
) -> None:
    """Find what the device rejects in the requests it answered with exception 1/2/3. A
    device that rejected every read of its last poll too is not explored again: that is a
    device fault (booting, its gateway's serial side down), not a register map. Nothing
    is learned from a poll the device answered with exceptions only."""
    found: list[tuple[ReadRequest, int, bisect.Findings]] = []
    stopped: Abort | None = None
    if poll.answered or not dev.rejected_all:
        for req, code in rejected:
            try:
                f = await _explore(dev, poll, req, read, deep=poll.answered > 0)
            except Abort as stop:
                stopped = stop
                poll.fail(stop.kind, stop.detail)
                break
            found.append((req, code, f))
    ts = now_ms()
    for req, code, f in found:
        poll.readings += dev.bad(f.unreadable, ts, f"exception {code}")
        for p in f.unreadable:
            poll.failing[p.name] = Reason.EXCEPTION
        if not poll.answered:
            continue
        dev.learned.learn_registers(req.table, f.rejected, code)
        for p in f.unreadable:  # rejected as a whole although its registers read singly
            if not any(a in f.rejected for a in range(p.address, p.address + p.registers)):
                dev.learned.learn_point(p.name, code)
        if f.cap is not None:
            dev.learned.learn_cap(req.table, f.cap, code)
    done = {r.point for r in poll.readings}
    for req, code in rejected[len(found) :]:  # not explored, or cut short
        why = stopped.reason if stopped is not None else f"exception {code}"
        poll.readings += dev.bad([p for p in req.points if p.name not in done], ts, why)
        if stopped is None:
            for p in req.points:
                poll.failing[p.name] = Reason.EXCEPTION
    if stopped is None:
        dev.rejected_all = not poll.answered
        if not poll.answered:
            poll.fail(Reason.EXCEPTION, f"exception {rejected[0][1]} to every read")


async def _explore(
    dev: DeviceState, poll: PollResult, req: ReadRequest, read: ExploreRead, *, deep: bool
) -> bisect.Findings:
    gen = bisect.explore(req.points, deep=deep)
    try:
        probe = next(gen)
        while True:
            try:
                values, rx_ms = await read(req.table, probe.start, probe.count)
            except DeviceException as exc:
                if exc.code not in SPAN_REJECTED:
                    raise Abort(f"exception {exc.code}", *exception_reason(exc.code)) from exc
                probe = gen.send(False)
                continue
            poll.answered += 1
            dev.learned.readable(req.table, probe.start, probe.count)
            if probe.points:
                dev.decode(poll, probe.points, probe.start, values, rx_ms)
                for p in probe.points:
                    dev.learned.point_readable(p.name)
            probe = gen.send(True)
    except StopIteration as stop:
        findings: bisect.Findings = stop.value
        return findings
    finally:
        gen.close()
