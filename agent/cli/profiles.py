"""``cityedge profiles``: the profile library, with kinds and point counts."""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

from agent.cli.common import config_option

EXAMPLES = """examples:
  cityedge profiles
  cityedge profiles --json
  cityedge profiles -c /etc/cityedge/gateway.toml
The site's directories (gateway.profile_dirs of the config, then --dir) come before the
built-in library; a reference found in several is taken from the first (marked 'shadows').
A profile that does not load is listed with its first error.
exit status: 0 listed (broken profiles included), 2 a --dir does not exist"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "profiles",
        help="list the device profiles: kind, protocol, points",
        description="List the profile library a gateway uses: the reference to write in "
        "[[devices]] profile = ..., its kind, protocol, points (writable ones) and model.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config_option(
        p,
        "gateway file whose profile_dirs to list (default $CITYEDGE_CONFIG, else "
        "/etc/cityedge/gateway.toml, when it exists)",
    )
    p.add_argument("--dir", action="append", default=[], help="another profile directory")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def site_dirs(config: Path) -> list[Path]:
    """``gateway.profile_dirs`` of a config, read leniently: listing profiles must work while
    the config itself is being fixed."""
    try:
        data = tomllib.loads(config.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return []
    dirs = data.get("gateway", {}).get("profile_dirs", [])
    if not isinstance(dirs, list):
        return []
    return [
        Path(d) if Path(d).is_absolute() else config.parent / d for d in dirs if isinstance(d, str)
    ]


def entries(dirs: list[Path]) -> list[dict[str, Any]]:
    from agent.config.validate import profile_problems
    from drivers.core.errors import ConfigError
    from drivers.core.library import ProfileLibrary

    lib = ProfileLibrary(dirs)
    out = []
    for ref in lib.available():
        found = [d for d in dirs if (d / f"{ref}.toml").is_file()]
        row: dict[str, Any] = {
            "ref": ref,
            "file": str(found[0] / f"{ref}.toml"),
            "library": str(found[0]),
            "shadows": [str(d / f"{ref}.toml") for d in found[1:]],
        }
        try:
            prof = lib.load(ref)
            problems = [lib.issue(ref, loc, msg) for loc, msg in profile_problems(prof)]
            if problems:
                raise ConfigError(problems)
        except ConfigError as exc:
            row["error"] = str(exc.issues[0]) if exc.issues else "profile error"
            out.append(row)
            continue
        row.update(
            kind=prof.kind,
            protocol=prof.protocol,
            points=len(prof.points),
            writable=sum(p.writable for p in prof.points),
            manufacturer=prof.manufacturer,
            model=prof.model,
            extends=prof.extends,
        )
        out.append(row)
    return out


def run(args: argparse.Namespace) -> int:
    from agent.config.loader import BUILTIN_PROFILES

    extra = [Path(d) for d in args.dir]
    missing = [d for d in extra if not d.is_dir()]
    if missing:
        print(f"cityedge: profile directory {missing[0]} does not exist", file=sys.stderr)
        return 2
    config = Path(args.config)
    dirs = [*(site_dirs(config) if config.is_file() else []), *extra, BUILTIN_PROFILES]
    dirs = [d for d in dict.fromkeys(dirs) if d.is_dir()]
    rows = entries(dirs)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [("PROFILE", "KIND", "PROTOCOL", "POINTS", "MODEL")]
    for r in rows:
        if "error" in r:
            table.append((r["ref"], "-", "-", "-", f"ERROR {r['error']}"))
            continue
        model = " ".join(x for x in (r["manufacturer"], r["model"]) if x) or "-"
        if r["extends"]:
            model += f" (extends {r['extends']})"
        if r["shadows"]:
            model += f" [shadows {', '.join(r['shadows'])}]"
        pts = f"{r['points']}" + (f" ({r['writable']} writable)" if r["writable"] else "")
        table.append((r["ref"], r["kind"], r["protocol"], pts, model))
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[4])
    libs = ", ".join(str(d) for d in dirs)
    print(f"{len(rows)} profile(s) in {libs}")
    return 0
