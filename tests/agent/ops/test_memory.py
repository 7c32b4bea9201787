"""agent/ops/memory.py: start-up garbage handed back once the agent runs."""

from __future__ import annotations

import gc

from agent.ops import memory


def test_settle_freezes_survivors_and_trims() -> None:
    try:
        memory.settle()
        assert gc.get_freeze_count() > 0  # long-lived objects left the collector's generations
    finally:
        gc.unfreeze()
