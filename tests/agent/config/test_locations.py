"""Locations and what NGSI-LD entity types require of the config: `cityedge check` refuses,
naming the field; and the profile keys behind the Smart Data Models types (flag_enum,
decimals, controlled_property) are validated."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.cli.main import main
from agent.config import ConfigError, load_config
from agent.config.locations import distance_km
from drivers.core.profile import Point, Profile

NGSI = """
[[outputs]]
type = "mqtt"
id = "ld"
brokers = [{ url = "mqtt://127.0.0.1:1883" }]
encoding = "ngsild"
"""


def refused(d: Path) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config(d / "gateway.toml")
    return [str(i) for i in exc.value.issues]


def edit(d: Path, old: str, new: str) -> None:
    p = d / "gateway.toml"
    text = p.read_text()
    assert old in text
    p.write_text(text.replace(old, new, 1))


def test_streetlights_need_a_location_for_ngsi_ld(
    cfgdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (cfgdir / "gateway.toml").write_text((cfgdir / "gateway.toml").read_text() + NGSI)
    issues = refused(cfgdir)
    assert len(issues) == 2, issues
    assert "devices[lamp1].location" in issues[0] and "Streetlight" in issues[0]
    assert main(["check", str(cfgdir / "gateway.toml")]) == 78
    assert "requires a location" in capsys.readouterr().err
    # a gateway-level location is inherited by every device
    edit(cfgdir, 'id = "gw-test"', 'id = "gw-test"\nlocation = [21.0285, 105.8542]')
    loaded = load_config(cfgdir / "gateway.toml")
    from agent.runtime import bindings_for

    assert {b.location for b in bindings_for(loaded)} == {(21.0285, 105.8542)}


def test_coordinates_out_of_range_and_swapped(cfgdir: Path) -> None:
    edit(cfgdir, "unit_id = 1\n", "unit_id = 1\nlocation = [105.85, 21.03]\n")
    (issue,) = refused(cfgdir)
    assert "devices[lamp1].location" in issue and "write [21.03, 105.85]" in issue
    edit(cfgdir, "location = [105.85, 21.03]", "location = [21.03, 205.0]")
    (issue,) = refused(cfgdir)
    assert "not a WGS84 point" in issue


def test_swap_in_range_is_caught_against_the_gateway(cfgdir: Path) -> None:
    # Paris written lon-first: both numbers are valid, only the distance gives it away
    edit(cfgdir, 'id = "gw-test"', 'id = "gw-test"\nlocation = [48.8566, 2.3522]')
    edit(cfgdir, "unit_id = 2\n", "unit_id = 2\nlocation = [2.3530, 48.8570]\n")
    (issue,) = refused(cfgdir)
    assert "devices[lamp2].location" in issue and "look swapped" in issue
    edit(cfgdir, "location = [2.3530, 48.8570]", "location = [48.8570, 2.3530]")
    load_config(cfgdir / "gateway.toml")
    assert distance_km((21.0285, 105.8542), (10.7769, 106.7009)) == pytest.approx(1140, abs=10)


def test_profile_keys_behind_the_model_types() -> None:
    ok = Point(name="st", flag_enum={2: "columnIssue", 0: "defectiveLamp"}, flag_enum_default="ok")
    assert list(ok.flag_enum or {}) == [2, 0]  # listed order is the priority
    with pytest.raises(ValidationError, match="flag_enum_default"):
        Point(name="st", flag_enum={0: "defectiveLamp"})
    with pytest.raises(ValidationError, match="integer register"):
        Point(name="st", type="float32", flag_enum={0: "x"}, flag_enum_default="ok")
    with pytest.raises(ValidationError, match="finer than the register"):
        Point(name="v", scale=0.1, decimals=2)
    with pytest.raises(ValidationError, match="numeric points only"):
        Point(name="s", type="string", length=2, decimals=1)
    assert Point(name="f", type="float32", decimals=3).decimals == 3
    pts = (Point(name="p"),)
    with pytest.raises(ValidationError, match="controlled_property"):
        Profile(id="x", kind="thing", points=pts, controlled_property=("lightning",))
    assert Profile(id="x", kind="streetlight", points=pts).controlled_properties == (
        "light",
        "power",
    )
