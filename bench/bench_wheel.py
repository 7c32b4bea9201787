"""The wheel and sdist a gateway downloads: sizes, and what is in them.

A lean wheel carries the compiled filter kernels stripped (no debug info, no symbol table) and
none of their sources: no generated C, no .pyx/.pxd (those are in the sdist, which is what a
rebuild needs). Builds both with setuptools' build backend from this tree (the extension is
compiled unless build/ holds an up-to-date one), prints the figures, and keeps the files with
``--out``. ``.ci/arm-test --wheel ARCH DIR`` runs it in the arm64 / armhf roots.

    .venv/bin/python bench/bench_wheel.py [--out DIR] [--json]
"""

from __future__ import annotations

import argparse
import os
import platform
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import emit_json  # noqa: E402

SOURCE_SUFFIXES = (".c", ".h", ".pyx", ".pxd", ".cpp")


def prune_stale_build(root: Path = ROOT) -> list[Path]:
    """Delete the copies in build/lib* of files the tree no longer has. setuptools copies
    every module into build/lib and packs whatever is there: after a module moved or was
    removed, a wheel built from a working tree would still carry the old one (a fresh clone
    has no build/). The compiled extension stays, so it is not rebuilt."""
    gone = []
    for lib in root.glob("build/lib*"):
        for f in lib.rglob("*"):
            if (
                f.is_file()
                and not f.name.endswith(".so")
                and not (root / f.relative_to(lib)).exists()
            ):
                f.unlink()
                gone.append(f)
    return gone


def build(out: Path) -> tuple[Path, Path]:
    """(wheel, sdist) built from the tree into ``out``; the extension must build."""
    out.mkdir(parents=True, exist_ok=True)
    prune_stale_build()
    env = {**os.environ, "CITYEDGE_REQUIRE_EXT": "1"}
    built = []
    for hook in ("build_wheel", "build_sdist"):  # one process each: setuptools keeps state
        code = f"import sys, setuptools.build_meta as b; print('BUILT', b.{hook}(sys.argv[1]))"
        res = subprocess.run(
            [sys.executable, "-c", code, str(out)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            raise RuntimeError(f"{hook} failed:\n{res.stdout}\n{res.stderr}")
        name = next(ln for ln in res.stdout.splitlines() if ln.startswith("BUILT ")).split()[1]
        built.append(out / name)
    return built[0], built[1]


def elf_sections(data: bytes) -> list[str]:
    """Section names of an ELF file (32- or 64-bit, little-endian: x86_64, aarch64, armhf)."""
    if data[:4] != b"\x7fELF" or data[5] != 1:
        raise ValueError("not a little-endian ELF file")
    if data[4] == 2:  # ELFCLASS64
        shoff, shentsize, shnum, shstrndx = (
            struct.unpack_from("<Q", data, 0x28)[0],
            *struct.unpack_from("<HHH", data, 0x3A),
        )
        off_of = 0x18  # sh_offset in Elf64_Shdr
        fmt = "<Q"
    else:  # ELFCLASS32
        shoff, shentsize, shnum, shstrndx = (
            struct.unpack_from("<I", data, 0x20)[0],
            *struct.unpack_from("<HHH", data, 0x2E),
        )
        off_of = 0x10
        fmt = "<I"
    headers = [shoff + i * shentsize for i in range(shnum)]
    strtab = struct.unpack_from(fmt, data, headers[shstrndx] + off_of)[0]
    names = []
    for h in headers:
        name_at = strtab + struct.unpack_from("<I", data, h)[0]
        names.append(data[name_at : data.index(b"\0", name_at)].decode())
    return names


def inspect(wheel: Path, sdist: Path) -> dict[str, Any]:
    with zipfile.ZipFile(wheel) as z:
        infos = z.infolist()
        names = [i.filename for i in infos]
        mods = [i for i in infos if i.filename.startswith("ext/") and i.filename.endswith(".so")]
        so = z.read(mods[0]) if len(mods) == 1 else b""
    with tarfile.open(sdist) as t:
        sdist_names = t.getnames()
    sections = elf_sections(so) if so else []
    return {
        "machine": platform.machine(),
        "wheel": wheel.name,
        "wheel_bytes": wheel.stat().st_size,
        "sdist_bytes": sdist.stat().st_size,
        "files": len(names),
        "ext_modules": [i.filename for i in mods],
        "so_bytes": len(so),
        "so_debug_sections": [s for s in sections if s.startswith((".debug", ".zdebug"))],
        "so_has_symtab": ".symtab" in sections,
        "sources_in_wheel": [n for n in names if n.endswith(SOURCE_SUFFIXES)],
        "sdist_sources": sorted(n.split("/", 1)[1] for n in sdist_names if "/ext/_" in n),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="keep the wheel and sdist here")
    ap.add_argument("--json", action="store_true", help="also print a BENCH-JSON result line")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel, sdist = build(args.out or Path(tmp))
        r = inspect(wheel, sdist)
    print(f"{r['wheel']}: {r['wheel_bytes'] / 1024:.0f} KiB, {r['files']} files")
    print(
        f"  ext module: {r['so_bytes'] / 1024:.0f} KiB, "
        f"{'stripped' if not r['so_has_symtab'] and not r['so_debug_sections'] else 'NOT stripped'}"
    )
    print(f"  sources in the wheel: {r['sources_in_wheel'] or 'none'}")
    print(f"sdist: {r['sdist_bytes'] / 1024:.0f} KiB, ext sources {r['sdist_sources']}")
    if args.json:
        emit_json(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
