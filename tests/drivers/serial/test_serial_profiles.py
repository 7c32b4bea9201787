"""Profile validation for the serial protocols: mistakes are caught when the profile loads."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from drivers.core.profile import Profile
from tests.drivers.serial.serial_harness import PROFILE_OF, load_profile


def _base(protocol: str, points: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"id": "t", "kind": "x", "protocol": protocol, "points": points, **extra}


def test_shipped_profiles_load() -> None:
    for ref in PROFILE_OF.values():
        assert load_profile(ref).points


def test_serial_needs_its_section_and_known_fields() -> None:
    with pytest.raises(ValidationError, match=r"needs a \[serial\] section"):
        Profile.model_validate(_base("serial", [{"name": "a", "field": "a"}]))
    spec = load_profile(PROFILE_OF["serial"]).serial
    assert spec is not None
    section = spec.model_dump()
    with pytest.raises(ValidationError, match="no read produces field 'nope'"):
        Profile.model_validate(_base("serial", [{"name": "a", "field": "nope"}], serial=section))
    with pytest.raises(ValidationError, match="writable but"):
        Profile.model_validate(
            _base("serial", [{"name": "a", "field": "dim", "writable": True}], serial=section)
        )
    with pytest.raises(ValidationError, match="unknown point 'illuminance_level'"):
        Profile.model_validate(_base("serial", [{"name": "a", "field": "dim"}], serial=section))
    with pytest.raises(ValidationError, match="only used by protocol 'serial'"):
        Profile.model_validate(_base("mbus", [{"name": "a", "field": "volume"}], serial=section))


def test_pelco_fields_and_actions() -> None:
    with pytest.raises(ValidationError, match="not one of"):
        Profile.model_validate(_base("pelco_d", [{"name": "focus"}]))
    with pytest.raises(ValidationError, match="must be writable"):
        Profile.model_validate(_base("pelco_d", [{"name": "goto_preset"}]))
    Profile.model_validate(_base("pelco_d", [{"name": "pan"}, {"name": "p", "field": "tilt"}]))
