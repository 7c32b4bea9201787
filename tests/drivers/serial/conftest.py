"""Fixtures for the serial driver tests: the three simulators on pty pairs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from drivers.sim.serial_sims import SerialSims, serve_serial_sims


@pytest.fixture
async def sims() -> AsyncIterator[SerialSims]:
    s = await serve_serial_sims({"serial": [1, 2, 3], "pelco_d": [1, 2, 3], "mbus": [1, 2, 5]})
    try:
        yield s
    finally:
        await s.close()
