"""wait_event: a bounded Event wait that returns instead of raising."""

from __future__ import annotations

import asyncio

from drivers.core.waits import wait_event


async def test_returns_true_when_set_in_time() -> None:
    ev = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.call_later(0.01, ev.set)
    t0 = loop.time()
    assert await wait_event(ev, 5.0) is True
    assert loop.time() - t0 < 1.0


async def test_already_set_and_zero_delay() -> None:
    ev = asyncio.Event()
    assert await wait_event(ev, 0) is False
    ev.set()
    assert await wait_event(ev, 0) is True


async def test_zero_delay_still_yields_to_the_loop() -> None:
    ev = asyncio.Event()
    asyncio.get_running_loop().call_soon(ev.set)
    assert await wait_event(ev, -1.0) is True  # the callback ran while it was suspended


async def test_time_up_returns_false_and_leaves_the_event_set() -> None:
    ev = asyncio.Event()
    assert await wait_event(ev, 0.01) is False
    assert ev.is_set()  # documented: wake-up flags only, the owner clears them


async def test_cancellation_propagates_and_cancels_the_timer() -> None:
    ev = asyncio.Event()
    task = asyncio.create_task(wait_event(ev, 0.05))
    await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("CancelledError swallowed")
    await asyncio.sleep(0.1)
    assert not ev.is_set()  # the timer died with the wait
