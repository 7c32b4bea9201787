"""Where the gateway's secrets come from, for the service and for the technician's CLI alike.

The service runs under systemd: each ``LoadCredential=NAME:PATH`` of its unit has systemd copy
PATH into ``$CREDENTIALS_DIRECTORY``, where the file NAME fills ``secrets.NAME``. A shell has no
``$CREDENTIALS_DIRECTORY``, so the CLI reads the sources the unit names itself: ``sudo cityedge
run|check|sign`` on an installed gateway sees what the service will see. Sources, first match:

1. ``$CREDENTIALS_DIRECTORY`` (set by systemd: this is the service, or ``systemd-run``);
2. the installed unit of the config's root: for ``<root>/etc/cityedge/gateway.toml``,
   ``<root>/etc/systemd/system/cityedge.service`` (or the vendor unit directories) and its
   drop-ins ``cityedge.service.d/*.conf``, read as systemd reads them (``LoadCredential=`` with a
   file, a directory or a credential-store name, ``SetCredential=``, an empty assignment
   resetting the list), every path taken under ``<root>``: a staged install
   (``install.sh --root DIR``) is checked as it will run;
3. with no unit, the ``credentials/`` directory beside the config file.

``CITYEDGE_SECRETS__NAME`` in the environment overrides any of them (a manual run).
Commands that do not connect (``check``, ``plan``, ``status``...) never need a secret's value;
``check`` verifies each named secret instead (``verify``): its file exists, is not empty and
is readable by its owner only.
"""

from __future__ import annotations

import os
import pwd
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

UNIT = "cityedge.service"
UNIT_DIRS = ("etc/systemd/system", "usr/local/lib/systemd/system", "usr/lib/systemd/system",
             "lib/systemd/system")  # fmt: skip
DROPIN_DIRS = ("lib/systemd/system", "usr/lib/systemd/system", "usr/local/lib/systemd/system",
               "run/systemd/system", "etc/systemd/system")  # lowest priority first  # fmt: skip
