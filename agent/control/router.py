"""The command router: everything a command passes before it may touch field hardware.

Order of checks (cheapest and safest first): signature (when required) -> age (nothing stale
executes after an outage) -> idempotency (same id within the window: same answer, no second
write) -> target exists and is writable -> value valid for the point -> per-device rate limit
-> the write, queued ahead of polls on the device's bus, then read back.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence

from agent.config.gateway import CommandsSection
from agent.control.audit import AuditLog
from agent.control.model import (
    GATEWAY_ACTIONS,
    Command,
    CommandRejected,
    CommandResult,
    CommandStatus,
)
from agent.control.validate import check_value
from agent.reading import Value
from drivers.base import DeviceBinding, WriteResult, WriteStatus

Writer = Callable[[str, str, Value, float], Awaitable[WriteResult]]
Action = Callable[[Command], Awaitable[str | None]]

_STATUS = {
    WriteStatus.OK: CommandStatus.OK,
    WriteStatus.REJECTED: CommandStatus.REJECTED,
    WriteStatus.FAILED: CommandStatus.FAILED,
    WriteStatus.TIMEOUT: CommandStatus.TIMEOUT,
}


def canonical(cmd: Command) -> bytes:
    """The signed string: fields in a fixed order, the value as canonical JSON."""
    value = json.dumps(cmd.value, sort_keys=True, separators=(",", ":"))
    parts = (cmd.id, cmd.device or "", cmd.target, value, str(cmd.issued_at_ms), cmd.nonce or "")
    return "\n".join(parts).encode()


def sign(key: bytes, cmd: Command) -> str:
    return hmac.new(key, canonical(cmd), hashlib.sha256).hexdigest()


class CommandRouter:
    def __init__(
        self,
        policy: CommandsSection,
        bindings: Sequence[DeviceBinding],
        writer: Writer,
        audit: AuditLog,
        *,
        hmac_key: bytes | None = None,
        actions: Mapping[str, Action] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.devices = {b.id: b for b in bindings}
        self.writer = writer
        self.audit = audit
        self.hmac_key = hmac_key
        self.actions = dict(actions or {})
        self.clock = clock
        self._done: OrderedDict[str, tuple[float, CommandResult]] = OrderedDict()
        self._running: dict[str, asyncio.Future[CommandResult]] = {}
        self._nonces: OrderedDict[str, float] = OrderedDict()
        self._rate: dict[str, deque[float]] = {}
        self.counts: dict[str, int] = {s.value: 0 for s in CommandStatus}

    def set_bindings(self, bindings: Sequence[DeviceBinding]) -> None:
        self.devices = {b.id: b for b in bindings}

    async def execute(self, cmd: Command) -> CommandResult:
        self._expire()
        cached = self._done.get(cmd.id)
        if cached is not None and self._authentic(cmd):
            result = _dup(cached[1])
            self.audit.record(cmd, result)
            return result
        running = self._running.get(cmd.id)
        if running is not None:
            return _dup(await asyncio.shield(running))
        fut: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._running[cmd.id] = fut
        try:
            try:
                result = await self._execute(cmd)
            except CommandRejected as exc:
                result = CommandResult(
                    cmd.id, CommandStatus.REJECTED, exc.reason, cmd.device, cmd.target
                )
            fut.set_result(result)
        finally:
            if not fut.done():
                fut.cancel()
            del self._running[cmd.id]
        if result.reason != "bad signature":  # a forged id must not poison the real one
            self._done[cmd.id] = (self.clock(), result)
        self.counts[result.status.value] += 1
        self.audit.record(cmd, result)
        return result

    def reject(self, cmd_id: str, reason: str, source: str) -> CommandResult:
        """For payloads that could not even be parsed into a Command."""
        result = CommandResult(cmd_id, CommandStatus.REJECTED, reason)
        self.counts[result.status.value] += 1
        self.audit.record(Command(cmd_id, source, None, "?"), result)
        return result

    def _authentic(self, cmd: Command) -> bool:
        return not self.policy.require_signature or self._signature_ok(cmd)

    def _signature_ok(self, cmd: Command) -> bool:
        if self.hmac_key is None or cmd.signature is None:
            return False
        return hmac.compare_digest(sign(self.hmac_key, cmd), cmd.signature.lower())

    async def _execute(self, cmd: Command) -> CommandResult:
        now = self.clock()
        if self.policy.require_signature or cmd.signature is not None:
            if cmd.issued_at_ms is None or not cmd.nonce:
                raise CommandRejected("signed commands need a timestamp and a nonce")
            if not self._signature_ok(cmd):
                raise CommandRejected("bad signature")
            if cmd.nonce in self._nonces:
                raise CommandRejected("nonce already used (replay)")
            self._nonces[cmd.nonce] = now
        if cmd.issued_at_ms is not None:
            age = now - cmd.issued_at_ms / 1000
            if age > self.policy.max_age:
                raise CommandRejected(
                    f"stale: issued {age:.0f} s ago (max {self.policy.max_age:g})"
                )
            if age < -self.policy.max_age:
                raise CommandRejected("issued in the future (check the platform's clock)")
        if cmd.device is None:
            return await self._gateway_action(cmd)
        binding = self.devices.get(cmd.device)
        if binding is None:
            raise CommandRejected(f"unknown device '{cmd.device}'")
        point = next((p for p in binding.profile.points if p.name == cmd.target), None)
        if point is None:  # IoT Agent / NGSI-LD clients name attributes, i.e. metrics
            point = next((p for p in binding.profile.points if p.metric == cmd.target), None)
        if point is None:
            raise CommandRejected(f"device '{cmd.device}' has no point '{cmd.target}'")
        if not point.writable:
            raise CommandRejected(f"point '{cmd.target}' is read-only")
        value = check_value(point, cmd.value)
        self._rate_limit(cmd.device, now)
        wr = await self.writer(cmd.device, point.name, value, self.policy.timeout)
        return CommandResult(
            cmd.id, _STATUS[wr.status], wr.reason, cmd.device, point.name, wr.readback
        )

    async def _gateway_action(self, cmd: Command) -> CommandResult:
        if cmd.target not in GATEWAY_ACTIONS or cmd.target not in self.actions:
            known = ", ".join(a for a in GATEWAY_ACTIONS if a in self.actions)
            raise CommandRejected(f"unknown gateway action '{cmd.target}' (known: {known})")
        reason = await self.actions[cmd.target](cmd)
        if reason is not None:
            return CommandResult(cmd.id, CommandStatus.FAILED, reason, None, cmd.target)
        return CommandResult(cmd.id, CommandStatus.OK, None, None, cmd.target)

    def _rate_limit(self, device: str, now: float) -> None:
        window = self._rate.setdefault(device, deque())
        while window and now - window[0] > 60.0:
            window.popleft()
        if len(window) >= self.policy.rate_per_minute:
            raise CommandRejected(
                f"rate limit: more than {self.policy.rate_per_minute} "
                f"commands per minute for '{device}'"
            )
        window.append(now)

    def _expire(self) -> None:
        now = self.clock()
        while self._done and now - next(iter(self._done.values()))[0] > self.policy.dedup_window:
            self._done.popitem(last=False)
        while self._nonces and now - next(iter(self._nonces.values())) > 2 * self.policy.max_age:
            self._nonces.popitem(last=False)


def _dup(result: CommandResult) -> CommandResult:
    return CommandResult(
        result.id,
        result.status,
        result.reason,
        result.device,
        result.target,
        result.value,
        duplicate=True,
    )
