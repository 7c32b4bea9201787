"""The command router: everything a command passes before it may touch field hardware.

Every channel (native JSON, remote config, Sparkplug, IoT Agent, the local control socket and
the CLI without a daemon) goes through ``execute_all``, in this order:

1. the channel's policy (signature / broker identity / peer credentials / off); a command
   that fails it is answered and audited but not remembered, so a forged id cannot poison
   the real one;
2. de-duplication: an id already answered within ``dedup_window`` gets that answer again
   (``duplicate: true``), from the durable store, across restarts; nothing is executed;
3. nonce (signed commands), age, target, value. A group of commands (a multi-metric DCMD)
   is validated whole and rejected whole;
4. the rate limit and the claim (id, nonce, rate slot) in one store call: committed unless a
   device would exceed its rate (then the group is rejected whole), then the writes go to
   the bus owners, then the answers are committed, audited and returned for publishing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from agent.config.gateway import CommandsSection
from agent.control import peer as peers
from agent.control.audit import AuditLog
from agent.control.model import (
    GATEWAY_ACTIONS,
    Command,
    CommandRejected,
    CommandResult,
    CommandStatus,
)
from agent.control.signing import SignedFields, verify
from agent.control.store import INTERRUPTED, Claim, CommandStore
from agent.control.validate import at_resolution, check_value, find_point, round_to_resolution
from drivers.base import DeviceBinding, WriteResult, WriteStatus
from drivers.core.profile import Point
from drivers.core.reading import Value

log = logging.getLogger("cityedge.commands")

Writer = Callable[[str, str, Value, float], Awaitable[WriteResult]]
Action = Callable[[Command], Awaitable[str | None]]
T = TypeVar("T")

_STATUS = {
    WriteStatus.OK: CommandStatus.OK,
    WriteStatus.REJECTED: CommandStatus.REJECTED,
    WriteStatus.FAILED: CommandStatus.FAILED,
    WriteStatus.TIMEOUT: CommandStatus.TIMEOUT,
}


def signed_fields(gateway_id: str, cmd: Command) -> SignedFields:
    """The members of ``cmd`` that its signature covers (agent/control/signing.py)."""
    ts = cmd.ts_text if cmd.ts_text is not None else _opt(cmd.issued_at_ms)
    return SignedFields(
        kid=cmd.kid or "",
        gateway=gateway_id,
        id=cmd.id,
        device=cmd.device or "",
        target=cmd.target,
        value=cmd.value,
        ts=ts,
        nonce=cmd.nonce or "",
    )


def _opt(v: int | None) -> str:
    return "" if v is None else str(v)


@dataclass(frozen=True, slots=True)
class _Plan:
    cmd: Command
    point: Point | None  # None for a gateway action
    value: Value  # normalized for the driver
    written: Value  # what the register will hold (the value at its resolution)


class CommandRouter:
    def __init__(
        self,
        policy: CommandsSection,
        bindings: Sequence[DeviceBinding],
        writer: Writer,
        audit: AuditLog,
        *,
        gateway_id: str = "",
        keys: Mapping[str, bytes] | None = None,
        default_kid: str | None = None,
        actions: Mapping[str, Action] | None = None,
        clock: Callable[[], float] = time.time,
        store: CommandStore | None = None,
    ) -> None:
        self.policy = policy
        self.channels = policy.effective_policy()
        self.devices = {b.id: b for b in bindings}
        self.writer = writer
        self.audit = audit
        self.gateway_id = gateway_id
        self.keys = dict(keys or {})
        self.default_kid = default_kid
        self.actions = dict(actions or {})
        self.clock = clock
        self.store = store or CommandStore(
            None, window=policy.dedup_window, nonce_window=nonce_window(policy), clock=clock
        )
        self._running: dict[str, asyncio.Future[CommandResult]] = {}
        self.counts: dict[str, int] = {s.value: 0 for s in CommandStatus}

    def set_bindings(self, bindings: Sequence[DeviceBinding]) -> None:
        self.devices = {b.id: b for b in bindings}

    async def execute(self, cmd: Command) -> CommandResult:
        return (await self.execute_all([cmd]))[0]

    async def execute_all(self, cmds: Sequence[Command]) -> list[CommandResult]:
        """Answer every command of a group (one message): one result and one audit record
        each, in order."""
        now = self.clock()
        loop = asyncio.get_running_loop()
        results: dict[int, CommandResult] = {}
        waits: list[tuple[int, asyncio.Future[CommandResult]]] = []
        todo: list[int] = []  # authenticated and new: executed, and their answers kept
        mine: dict[str, asyncio.Future[CommandResult]] = {}
        try:
            for i, cmd in enumerate(cmds):
                reason = self._authenticate(cmd)
                if reason is not None:
                    results[i] = self._rejected(cmd, reason)
                    continue
                cached = await self._io(self.store.answer, cmd.id, now)
                # no await between this look-up and the registration: a concurrent copy of
                # the same id waits for this one instead of executing too
                if cached is not None:
                    results[i] = cached.again(cmd.id)
                elif (fut := self._running.get(cmd.id)) is not None:
                    waits.append((i, fut))
                else:
                    mine[cmd.id] = self._running[cmd.id] = loop.create_future()
                    todo.append(i)
            if todo:
                results.update(await self._run_group([cmds[i] for i in todo], todo, now))
                await self._io(self.store.finish, [results[i] for i in todo], self.clock())
            for i in todo:
                fut = mine[cmds[i].id]
                if not fut.done():
                    fut.set_result(results[i])
        finally:
            for cid, fut in mine.items():
                if not fut.done():
                    fut.cancel()
                self._running.pop(cid, None)
        for i, fut in waits:
            try:
                results[i] = (await asyncio.shield(fut)).again(cmds[i].id)
            except asyncio.CancelledError:
                if not fut.cancelled():
                    raise  # this task is being cancelled, not the first copy
                results[i] = CommandResult(
                    cmds[i].id, CommandStatus.TIMEOUT, INTERRUPTED, duplicate=True
                )
        out = [results[i] for i in range(len(cmds))]
        for cmd, res in zip(cmds, out, strict=True):
            if not res.duplicate:
                self.counts[res.status.value] += 1
            self.audit.record(cmd, res)
        return out

    def acknowledge(self, cmd: Command, note: str) -> CommandResult:
        """For a command the protocol layer has already carried out (a Sparkplug rebirth
        request, which re-sends births and reaches no device): answered and audited only."""
        result = CommandResult(cmd.id, CommandStatus.OK, note, cmd.device, cmd.target)
        self.counts[result.status.value] += 1
        self.audit.record(cmd, result)
        return result

    def reject(
        self, cmd_id: str, reason: str, source: str, origin: str | None = None
    ) -> CommandResult:
        """For payloads that could not even be parsed into a Command: answered and audited."""
        result = CommandResult(cmd_id, CommandStatus.REJECTED, reason)
        self.counts[result.status.value] += 1
        self.audit.record(Command(cmd_id, source, None, "?", origin=origin), result)
        return result

    # -- stages -------------------------------------------------------------------------------
    def _authenticate(self, cmd: Command) -> str | None:
        channel = cmd.source
        policy = self.channels.get(channel)
        if policy is None:
            return f"unknown command channel '{channel}'"
        if policy == "off":
            if not self.policy.enabled and channel != "local":
                return "commands are disabled on this gateway ([commands] enabled = false)"
            return f'the {channel} command channel is off ([commands.policy] {channel} = "off")'
        if policy == "peer":
            return peers.refusal(cmd.peer, self.policy.local_group)
        if cmd.signature is None:
            if policy == "signature":
                return (
                    f"the {channel} channel requires signed commands "
                    "(sig, ts and nonce; see docs/COMMANDS.md)"
                )
            return None  # broker: the broker's account / certificate and ACL vouch for it
        if cmd.issued_at_ms is None or not cmd.nonce:
            return "signed commands need a timestamp (ts) and a nonce"
        reason = verify(
            self.keys, self.default_kid, signed_fields(self.gateway_id, cmd), cmd.signature
        )
        return reason or None

    async def _run_group(
        self, cmds: Sequence[Command], index: Sequence[int], now: float
    ) -> dict[int, CommandResult]:
        plans: list[_Plan] = []
        failed: dict[int, str] = {}
        for k, cmd in enumerate(cmds):
            try:
                plans.append(await self._check(cmd, now))
            except CommandRejected as exc:
                failed[k] = exc.reason
        if not failed:
            # the rate limit is checked where the claim is committed (one store call): a
            # group over it is claimed for nothing and rejected whole
            claims = [
                Claim(p.cmd.id, p.cmd.nonce if p.cmd.signature else None, _writes(p)) for p in plans
            ]
            limit = self.policy.rate_per_minute
            for device in await self._io(self.store.claim, claims, now, limit):
                k = next(i for i, p in enumerate(plans) if p.cmd.device == device)
                failed[k] = f"rate limit: more than {limit} commands per minute for '{device}'"
        if failed:
            first = min(failed)
            whole = (
                f"not executed: {cmds[first].target} was rejected "
                "(a command's metrics are validated and rejected together)"
            )
            return {
                index[k]: self._rejected(cmd, failed.get(k, whole)) for k, cmd in enumerate(cmds)
            }
        out: dict[int, CommandResult] = {}
        broken: CommandResult | None = None
        for k, plan in enumerate(plans):
            if broken is not None:
                out[index[k]] = self._rejected(
                    plan.cmd,
                    f"not executed: the write of {broken.target} before it {broken.status}",
                )
                continue
            res = await self._perform(plan)
            out[index[k]] = res
            if res.status is not CommandStatus.OK:
                broken = res
        return out

    async def _check(self, cmd: Command, now: float) -> _Plan:
        signed = cmd.signature is not None and cmd.nonce is not None
        if signed and await self._io(self.store.nonce_used, cmd.nonce, now):
            raise CommandRejected("nonce already used (replay)")
        if cmd.issued_at_ms is not None:
            age = now - cmd.issued_at_ms / 1000
            if age > self.policy.max_age:
                raise CommandRejected(
                    f"stale: issued {age:.0f} s ago (max {self.policy.max_age:g})"
                )
            if age < -self.policy.max_age:
                raise CommandRejected("issued in the future (check the platform's clock)")
        if cmd.device is None:
            if (cmd.target == "config") != (cmd.source == "config"):
                raise CommandRejected("config updates go to <prefix>/<gateway>/config only")
            if cmd.target not in GATEWAY_ACTIONS or cmd.target not in self.actions:
                known = ", ".join(a for a in GATEWAY_ACTIONS if a in self.actions)
                raise CommandRejected(f"unknown gateway action '{cmd.target}' (known: {known})")
            return _Plan(cmd, None, cmd.value, cmd.value)
        binding = self.devices.get(cmd.device)
        if binding is None:
            raise CommandRejected(f"unknown device '{cmd.device}'")
        point = find_point(binding.profile, cmd.target)
        if point is None:
            raise CommandRejected(f"device '{cmd.device}' has no point '{cmd.target}'")
        if not point.writable:
            raise CommandRejected(f"point '{cmd.target}' is read-only")
        value = check_value(point, cmd.value)
        return _Plan(cmd, point, value, at_resolution(point, value))

    async def _perform(self, plan: _Plan) -> CommandResult:
        cmd = plan.cmd
        try:
            if plan.point is None:
                reason = await self.actions[cmd.target](cmd)
                status = CommandStatus.OK if reason is None else CommandStatus.FAILED
                return CommandResult(cmd.id, status, reason, None, cmd.target)
            wr = await self.writer(
                cmd.device or "", plan.point.name, plan.value, self.policy.timeout
            )
        except Exception:  # one answer per command, whatever a driver or action does
            log.exception("command %s: unexpected failure", cmd.id)
            return CommandResult(
                cmd.id, CommandStatus.FAILED, "internal error (see the agent's log)", cmd.device
            )
        status = _STATUS[wr.status]
        value: Value = None
        requested: Value = None
        if status is CommandStatus.OK:
            value = plan.written if wr.readback is None else wr.readback
            value = round_to_resolution(plan.point, value)
            if plan.written != plan.value:
                requested = cmd.value
        return CommandResult(
            cmd.id, status, wr.reason, cmd.device, plan.point.name, value, requested=requested
        )

    def _rejected(self, cmd: Command, reason: str) -> CommandResult:
        return CommandResult(cmd.id, CommandStatus.REJECTED, reason, cmd.device, cmd.target)

    async def _io(self, fn: Callable[..., T], *args: object) -> T:
        """Store calls run on a worker thread: a commit is an fsync on an SD card."""
        return await asyncio.to_thread(fn, *args)


def nonce_window(policy: CommandsSection) -> float:
    """A nonce must be remembered while a command carrying it could still pass the age check
    (issued up to max_age in the future, accepted up to max_age later), and at least as long
    as the de-duplication record."""
    return max(policy.dedup_window, 2 * policy.max_age)


def _writes(plan: _Plan) -> tuple[str, ...]:
    return (plan.cmd.device,) if plan.point is not None and plan.cmd.device else ()
