"""Build the optional Cython filter kernels.

The extension is an accelerator, never a requirement: if no compiler (or no Cython) is present
the pure-Python twin in ext/ is used. ``CITYEDGE_REQUIRE_EXT=1`` (set by the test command and CI)
turns a failed build into an error so a broken kernel cannot hide behind the fallback.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

REQUIRE = os.environ.get("CITYEDGE_REQUIRE_EXT") == "1"


class OptionalBuildExt(build_ext):
    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            if REQUIRE:
                raise
            print(f"cityedge: Cython extension not built ({exc}); using the Python twin",
                  file=sys.stderr)

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:
            if REQUIRE:
                raise
            print(f"cityedge: {ext.name} not built ({exc}); using the Python twin",
                  file=sys.stderr)


def extensions() -> list:  # type: ignore[type-arg]
    try:
        from Cython.Build import cythonize
    except ImportError:
        if REQUIRE:
            raise
        return []
    from setuptools import Extension

    if not os.path.exists("ext/_filters.pyx"):
        return []
    # -ffp-contract=off: no fused multiply-add, so the kernels round exactly like the Python twin
    # (on aarch64 gcc fuses by default, and differential tests fail without it).
    # -g0 and -s: no debug info or symbol table in the shipped module (1.4 MB -> ~0.3 MB); the
    # interpreter's CFLAGS carry -g, and a gateway's SD card and uplink pay for every byte.
    exts = [Extension("ext._filters", ["ext/_filters.pyx"],
                      extra_compile_args=["-O2", "-ffp-contract=off", "-g0"],
                      extra_link_args=["-s"],
                      depends=["setup.py"])]  # new flags here rebuild the module
    try:
        return cythonize(exts, language_level=3, compiler_directives={"boundscheck": False,
                     "wraparound": False, "cdivision": True, "initializedcheck": False})
    except Exception:
        if REQUIRE:
            raise
        print("cityedge: cythonize failed; using the Python twin", file=sys.stderr)
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
