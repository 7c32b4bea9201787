"""A bounded wait on an ``asyncio.Event`` that does not raise when the time is up.

``async with asyncio.timeout(d): await ev.wait()`` is the idiom, but on the hot path running out
of time *is* the normal outcome: a group commit waits out its interval every time, a bus owner
sleeps until its next poll tick. A timeout that fires cancels the task and turns the
``CancelledError`` into ``TimeoutError``: exception machinery on every poll tick of every bus.
Here the timer just sets the event.
"""

from __future__ import annotations

import asyncio


async def wait_event(ev: asyncio.Event, delay: float) -> bool:
    """Wait until ``ev`` is set or ``delay`` seconds have passed; True if the event was set.

    When the time runs out the event is left set, so use it only on events the caller owns and
    clears before it next waits on them (wake-up flags)."""
    if ev.is_set():
        return True
    if delay <= 0:
        # still a suspension point, so a caller looping on it cannot starve the loop
        await asyncio.sleep(0)
        return ev.is_set()
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        ev.set()

    handle = asyncio.get_running_loop().call_later(delay, expire)
    try:
        await ev.wait()
    finally:
        handle.cancel()
    return not expired
