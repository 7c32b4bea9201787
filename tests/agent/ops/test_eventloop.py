"""agent/ops/eventloop.py: the standard loop by default, uvloop on request."""

from __future__ import annotations

import asyncio
import sys

import pytest

from agent.ops import eventloop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def test_standard_loop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(eventloop.ENV, raising=False)
    assert eventloop.loop_name() == "asyncio"
    assert eventloop.run(_loop_module()) == "asyncio"


def test_uvloop_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(eventloop.ENV, "UVLoop ")
    assert eventloop.loop_name() == "uvloop"
    assert eventloop.run(_loop_module()) == "uvloop"


def test_uvloop_missing_falls_back_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(eventloop.ENV, "uvloop")
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    assert eventloop.run(_loop_module()) == "asyncio"
    assert "uvloop is not installed" in caplog.text


def test_unknown_value_is_named(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(eventloop.ENV, "trio")
    assert eventloop.loop_name() == "asyncio"
    assert "CITYEDGE_EVENT_LOOP=trio" in caplog.text
