"""Every repository path, module, document section and command line the documentation names
exists.

README.md and docs/*.md name files (``agent/forward/outbox.py``, ``sinks/base.py``,
``outbox_store.py``), folders (``drivers/core/``), modules (``drivers.core.reading.Reading``),
links and ``cityedge`` command lines; they, the code's docstrings and comments and
pyproject.toml name sections of the documents (docs/DEPLOY.md, "Storage"). When a module
moves, a heading is renamed or an option changes, whatever still names the old one fails
here with its document and line, instead of sending a maintainer to a file that is not there
or a technician to an option that does not exist. (Only names are checked: what a document
says about the code is for its reviewers.)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP_DIRS = {
    ".git",
    ".venv",
    "build",
    "dist",
    "wheelhouse",
    "var",
    "__pycache__",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    ".bench-cache",
}
EXTS = "pyx|pxd|pyi|py|toml|json|md|sh|service|socket|sysusers|proto|png|txt|html|css|js"


def _repo_files() -> list[str]:
    out = []
    for top, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        rel = Path(top).relative_to(ROOT).as_posix()
        out += [f if rel == "." else f"{rel}/{f}" for f in files]
    return out


FILES = _repo_files()
FILE_SET = set(FILES)
DIR_SET = {p.rsplit("/", i)[0] for p in FILES for i in range(1, p.count("/") + 1)}
BASENAMES = {p.rsplit("/", 1)[-1] for p in FILES}
DIR_NAMES = {d.rsplit("/", 1)[-1] for d in DIR_SET}
TOP = sorted(d for d in DIR_SET if "/" not in d)

# agent/forward/outbox.py, drivers/modbus/, ext/*.pyx, drivers/modbus/codec (a module)
REPO_PATH = re.compile(rf"(?<![\w./~-])((?:{'|'.join(map(re.escape, TOP))})/[\w./*-]*)")
# modbus/session.py, sinks/base.py: a path inside a package
SUB_PATH = re.compile(rf"(?<![\w./~-])([\w-]+(?:/[\w.-]+)*/[\w.-]+\.(?:{EXTS}))\b")
BARE_FILE = re.compile(r"(?<![\w./~-])([\w-]+\.(?:pyx|pxd|py))\b(?![\w/])")
MODULE = re.compile(r"(?<![\w./-])((?:agent|drivers|ext)(?:\.[A-Za-z_]\w*)+)(\*?)")
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
SECTION = re.compile(r"\b([A-Z][A-Z0-9_]*\.md)\)?,?\s*[(,]\s*\"([^\"]{2,100})\"")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    yield from enumerate(path.read_text(encoding="utf-8").splitlines(), 1)


def _where(path: Path, n: int) -> str:
    return f"{path.relative_to(ROOT)}:{n}"


def test_repo_paths_named_in_the_docs_exist() -> None:
    missing = []
    for doc in DOCS:
        for n, line in _lines(doc):
            for m in REPO_PATH.finditer(line):
                p = m.group(1).rstrip(".")
                if "*" in p:
                    found = any(ROOT.glob(p))
                else:
                    p = p.rstrip("/")
                    found = p in FILE_SET or p in DIR_SET or f"{p}.py" in FILE_SET
                if not found:
                    missing.append(f"{_where(doc, n)}: {m.group(1)}")
    assert not missing, "paths that do not exist:\n" + "\n".join(missing)


def test_paths_inside_packages_and_file_names_exist() -> None:
    """``modbus/session.py`` must be the end of some path, ``outbox_store.py`` the name of
    some file; a path whose first folder is not one of ours (``asyncio/base_events.py`` in a
    profile, ``DIR/etc/...`` in an example) is someone else's."""
    missing = []
    for doc in DOCS:
        for n, line in _lines(doc):
            for m in SUB_PATH.finditer(line):
                p = m.group(1)
                first = p.split("/", 1)[0]
                if first in TOP or first not in DIR_NAMES:
                    continue
                if not any(f.endswith("/" + p) for f in FILES):
                    missing.append(f"{_where(doc, n)}: {p}")
            for m in BARE_FILE.finditer(line):
                if m.group(1) not in BASENAMES:
                    missing.append(f"{_where(doc, n)}: {m.group(1)}")
    assert not missing, "files that do not exist:\n" + "\n".join(missing)


def _module_source(parts: list[str]) -> tuple[int, str] | None:
    """How many leading parts name a module of ours, and its source (None: not a module)."""
    for i in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:i])
        for f in (base.with_suffix(".py"), base.with_suffix(".pyx"), base / "__init__.py"):
            if f.is_file():
                return i, f.read_text(encoding="utf-8")
    return None


def test_modules_named_in_the_docs_exist() -> None:
    """``drivers.core.reading.Reading``: the module, and the name the first attribute gives
    in it (``ext.OP_*`` is a prefix of names)."""
    missing = []
    for doc in DOCS:
        for n, line in _lines(doc):
            for m in MODULE.finditer(line):
                dotted, star = m.group(1).rstrip("."), m.group(2)
                parts = dotted.split(".")
                found = _module_source(parts)
                if found is None:
                    missing.append(f"{_where(doc, n)}: {dotted} (no such module)")
                    continue
                i, source = found
                if i < len(parts):
                    name = re.escape(parts[i]) + (r"\w*" if star and i == len(parts) - 1 else "")
                    if not re.search(rf"\b{name}\b", source):
                        missing.append(f"{_where(doc, n)}: {dotted} ({parts[i]} not in it)")
    assert not missing, "modules or names that do not exist:\n" + "\n".join(missing)


