"""agent/ops/promtext.py against prometheus-client's parser (the reference implementation)."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.ops.promtext import Counter, Gauge, Info, go_float, render


def _parse(text: bytes) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    out: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text.decode()):
        out[f"{fam.name}:{fam.type}"] = [(s.name, s.labels, s.value) for s in fam.samples]
    return out


def test_families_round_trip_through_the_reference_parser() -> None:
    c = Counter("cityedge_device_requests", "Requests sent.", labels=("bus", "device"))
    c.add_metric(["rs485-1", "lamp-1"], 12)
    c.add_metric(["rs485-1", 'odd "name"\\with\nnewline'], 3)
    g = Gauge("cityedge_ready", "1 once ready.\nSecond line \\ backslash.", 1)
    i = Info("cityedge_build", "Version.")
    i.add_info({"version": "1.2.3", "filters": "cython"})
    empty = Gauge("cityedge_outbox_depth", "Readings waiting.", labels=("output",))
    text = render(lambda: [c, g, i, empty])
    got = _parse(text)
    assert got["cityedge_device_requests:counter"] == [
        ("cityedge_device_requests_total", {"bus": "rs485-1", "device": "lamp-1"}, 12.0),
        (
            "cityedge_device_requests_total",
            {"bus": "rs485-1", "device": 'odd "name"\\with\nnewline'},
            3.0,
        ),
    ]
    assert got["cityedge_ready:gauge"] == [("cityedge_ready", {}, 1.0)]
    assert got["cityedge_build_info:gauge"] == [
        ("cityedge_build_info", {"version": "1.2.3", "filters": "cython"}, 1.0)
    ]
    assert got["cityedge_outbox_depth:gauge"] == []
    assert b"# HELP cityedge_ready 1 once ready.\\nSecond line \\\\ backslash.\n" in text


def test_special_floats_are_go_style() -> None:
    assert [go_float(v) for v in (math.inf, -math.inf, math.nan, 1e16, 0.5, 3)] == [
        "+Inf",
        "-Inf",
        "NaN",
        "1e+16",
        "0.5",
        "3.0",
    ]
    g = Gauge("x_age_seconds", "Age.", math.nan)
    (sample,) = _parse(render(lambda: [g]))["x_age_seconds:gauge"]
    assert math.isnan(sample[2])


def test_label_count_is_checked() -> None:
    g = Gauge("x", "X.", labels=("a", "b"))
    with pytest.raises(ValueError, match="2 label value"):
        g.add_metric(["only-one"], 1)
