"""agent/eventloop.py: uvloop by default, the standard loop on request."""

from __future__ import annotations

import asyncio

import pytest

from agent import eventloop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def test_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(eventloop.ENV, raising=False)
    assert eventloop.loop_name() == "uvloop"
    assert eventloop.run(_loop_module()) == "uvloop"


def test_standard_loop_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(eventloop.ENV, "asyncio")
    assert eventloop.loop_name() == "asyncio"
    assert eventloop.run(_loop_module()) == "asyncio"


def test_falls_back_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.delenv(eventloop.ENV, raising=False)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    assert eventloop.loop_name() == "asyncio"
    assert eventloop.run(_loop_module()) == "asyncio"
