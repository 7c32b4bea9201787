"""Values at the device's resolution (drivers/core/resolution.py): the float tails the issue saw
(0.7000000000000001, 49.980000000000004, 231.20000000000002) are gone from every decoder,
and the type follows the resolution (int at a whole-number one)."""

from __future__ import annotations

import struct

import pytest

from drivers.core.profile import Point, WordOrder
from drivers.core.resolution import decimals_of, filter_rounder, point_decimals, rounder
from drivers.modbus.codec import decode_point, fast_decoder
from drivers.serial.points import to_value

A = WordOrder.ABCD


def f32_words(x: float) -> list[int]:
    hi, lo = struct.unpack(">2H", struct.pack(">f", x))
    return [hi, lo]


@pytest.mark.parametrize(
    ("point", "words", "value"),
    [
        (Point(name="p", scale=0.1), [7], 0.7),  # 7 * 0.1 = 0.7000000000000001
        (Point(name="p", scale=0.01), [4998], 49.98),  # 49.980000000000004
        (Point(name="p", scale=0.1), [2312], 231.2),  # 231.20000000000002
        (Point(name="p", scale=0.25), [3], 0.75),
        (Point(name="p", scale=0.001, type="uint32"), [8, 11099], 535.387),  # 535387
        (Point(name="p", scale=10), [7], 70),
        (Point(name="p", offset=-40), [65], 25),
        (Point(name="p", type="float32"), f32_words(230.2), 230.2),  # 230.1999969482422
        (Point(name="p", type="float32", decimals=1), f32_words(49.96), 50.0),
        (Point(name="p", type="float32", scale=1000, decimals=0), f32_words(12.345), 12345),
        (Point(name="p", type="float64", scale=0.1), [0x4059, 0, 0, 0], 10.0),
    ],
)
def test_decoders_give_the_value_at_its_resolution(
    point: Point, words: list[int], value: float
) -> None:
    fast = fast_decoder(point, A)
    assert fast is not None
    for got in (fast(words), decode_point(point, words, A)):
        assert got == value and type(got) is type(value), (got, value)
        assert repr(got) == repr(value)


def test_serial_fields_and_filters_use_the_same_rule() -> None:
    assert to_value(Point(name="d", scale=0.01), "049") == 0.49
    assert to_value(Point(name="v", scale=0.1), "2312") == 231.2
    assert to_value(Point(name="t", type="float32"), "0025.2") == 25.2  # the device's digits
    assert to_value(Point(name="e", type="float64", scale=1000, decimals=0), 12.345) == 12345
    smooth = filter_rounder(Point(name="v", scale=0.1))
    assert smooth(231.23456) == 231.2
    assert filter_rounder(Point(name="n"))(17.6) == 18  # a plain integer register: 1


def test_decimals_rules() -> None:
    assert [decimals_of(x) for x in (1, 0.5, 0.25, 0.001, 10, 1 / 3)] == [0, 1, 2, 3, 0, None]
    assert point_decimals(Point(name="p", scale=0.1, offset=0.05)) == 2
    assert point_decimals(Point(name="p", type="float32")) is None
    assert rounder(Point(name="p")) is None  # plain integers are exact as they come
    assert rounder(Point(name="p", type="float64")) is None
    assert rounder(Point(name="p", enum={0: "off"})) is None
