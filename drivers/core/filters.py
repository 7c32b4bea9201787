"""Filter chain specs (profiles and per-device overrides). Kernels live in ext/.

A point's chain is a list of these specs, applied in order to every numeric sample; the
gateway config's ``devices[].filters[point]`` replaces the profile's chain for that device.
Common rules (docs/FILTERS.md has the details and the worked examples):

- A non-finite value (NaN, +-inf) arriving with good quality is marked bad (reason
  ``not_finite``) before the first step.
- Steps that keep history (spike, smooth, rate, totalizer) only learn from good samples; a
  bad or stale sample passes them unchanged.
- A rejected sample keeps its raw value; only its quality (bad) and reason change.
- Suppressing steps (deadband, swd) drop a sample; later steps do not see dropped samples.
  ``swd`` must be the last step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _F(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RangeFilter(_F):
    """Plausibility range: a good value outside [min, max] -> quality bad (reason
    ``out_of_range``), raw value kept."""

    type: Literal["range"]
    min: float = float("-inf")
    max: float = float("inf")

    @model_validator(mode="after")
    def _order(self) -> RangeFilter:
        if not self.min <= self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class SpikeFilter(_F):
    """Hampel filter over the last ``window`` good values, the current one included:
    with m the window median and MAD the median of |v - m|, a value with
    |x - m| > max(k * 1.4826 * MAD, min_dev) is a spike. ``reject`` marks it bad (reason
    ``spike``, raw kept); ``replace`` substitutes m and keeps the quality good (reason
    ``spike_replaced``). Nothing is rejected until the window is full. A real level shift is
    accepted once it fills half the window; ``min_dev`` stops a perfectly flat window
    (MAD 0) from rejecting every small change."""

    type: Literal["spike"]
    window: int = Field(5, ge=3, le=63)
    k: float = Field(3.0, gt=0, allow_inf_nan=False)
    min_dev: float = Field(0.0, ge=0)
    action: Literal["reject", "replace"] = "reject"


class SmoothFilter(_F):
    """Exponential smoothing y = y + alpha * (x - y) over good values; the first good value
    seeds y. A bad or stale sample passes raw and does not move y."""

    type: Literal["smooth"]
    alpha: float = Field(gt=0, le=1)


class DeadbandFilter(_F):
    """Report only when the value moved by more than ``abs`` or by more than ``pct`` percent
    of the last reported value (either threshold; with both 0, any change is reported),
    at least every ``heartbeat`` seconds, and always on a quality change or when the clock
    went backwards."""

    type: Literal["deadband"]
    abs: float = Field(0.0, ge=0)
    pct: float = Field(0.0, ge=0)
    heartbeat: float = Field(300.0, gt=0)


class RateFilter(_F):
    """Rate-of-change limit: |x - last accepted| > max_per_s * dt -> quality bad (reason
    ``rate_of_change``). Rejected values do not move the reference, so after a genuine step
    the new level is accepted once the elapsed time makes the slope plausible. A sample with
    dt <= 0 (repeated or backwards timestamp) is accepted and becomes the reference."""

    type: Literal["rate"]
    max_per_s: float = Field(gt=0)


class TotalizerFilter(_F):
    """Counter handling: unwrap the roll-over of a ``width``-bit register into a continuous
    total, detect resets / meter replacement.

    The roll-over modulus in value units is 2**width * scale (``scale`` defaults to the
    point's scale). A decrease is a roll-over when the unwrapped increment
    (x + modulus - previous) is below ``wrap_window`` * modulus; any other decrease is a reset
    (reason ``counter_reset``, quality stays good) and counts the new reading as the increment
    (the meter restarted from zero). ``output``: ``total`` (continuous total, seeded with the
    first reading), ``delta`` (increment since the previous good sample, 0 for the first) or
    ``rate`` (increment per second; the first sample has none: bad, reason ``no_rate``)."""

    type: Literal["totalizer"]
    width: int = Field(32, ge=8, le=64)
    scale: float | None = Field(None, gt=0)
    wrap_window: float = Field(0.1, gt=0, le=1)
    output: Literal["total", "delta", "rate"] = "total"


class SwingingDoorFilter(_F):
    """Swinging-door compression (historian style): forwards the archived samples only, so
    that the straight line between consecutive archived samples stays within ``deviation``
    of every good sample in between. A sample is held back until the next one shows whether
    it must be archived; a bad/stale sample, a backwards clock, or ``max_interval`` seconds
    since the last archived sample flush the held sample and archive the current one."""

    type: Literal["swd"]
    deviation: float = Field(gt=0, allow_inf_nan=False)
    max_interval: float = Field(3600.0, gt=0)


# one step of a chain, of any kind
AnyFilter = (
    RangeFilter
    | SpikeFilter
    | SmoothFilter
    | DeadbandFilter
    | RateFilter
    | TotalizerFilter
    | SwingingDoorFilter
)
FilterSpec = Annotated[AnyFilter, Field(discriminator="type")]


def check_chain(specs: Sequence[AnyFilter]) -> None:
    """Rules across the steps of one chain (call from a config validator so a bad chain is
    refused at load time, not when the filter bank is built)."""
    for i, spec in enumerate(specs):
        if isinstance(spec, SwingingDoorFilter) and i != len(specs) - 1:
            raise ValueError("swd must be the last step of a filter chain")
