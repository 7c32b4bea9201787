"""Both kernel implementations, explicitly: a stale in-tree .so or a missing build must not
hide behind the fallback. With ``CITYEDGE_REQUIRE_EXT=1`` (CI) a missing compiled module fails
every test that asks for it."""

from __future__ import annotations

import os
from types import ModuleType

import pytest

import ext._pyfilters as py

try:
    import ext._filters as _cy

    cy: ModuleType | None = _cy
    CY_ERROR: str | None = None
except ImportError as exc:  # pragma: no cover - depends on the build
    cy = None
    CY_ERROR = str(exc)

REQUIRE = os.environ.get("CITYEDGE_REQUIRE_EXT") == "1"


def compiled() -> ModuleType:
    """The compiled module; fails when it is required and missing, skips (visibly, with -ra)
    on a developer machine without a compiler."""
    if cy is None:
        if REQUIRE:
            pytest.fail(f"CITYEDGE_REQUIRE_EXT=1 but ext._filters is not importable: {CY_ERROR}")
        pytest.skip(f"ext._filters not built: {CY_ERROR}")
    return cy


@pytest.fixture(params=["python", "cython"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return py if request.param == "python" else compiled()
