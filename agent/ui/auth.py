"""Who may use the commissioning page: users file, password hashes, sessions, login throttle.

The users file is a credential (``ui_users``: ``$CREDENTIALS_DIRECTORY`` under systemd, else
``/etc/cityedge/credentials/ui_users``), one ``name:hash`` line per person. The hash is scrypt
(stdlib ``hashlib.scrypt``, N=2^14, r=8, p=1: 16 MiB and a few tens of ms per try on a Pi, which
also paces guessing); ``cityedge ui --add-user NAME`` writes a line. A password is compared by
its derived key with ``hmac.compare_digest``, and an unknown name costs the same scrypt as a
known one, so neither timing nor the answer tells which names exist.

Sessions live in the page's process only (a restart logs everyone out): a random 256-bit id in
an HttpOnly, SameSite=Strict cookie, and a CSRF token per session that every write must echo in
a header. Failed logins are throttled per client address and overall (``LoginThrottle``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

USERS_CREDENTIAL = "ui_users"
DEFAULT_USERS_FILE = Path("/etc/cityedge/credentials") / USERS_CREDENTIAL
_N, _R, _P = 2**14, 8, 1
_MAXMEM = 64 * 1024 * 1024
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")
SESSION_IDLE_S = 2 * 3600.0
SESSION_MAX_S = 12 * 3600.0


class UsersFileError(Exception):
    def __init__(self, path: Path, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, maxmem=_MAXMEM)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(key)}"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _parse_hash(text: str) -> tuple[int, int, int, bytes, bytes]:
    scheme, n, r, p, salt, key = text.split("$")
    if scheme != "scrypt":
        raise ValueError(f"unknown hash scheme '{scheme}' (scrypt only)")
    return int(n), int(r), int(p), base64.b64decode(salt), base64.b64decode(key)


def check_name(name: str) -> str | None:
    """Why ``name`` cannot be a user name, or None."""
    if not name or len(name) > 64 or not set(name) <= NAME_CHARS:
        return "a user name is 1-64 letters, digits, '.', '_', '-' or '@'"
    return None


class Users:
    """The users file, read once at start (restart the page to apply a change)."""

    def __init__(self, hashes: dict[str, tuple[int, int, int, bytes, bytes]]) -> None:
        self._hashes = hashes
        # what an unknown name is checked against: the same work, never a match
        self._dummy = _parse_hash(hash_password(secrets.token_hex(16)))

    @property
    def names(self) -> list[str]:
        return sorted(self._hashes)

    @classmethod
    def load(cls, path: Path) -> Users:
        try:
            st = path.stat()
            text = path.read_text()
        except OSError as exc:
            raise UsersFileError(path, exc.strerror or str(exc)) from exc
        if st.st_mode & 0o077:
            raise UsersFileError(
                path, f"readable by others (mode {st.st_mode & 0o777:04o}): chmod 600 it"
            )
        hashes = {}
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, hashed = line.partition(":")
            try:
                if not sep or check_name(name):
                    raise ValueError("expected 'name:scrypt$...' (cityedge ui --add-user NAME)")
                hashes[name] = _parse_hash(hashed)
            except ValueError as exc:
                raise UsersFileError(path, f"line {n}: {exc}") from exc
        if not hashes:
            raise UsersFileError(path, "no users (add one: cityedge ui --add-user NAME)")
        return cls(hashes)

    def verify(self, name: str, password: str) -> bool:
        """Constant work whatever the name; CPU-heavy: call it off the event loop."""
        known = self._hashes.get(name)
        n, r, p, salt, key = known or self._dummy
        got = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM)
        return hmac.compare_digest(got, key) and known is not None


def add_user(path: Path, name: str, password: str) -> bool:
    """Add or replace ``name`` in the users file (created 0600); True if it replaced one."""
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [ln for ln in lines if ln.partition(":")[0].strip() != name]
    kept.append(f"{name}:{hash_password(password)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(kept) + "\n")
    os.replace(tmp, path)
    return len(kept) == len(lines)


@dataclass
class Session:
    user: str | None  # None: no login (loopback without a users file)
    csrf: str
    created: float
    seen: float


@dataclass
class Sessions:
    clock: Callable[[], float] = time.monotonic
    idle_s: float = SESSION_IDLE_S
    max_s: float = SESSION_MAX_S
    _by_id: dict[str, Session] = field(default_factory=dict)

    def open(self, user: str) -> tuple[str, Session]:
        self._expire()
        sid = secrets.token_urlsafe(32)
        now = self.clock()
        s = self._by_id[sid] = Session(user, secrets.token_urlsafe(32), now, now)
        return sid, s

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        s = self._by_id.get(sid)
        now = self.clock()
        if s is None or now - s.seen > self.idle_s or now - s.created > self.max_s:
            self._by_id.pop(sid, None)
            return None
        s.seen = now
        return s

    def close(self, sid: str | None) -> None:
        if sid:
            self._by_id.pop(sid, None)

    def _expire(self) -> None:
        now = self.clock()
        for sid, s in list(self._by_id.items()):
            if now - s.seen > self.idle_s or now - s.created > self.max_s:
                del self._by_id[sid]


class LoginThrottle:
    """At most ``per_client`` failed logins per client address within ``window`` seconds, and
    ``overall`` failures from all addresses together (a guesser with many addresses); past
    that, logins are refused without checking the password until the window has passed."""

    def __init__(
        self,
        per_client: int = 5,
        overall: int = 30,
        window: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_client = per_client
        self.overall = overall
        self.window = window
        self.clock = clock
        self._fails: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` may try again; 0 when it may now."""
        now = self.clock()
        self._trim(now)
        waits = []
        mine = self._fails.get(client)
        if mine is not None and len(mine) >= self.per_client:
            waits.append(mine[0] + self.window - now)
        if len(self._all) >= self.overall:
            waits.append(self._all[0] + self.window - now)
        return max(waits, default=0.0)

    def failed(self, client: str) -> None:
        now = self.clock()
        self._fails.setdefault(client, deque()).append(now)
        self._all.append(now)

    def succeeded(self, client: str) -> None:
        self._fails.pop(client, None)

    def _trim(self, now: float) -> None:
        horizon = now - self.window
        while self._all and self._all[0] <= horizon:
            self._all.popleft()
        for client, q in list(self._fails.items()):
            while q and q[0] <= horizon:
                q.popleft()
            if not q:
                del self._fails[client]
