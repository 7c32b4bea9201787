"""Configuration errors: every problem at once, each with file, field path and line."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    file: str
    path: str  # dotted field path, e.g. "devices[1].unit_id"
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.path or '<root>'}: {self.message}"


class ConfigError(Exception):
    """Raised with *all* problems found; nothing of a refused config is applied."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__(f"{len(issues)} configuration error(s)")

    def __str__(self) -> str:
        return "\n".join(str(i) for i in self.issues)
