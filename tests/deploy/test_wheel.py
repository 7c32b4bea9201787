"""The wheel a gateway downloads is lean: the filter kernels compiled and stripped, none of
their sources (no generated C, no .pyx/.pxd); the sdist keeps what a rebuild needs. Prints the
sizes (bench/bench_wheel.py prints them for docs/BENCHMARKS.md; `make wheel-arm` on ARM)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench.bench_wheel import build, elf_sections, inspect

KIB = 1024


def test_wheel_is_lean_and_the_sdist_has_the_sources(tmp_path: Path) -> None:
    wheel, sdist = build(tmp_path)
    r = inspect(wheel, sdist)
    print(
        f"{r['machine']}: wheel {r['wheel_bytes'] / KIB:.0f} KiB ({r['files']} files), "
        f"ext module {r['so_bytes'] / KIB:.0f} KiB, sdist {r['sdist_bytes'] / KIB:.0f} KiB"
    )
    assert len(r["ext_modules"]) == 1, r
    assert r["sources_in_wheel"] == [], r
    assert r["so_debug_sections"] == [] and r["so_has_symtab"] is False, r
    # 1.0 MB before (1.5 MB of generated C and a 1.4 MB module with debug info in it); the
    # kernels are 215 KiB stripped on x86_64, and the rest is our own Python and package data
    assert r["so_bytes"] < 320 * KIB, r
    assert r["wheel_bytes"] < 640 * KIB, r
    assert {"ext/_filters.pyx", "ext/_kernels.pxd"} <= set(r["sdist_sources"]), r
    assert not any(n.endswith(".c") for n in r["sdist_sources"]), r


def test_elf_reader_sees_debug_info_and_symbols_until_stripped(tmp_path: Path) -> None:
    # the reader the check above relies on, on this machine's ELF class (armhf: 32-bit)
    src = tmp_path / "m.c"
    src.write_text("int answer(void) { return 42; }\n")
    for flags, debug in ((["-g"], True), (["-g0", "-s"], False)):
        lib = tmp_path / f"m{len(flags)}.so"
        subprocess.run(["gcc", "-shared", "-fPIC", *flags, "-o", str(lib), str(src)], check=True)
        names = elf_sections(lib.read_bytes())
        assert ".text" in names and ".dynsym" in names, names
        assert (".symtab" in names, ".debug_info" in names) == (debug, debug), names
