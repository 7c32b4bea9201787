"""The profile library: TOML device profiles found by reference, with ``extends`` resolved.

A reference such as ``cityedge/streetlight`` names ``<dir>/cityedge/streetlight.toml`` in the
first library directory that has it (site directories before the built-in library). A profile
that ``extends`` another starts from the parent: tables merge key by key, points merge by
name (a child point with a parent's name overrides only the keys it sets), new points append.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from drivers.core.errors import ConfigError, ConfigIssue
from drivers.core.issues import did_you_mean, problems, strict_problems
from drivers.core.locate import format_path, locate, locate_named
from drivers.core.profile import Profile

MAX_DEPTH = 8


class ProfileLibrary:
    def __init__(self, dirs: list[Path]) -> None:
        self.dirs = dirs
        self.used_files: list[str] = []
        self.ref_files: dict[str, str] = {}
        self.chains: dict[str, list[Path]] = {}  # ref -> its file, then its ancestors' files

    def find(self, ref: str) -> Path:
        if ".." in Path(ref).parts or ref.startswith("/"):
            raise KeyError(ref)
        for d in self.dirs:
            f = d / f"{ref}.toml"
            if f.is_file():
                return f
        raise KeyError(ref)

    def available(self) -> list[str]:
        refs: set[str] = set()
        for d in self.dirs:
            if d.is_dir():
                refs.update(str(p.relative_to(d).with_suffix("")) for p in d.rglob("*.toml"))
        return sorted(refs)

    def suggest(self, ref: str) -> str:
        """`` (did you mean 'x/y'?)`` for an unknown reference, else ``""``."""
        return did_you_mean(ref, self.available())

    def _raw(self, ref: str, chain: tuple[str, ...]) -> tuple[dict[str, Any], Path]:
        path = self.find(ref)
        self.used_files.append(str(path))
        self.chains.setdefault(chain[0] if chain else ref, []).append(path)
        text = path.read_text(encoding="utf-8")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([ConfigIssue(str(path), "", f"TOML syntax error: {exc}")]) from None
        parent_ref = data.get("extends")
        if parent_ref is None:
            return data, path
        if not isinstance(parent_ref, str):
            raise ConfigError(
                [
                    ConfigIssue(
                        str(path),
                        "extends",
                        "must be a profile reference",
                        locate(text, ("extends",)),
                    )
                ]
            )
        if parent_ref in chain or len(chain) > MAX_DEPTH:
            raise ConfigError(
                [
                    ConfigIssue(
                        str(path),
                        "extends",
                        "circular 'extends': " + " -> ".join((*chain, ref, parent_ref)),
                        locate(text, ("extends",)),
                    )
                ]
            )
        try:
            parent, _ = self._raw(parent_ref, (*chain, ref))
        except KeyError:
            raise ConfigError(
                [
                    ConfigIssue(
                        str(path),
                        "extends",
                        f"extends unknown profile '{parent_ref}'{self.suggest(parent_ref)}",
                        locate(text, ("extends",)),
                    )
                ]
            ) from None
        return _inherit(parent, data), path

    def load(self, ref: str) -> Profile:
        self.chains.pop(ref, None)
        data, path = self._raw(ref, ())
        self.ref_files[ref] = str(path)
        data.setdefault("id", ref)
        found = []
        try:
            prof = Profile.model_validate(data)
        except ValidationError as exc:
            prof = None
            found = problems(Profile, exc)
        found += strict_problems(Profile, data, [p.loc for p in found])
        if found:
            raise ConfigError([self.issue(ref, p.loc, p.message, data) for p in found])
        assert prof is not None
        return prof

    def issue(
        self, ref: str, loc: tuple[str | int, ...], message: str, data: Any = None
    ) -> ConfigIssue:
        """An issue of profile ``ref`` at ``loc``, in the file of its chain that sets it: a
        point is found by its name, so an inherited one is shown where it is written."""
        files = self.chains.get(ref) or [self.find(ref)]
        texts = [(f, f.read_text(encoding="utf-8")) for f in files]
        shown = format_path(loc, data)
        point = _point_name(data, loc)
        best: tuple[Path, int | None] | None = None
        for f, text in texts:
            if point is not None:
                hit = locate_named(text, "points", "name", point)
                if hit is None:
                    continue
                own = ("points", hit[0], *loc[2:])
                line = locate(text, own)
                header = locate(text, ("points", hit[0]))
                if len(loc) == 2 or line != header:
                    return ConfigIssue(str(f), shown, message, line)
                best = best or (f, line)
            else:
                line = locate(text, loc)
                if line is not None:
                    return ConfigIssue(str(f), shown, message, line)
        f, line = best or (files[0], None)
        return ConfigIssue(str(f), shown, message, line)


def _point_name(data: Any, loc: tuple[str | int, ...]) -> str | None:
    if len(loc) >= 2 and loc[0] == "points" and isinstance(loc[1], int) and isinstance(data, dict):
        pts = data.get("points")
        if isinstance(pts, list) and loc[1] < len(pts) and isinstance(pts[loc[1]], dict):
            name = pts[loc[1]].get("name")
            return name if isinstance(name, str) else None
    return None


def _inherit(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    out = dict(parent)
    for k, v in child.items():
        if k == "points":
            merged = [dict(p) for p in parent.get("points", [])]
            by_name = {p.get("name"): i for i, p in enumerate(merged)}
            for p in v:
                if p.get("name") in by_name:
                    merged[by_name[p["name"]]].update(p)
                else:
                    merged.append(dict(p))
            out["points"] = merged
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    out.pop("extends", None)
    out["extends"] = child.get("extends")
    out.pop("id", None)
    if "id" in child:
        out["id"] = child["id"]
    return out
