"""Prometheus text exposition format 0.0.4, written directly.

prometheus-client did this job until its import alone (exposition, WSGI and HTTP server
modules, the default registry with its collectors) turned out to cost 4.4 MB of resident memory
on a 45 MB budget; the agent needs only the custom-collector part: a few metric families built
at scrape time and their text form. The tests parse this output with prometheus-client's own
parser (a test dependency), so the format stays checked against the reference implementation.

Format rules kept here (https://prometheus.io/docs/instrumenting/exposition_formats/): a
counter family ``x`` is exposed as ``x_total``, an info family ``x`` as the gauge ``x_info``
with value 1; label values escape backslash, double quote and newline, HELP text escapes
backslash and newline; floats are Go-style (``+Inf``, ``-Inf``, ``NaN``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label_value(v: str) -> str:
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _help(doc: str) -> str:
    return doc.replace("\\", r"\\").replace("\n", r"\n")


def go_float(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


class Family:
    """One metric family: name, type, help text and its samples (label values -> value)."""

    type: str = "gauge"
    suffix: str = ""

    def __init__(
        self,
        name: str,
        documentation: str,
        value: float | None = None,
        labels: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)
        self.samples: list[tuple[tuple[str, ...], float]] = []
        if value is not None:
            self.add_metric((), value)

    def add_metric(self, label_values: Sequence[str], value: float) -> None:
        if len(label_values) != len(self.labels):
            raise ValueError(f"{self.name}: {len(self.labels)} label value(s) expected")
        self.samples.append((tuple(label_values), float(value)))

    def text(self) -> str:
        name = self.name + self.suffix
        out = [f"# HELP {name} {_help(self.documentation)}\n# TYPE {name} {self.type}\n"]
        for values, v in self.samples:
            if values:
                pairs = ",".join(
                    f'{k}="{_label_value(x)}"' for k, x in zip(self.labels, values, strict=True)
                )
                out.append(f"{name}{{{pairs}}} {go_float(v)}\n")
            else:
                out.append(f"{name} {go_float(v)}\n")
        return "".join(out)


class Gauge(Family):
    type = "gauge"


class Counter(Family):
    type = "counter"
    suffix = "_total"


class Info(Family):
    """Constant key/value labels with the value 1 (exposed as the gauge ``<name>_info``)."""

    type = "gauge"
    suffix = "_info"

    def __init__(self, name: str, documentation: str) -> None:
        super().__init__(name, documentation)

    def add_info(self, info: dict[str, str]) -> None:
        self.labels = tuple(info)
        self.samples.append((tuple(info.values()), 1.0))


def render(collect: Callable[[], Iterable[Family]]) -> bytes:
    """The exposition of every family ``collect`` yields, in order."""
    return "".join(f.text() for f in collect()).encode()