def test_links_between_documents_resolve() -> None:
    missing = []
    for doc in DOCS:
        for n, line in _lines(doc):
            for m in LINK.finditer(line):
                target = m.group(1)
                if "://" in target or target.startswith("mailto:"):
                    continue
                if not (doc.parent / target).exists():
                    missing.append(f"{_where(doc, n)}: {target}")
    assert not missing, "links to nothing:\n" + "\n".join(missing)


def _headings(md: Path) -> list[str]:
    return [
        re.sub(r"^#+\s*", "", line).replace("`", "").strip()
        for line in md.read_text(encoding="utf-8").splitlines()
        if re.match(r"#+\s", line)
    ]


def test_sections_named_anywhere_exist() -> None:
    """``docs/DEPLOY.md, "Storage"`` in a document, a docstring or a comment (over line
    breaks and comment markers): a heading of that document starts with it."""
    sources = [
        *DOCS,
        ROOT / "pyproject.toml",
        *(ROOT / f for f in FILES if f.endswith(".py") and f.split("/", 1)[0] in TOP),
    ]
    headings = {md.name: _headings(md) for md in DOCS}
    missing = []
    for src in sources:
        text = re.sub(r"\n[ \t]*(?:#[ \t]*)?", " ", src.read_text(encoding="utf-8"))
        for m in SECTION.finditer(text):
            doc, section = m.group(1), " ".join(m.group(2).split())
            if doc not in headings:
                if doc not in BASENAMES:
                    missing.append(f"{src.relative_to(ROOT)}: {doc} (no such document)")
                continue
            if not any(h.startswith(section) for h in headings[doc]):
                missing.append(f'{src.relative_to(ROOT)}: {doc}, "{section}"')
    assert not missing, "sections that do not exist:\n" + "\n".join(missing)


# `cityedge ...` in inline code, and command lines in code blocks (after `$ `, `sudo `,
# `&&`, `$(`): the subcommand, its choices and its options must be the parser's.
INLINE_CMD = re.compile(r"`(?:sudo )?cityedge((?:\s+[^`]*)?)`")
BLOCK_CMD = re.compile(r"(?:^|&&|\|\||;|\$\(|<\(|^\$ |\bsudo )\s*cityedge((?:\s+[^\s#|;&>)`]+)*)")
OPTION = re.compile(r"-{1,2}[A-Za-z][\w-]*")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z_]*$|[\[\]|<>{}]")


def _command_lines(doc: Path) -> Iterator[tuple[int, list[str]]]:
    fence = False
    for n, line in _lines(doc):
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        found = BLOCK_CMD.finditer(line.strip()) if fence else INLINE_CMD.finditer(line)
        for m in found:
            words = []
            for w in m.group(1).split():
                if w[0] in "|><;&\\":  # the rest is the shell's
                    break
                if w.endswith(":"):  # "cityedge --help: median 0.385 s": prose follows
                    words.append(w[:-1])
                    break
                words.append(w)
            if words:
                yield n, words


def _check_command(words: list[str]) -> str | None:
    """Why ``cityedge WORDS`` does not fit the parser (None: it does). Values are not
    parsed; placeholders (``DEVICE``, ``run|check``) stand for anything."""
    import argparse

    from agent.cli.main import build_parser

    parser = build_parser()
    positional = 0
    i = 0
    while i < len(words):
        w = words[i]
        i += 1
        if OPTION.fullmatch(w.split("=", 1)[0]):
            act = parser._option_string_actions.get(w.split("=", 1)[0])
            if act is None:
                return f"{parser.prog}: no option {w.split('=', 1)[0]}"
            if act.nargs != 0 and "=" not in w:
                i += 1  # its value
            continue
        if PLACEHOLDER.search(w):
            positional += 1
            continue
        acts = [a for a in parser._actions if not a.option_strings]
        choices = list(acts[positional].choices or ()) if positional < len(acts) else []
        if choices:
            if w not in choices:
                return f"{parser.prog}: {w!r} is not one of {', '.join(map(str, choices))}"
            act = acts[positional]
            if isinstance(act, argparse._SubParsersAction):
                parser, positional = act.choices[w], 0
                continue
        positional += 1
    return None


def test_command_lines_in_the_docs_fit_the_parser() -> None:
    """A renamed subcommand or option leaves no `cityedge ...` line behind in a document."""
    wrong = []
    for doc in DOCS:
        for n, words in _command_lines(doc):
            why = _check_command(words)
            if why is not None:
                wrong.append(f"{_where(doc, n)}: cityedge {' '.join(words)}: {why}")
    assert not wrong, "command lines the CLI does not accept:\n" + "\n".join(wrong)
