"""The ring of recent warnings (agent/ops/recent.py) behind the page's warnings panel."""

from __future__ import annotations

import logging

from agent.ops.recent import RecentLog


def _logger(handler: RecentLog) -> logging.Logger:
    log = logging.getLogger("cityedge.test.recent")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG)
    return log


def test_keeps_warnings_and_above_newest_last_and_bounded() -> None:
    ring = RecentLog(capacity=3)
    log = _logger(ring)
    log.info("not kept")
    for i in range(5):
        log.warning("bus %d down", i)
    log.error("disk full")
    rows = ring.records()
    assert [r["message"] for r in rows] == ["bus 3 down", "bus 4 down", "disk full"]
    assert [r["level"] for r in rows] == ["WARNING", "WARNING", "ERROR"]
    assert rows[-1]["logger"] == "cityedge.test.recent"
    assert str(rows[-1]["time"]).endswith("Z")


def test_a_repeated_message_is_counted_not_pushing_the_others_out() -> None:
    ring = RecentLog(capacity=3)
    log = _logger(ring)
    log.warning("clock not synchronised")
    log.warning("lamp-3 offline")
    for _ in range(50):
        log.warning("meter-11 offline")
    rows = ring.records()
    assert [(r["message"], r["count"]) for r in rows] == [
        ("clock not synchronised", 1),
        ("lamp-3 offline", 1),
        ("meter-11 offline", 50),
    ]
    last = int(str(rows[-1]["seq"]))
    assert ring.records(since=last) == []
    log.warning("lamp-3 offline")  # repeated: moves to the end with a new seq
    news = ring.records(since=last)
    assert [(r["message"], r["count"]) for r in news] == [("lamp-3 offline", 2)]
