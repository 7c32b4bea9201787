"""The pipeline's feeder: what queued while a sink was busy goes over in one submit, and each
device's transitions stay in order with that device's readings."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

from agent.forward.sinks.base import SinkStats
from agent.ingest.pipeline import _Feed
from drivers.core.reading import Reading
from drivers.device_state import Reason, State, Transition

Event = tuple[str, str, int]  # (device, "r" reading value / "t" transition, index)


def reading(device: str, i: int) -> Reading:
    return Reading("gw1", device, "streetlight", "power", "power", float(i), "W", "WTT", i, seq=i)


def transition(device: str, i: int, online: bool = True) -> Transition:
    up, down = State.ONLINE, State.OFFLINE
    state, previous = (up, down) if online else (down, up)
    return Transition(device, "bus1", state, previous, None if online else Reason.TIMEOUT, None, i)


class RecordingSink:
    """Commits take a while (the outbox's group commit): what it was handed and heard, in the
    order it would publish them."""

    name = "rec"

    def __init__(self) -> None:
        self.submits: list[int] = []
        self.events: list[Event] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def submit(self, batch: Sequence[Reading]) -> None:
        self.submits.append(len(batch))
        self.events += [(r.device_id, "r", int(r.value)) for r in batch]  # type: ignore[arg-type]
        await self.gate.wait()

    def device_status(self, t: Transition) -> None:
        self.events.append((t.device_id, "t", t.at_ms))

    async def run(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def stats(self) -> SinkStats:
        return SinkStats(name=self.name, kind="rec")


def per_device(events: Sequence[Event]) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = {}
    for e in events:
        out.setdefault(e[0], []).append(e)
    return out


async def feed(items: Sequence[list[Reading] | Transition]) -> RecordingSink:
    sink = RecordingSink()
    f = _Feed(sink)
    for item in items:
        f.queue.put_nowait(item)
    task = asyncio.create_task(f.run())
    await asyncio.wait_for(f.queue.join(), 5)
    task.cancel()
    return sink


async def test_start_up_transitions_do_not_split_the_batch() -> None:
    """Every device announces "online" before its first poll: 50 of them queued while a
    commit ran go over as one submit (one commit wait each made 50 devices take 5 s to get
    through, their readings held in memory meanwhile)."""
    items: list[list[Reading] | Transition] = []
    for d in range(50):
        dev = f"sl-{d}"
        items += [transition(dev, d), [reading(dev, 12 * d + k) for k in range(12)]]
    sink = await feed(items)
    assert sink.submits == [600]
    for dev, evs in per_device(sink.events).items():
        assert [kind for _, kind, _ in evs] == ["t"] + ["r"] * 12, dev


async def test_a_device_going_down_after_its_readings_splits_there() -> None:
    """The failed poll's readings (points BAD) are handed over before the device's offline
    transition is heard; another device's readings do not force a split."""
    items: list[list[Reading] | Transition] = [
        [reading("a", 1)],
        [reading("b", 2)],
        transition("b", 3),  # no readings of b after... b has readings before: split
        transition("c", 4),  # c has none in the batch: heard at once
        [reading("a", 5)],
        transition("a", 6, online=False),
    ]
    sink = await feed(items)
    assert sink.submits == [2, 1]
    assert per_device(sink.events) == {
        "a": [("a", "r", 1), ("a", "r", 5), ("a", "t", 6)],
        "b": [("b", "r", 2), ("b", "t", 3)],
        "c": [("c", "t", 4)],
    }


async def test_any_interleaving_keeps_each_devices_order() -> None:
    rng = random.Random(1507)
    for _ in range(200):
        items: list[list[Reading] | Transition] = []
        for i in range(rng.randint(1, 40)):
            dev = rng.choice("abcde")
            if rng.random() < 0.3:
                items.append(transition(dev, i, rng.random() < 0.5))
            else:
                items.append([reading(dev, i)])
        sink = await feed(items)
        expected = per_device(
            [
                (it.device_id, "t", it.at_ms)
                if isinstance(it, Transition)
                else (it[0].device_id, "r", int(it[0].value))  # type: ignore[arg-type]
                for it in items
            ]
        )
        assert per_device(sink.events) == expected
        readings = sum(1 for it in items if not isinstance(it, Transition))
        assert sum(sink.submits) == readings


async def test_batches_queued_during_a_slow_commit_go_together() -> None:
    sink = RecordingSink()
    sink.gate.clear()  # the first commit hangs
    f = _Feed(sink)
    task = asyncio.create_task(f.run())
    await f.queue.put([reading("a", 1)])
    while not sink.submits:
        await asyncio.sleep(0)
    for i in range(2, 12):
        await f.queue.put([reading("a", i)])
        await f.queue.put(transition("z", i))
    sink.gate.set()
    await asyncio.wait_for(f.queue.join(), 5)
    task.cancel()
    assert sink.submits == [1, 10]