CREDSTORES = ("etc/credstore", "run/credstore", "usr/local/lib/credstore", "usr/lib/credstore")
_SPECIFIERS = {"E": "/etc", "S": "/var/lib", "C": "/var/cache", "L": "/var/log", "t": "/run",
               "T": "/tmp", "n": UNIT, "N": "cityedge", "p": "cityedge", "%": "%"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Source:
    name: str
    path: Path | None  # the file read (None: SetCredential= text)
    origin: str  # where the source is declared, for messages
    value: str | None = None  # SetCredential= text
    encrypted: bool = False  # only systemd can decrypt it


@dataclass
class Credentials:
    how: str  # "$CREDENTIALS_DIRECTORY (...)", "the unit ...", "directory ..."
    sources: dict[str, Source] = field(default_factory=dict)
    unit: Path | None = None  # the installed unit, when the config belongs to one
    spare_dir: Path | None = None  # credentials/ beside the config
    problem: str | None = None  # why the sources could not be listed (a 0700 directory)

    def read(self) -> tuple[dict[str, str], dict[str, str]]:
        """(secret values that could be read, why the others could not) by name."""
        values: dict[str, str] = {}
        notes: dict[str, str] = {}
        for name, src in self.sources.items():
            if src.encrypted:
                notes[name] = f"{src.origin} is encrypted: only systemd can decrypt it"
            elif src.value is not None:
                values[name] = src.value
            elif src.path is not None:
                try:
                    values[name] = src.path.read_text(encoding="utf-8").rstrip("\r\n")
                except (OSError, UnicodeDecodeError) as exc:
                    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                    notes[name] = f"cannot read {src.path} ({src.origin}): {why}{_sudo()}"
        return values, notes

    def missing(self, name: str) -> str:
        """Why secret ``name`` has no source, and where to put it."""
        env = f"CITYEDGE_SECRETS__{name.upper()}"
        spare = self.spare_dir / name if self.spare_dir is not None else None
        if self.problem is not None:
            return f"{self.problem}; or set {env} for a run by hand"
        if self.unit is not None:
            target = spare or Path("/etc/cityedge/credentials") / name
            shown = _unrooted(self.unit, target)
            there = f"{target} exists, but " if spare is not None and _exists(spare) else ""
            return (
                f"{there}the unit {self.unit} loads no credential '{name}': add "
                f"'LoadCredential={name}:{shown}' in a drop-in (sudo systemctl edit cityedge)"
            )
        if self.how.startswith("$CREDENTIALS_DIRECTORY"):
            return f"no file '{name}' in {self.how}; add LoadCredential={name}:PATH to the unit"
        where = f"no file {spare}" if spare is not None else "no credentials directory"
        return f"{where}; or set {env} for a run by hand"

    def verify(self, name: str) -> tuple[str | None, str | None]:
        """(error, warning) about the source of secret ``name`` (check: the value itself is
        not needed, but it must be there, non-empty and private)."""
        src = self.sources.get(name)
        if src is None:
            return f"secret '{name}' not found: {self.missing(name)}", None
        if src.value is not None:
            return None, (
                f"secret '{name}' is written in the unit ({src.origin}), which every user can "
                "read: use LoadCredential= with a file of mode 0600"
            )
        assert src.path is not None
        path = src.path
        try:
            st = path.stat()
        except FileNotFoundError:
            return f"secret '{name}': {path} does not exist ({src.origin})", None
        except OSError as exc:
            return None, (
                f"secret '{name}' not verified: {path} is not accessible to this user "
                f"({exc.strerror}){_sudo()}"
            )
        if not stat.S_ISREG(st.st_mode):
            return f"secret '{name}': {path} is not a file ({src.origin})", None
        if st.st_mode & 0o077:
            return (
                f"secret '{name}': {path} can be read by users other than its owner "
                f"(mode {stat.filemode(st.st_mode)}): chmod 600 {path}"
            ), None
        if src.encrypted:
            return None, None
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            return None, f"secret '{name}' not verified: cannot read {path}: {why}{_sudo()}"
        if not text.strip("\r\n"):
            return (
                f"secret '{name}': {path} is empty ({src.origin}): write the secret into it",
                None,
            )
        return None, None

    def describe(self, name: str) -> str:
        src = self.sources.get(name)
        if src is None:
            return "not found"
        return f"{src.path} ({src.origin})" if src.path is not None else src.origin


def _sudo() -> str:
    return "" if os.geteuid() == 0 else " (run the command with sudo)"


def _exists(p: Path) -> bool:
    try:
        return p.exists()
    except OSError:
        return False


def _is_dir(p: Path) -> bool:
    try:
        return p.is_dir()
    except OSError:
        return False


def install_root(config: Path) -> Path | None:
    """``<root>`` of a config at ``<root>/etc/cityedge/<file>``, else None (a working copy)."""
    etc = config.absolute().parent.parent
    return etc.parent if etc.name == "etc" else None


def staged_root(config: Path) -> Path | None:
    """The staging directory of a config installed with ``install.sh --root DIR`` (a root
    other than / that holds the unit), else None. Absolute paths of such a config are taken
    under it, so a staged install is checked as it will run."""
    root = install_root(config)
    if root is None or root == Path("/") or _unit_file(root) is None:
        return None
    return root


def _unrooted(unit: Path, path: Path) -> str:
    """``path`` as the unit names it: without the staging root the unit file sits under."""
    for d in UNIT_DIRS:
        if unit.parent.as_posix().endswith("/" + d):
            root = Path(unit.parent.as_posix()[: -len(d) - 1] or "/")
            try:
                return "/" + path.relative_to(root).as_posix()
            except ValueError:
                break
    return str(path)


def find(config: Path, environ: Mapping[str, str] | None = None) -> Credentials:
    env = os.environ if environ is None else environ
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir and _is_dir(Path(cred_dir)):
        creds = Credentials(f"$CREDENTIALS_DIRECTORY ({cred_dir})")
        _add_dir(creds, Path(cred_dir), "", "$CREDENTIALS_DIRECTORY")
        return creds
    spare = config.absolute().parent / "credentials"
    root = install_root(config)
    unit = _unit_file(root) if root is not None else None
    if root is not None and unit is not None:
        creds = Credentials(f"the unit {unit}", unit=unit, spare_dir=spare)
        _from_unit(creds, root, unit)
        return creds
    creds = Credentials(f"directory {spare}", spare_dir=spare)
    if _exists(spare):
        _add_dir(creds, spare, "", f"directory {spare}")
    return creds


def _add_dir(creds: Credentials, d: Path, prefix: str, origin: str) -> None:
    try:
        files = sorted(d.iterdir())
    except OSError as exc:
        creds.problem = f"cannot list {d}: {exc.strerror or exc}{_sudo()}"
        return
    for f in files:
        if f.is_file():
            name = f"{prefix}{f.name}"
            creds.sources.setdefault(name, Source(name, f, origin))


def _unit_file(root: Path) -> Path | None:
    for d in UNIT_DIRS:
        f = root / d / UNIT
        if f.is_file() and f.stat().st_size > 0:  # a unit masked to /dev/null is no unit
            return f
    return None


def _dropins(root: Path) -> list[Path]:
    by_name: dict[str, Path] = {}
    for d in DROPIN_DIRS:  # a later (higher priority) directory's file of the same name wins
        dd = root / d / f"{UNIT}.d"
        if _is_dir(dd):
            for f in dd.glob("*.conf"):
                by_name[f.name] = f
    return [by_name[k] for k in sorted(by_name)]


def service_lines(files: list[Path]) -> list[tuple[Path, str, str]]:
    """(file, key, value) of every assignment in the [Service] sections of unit files."""
    out = []
    for f in files:
        section = None
        pending = ""
        for raw in f.read_text(encoding="utf-8", errors="replace").splitlines():
            line = pending + raw.strip()
            pending = ""
            if line.endswith("\\"):
                pending = line[:-1].rstrip() + " "
                continue
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            key, sep, value = line.partition("=")
            if sep and section == "Service":
                out.append((f, key.strip(), value.strip()))
    return out


def _specifiers(text: str) -> str:
    return re.sub(r"%(.)", lambda m: _SPECIFIERS.get(m.group(1), m.group(0)), text)


def _from_unit(creds: Credentials, root: Path, unit: Path) -> None:
    loaded: dict[str, Source] = {}
    literal: dict[str, Source] = {}
    for f, key, value in service_lines([unit, *_dropins(root)]):
        origin = f"{key}= in {f}"
        if key in ("LoadCredential", "LoadCredentialEncrypted"):
            if not value:
                loaded.clear()
                continue
            name, _, where = value.partition(":")
            where = _specifiers(where or name)
            enc = key.endswith("Encrypted")
            if where.startswith("/"):
                path = root / where.lstrip("/")
                if _is_dir(path):  # every file of it, as NAME_FILE
                    sub = Credentials(creds.how)
                    _add_dir(sub, path, f"{name}_", origin)
                    loaded.update(sub.sources)
                    continue
            else:  # a name in the credential stores
                stores = [root / s / where for s in CREDSTORES]
                path = next((p for p in stores if _exists(p)), stores[0])
            loaded[name] = Source(name, path, origin, encrypted=enc)
        elif key in ("SetCredential", "SetCredentialEncrypted"):
            if not value:
                literal.clear()
                continue
            name, _, text = value.partition(":")
            literal[name] = Source(
                name, None, origin, value=text, encrypted=key.endswith("Encrypted")
            )
    creds.sources = {**literal, **loaded}  # LoadCredential= wins over SetCredential=


def service_account() -> tuple[int, int] | None:
    """(uid, gid) of the static ``cityedge`` account install.sh creates, if there is one."""
    try:
        pw = pwd.getpwnam("cityedge")
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid
