"""Users file, password hashes, sessions and the login throttle (agent/ui/auth.py), with an
injected clock."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from agent.ui.auth import LoginThrottle, Sessions, Users, UsersFileError, add_user, hash_password


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_scrypt_hash_verifies_only_the_password(tmp_path: Path) -> None:
    users_file = tmp_path / "ui_users"
    assert add_user(users_file, "alice", "correct horse battery") is False
    assert add_user(users_file, "bob", "another long one") is False
    assert users_file.stat().st_mode & 0o777 == 0o600
    users = Users.load(users_file)
    assert users.names == ["alice", "bob"]
    assert users.verify("alice", "correct horse battery")
    assert not users.verify("alice", "correct horse batterY")
    assert not users.verify("bob", "correct horse battery")
    assert not users.verify("mallory", "correct horse battery")  # same work, no match
    # a changed password replaces the line; the old one stops working
    assert add_user(users_file, "alice", "a new passphrase") is True
    users = Users.load(users_file)
    assert users.verify("alice", "a new passphrase")
    assert not users.verify("alice", "correct horse battery")
    assert users_file.read_text().count("alice:") == 1


def test_hash_format_is_scrypt_with_its_parameters() -> None:
    salt = bytes(range(16))
    text = hash_password("pw", salt=salt)
    scheme, n, r, p, _, key = text.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    import base64

    expected = hashlib.scrypt(b"pw", salt=salt, n=16384, r=8, p=1, maxmem=64 * 1024 * 1024)
    assert base64.b64decode(key) == expected


@pytest.mark.parametrize(
    ("text", "mode", "message"),
    [
        ("alice:scrypt$1$2$3$AA==$AA==\n", 0o644, "readable by others (mode 0644)"),
        ("# only a comment\n", 0o600, "no users"),
        ("alice\n", 0o600, "line 1: expected 'name:scrypt$...'"),
        ("\nalice:md5$x\n", 0o600, "line 2: not enough values"),
        ("bad name:scrypt$1$2$3$AA==$AA==\n", 0o600, "line 1: expected"),
        ("alice:bcrypt$1$2$3$AA==$AA==\n", 0o600, "unknown hash scheme 'bcrypt'"),
    ],
)
def test_bad_users_files_are_refused_with_the_line(
    tmp_path: Path, text: str, mode: int, message: str
) -> None:
    path = tmp_path / "ui_users"
    path.write_text(text)
    path.chmod(mode)
    with pytest.raises(UsersFileError) as err:
        Users.load(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_missing_users_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(UsersFileError, match="No such file"):
        Users.load(tmp_path / "absent")


def test_sessions_expire_when_idle_and_at_their_maximum_age() -> None:
    clock = Clock()
    sessions = Sessions(clock=clock, idle_s=60, max_s=300)
    sid, s = sessions.open("alice")
    assert len(sid) >= 43 and len(s.csrf) >= 43 and sid != s.csrf
    clock.t += 59
    assert sessions.get(sid) is s  # seen again: the idle time restarts
    clock.t += 59
    assert sessions.get(sid) is s
    clock.t += 61
    assert sessions.get(sid) is None  # idle too long
    sid, s = sessions.open("alice")
    for _ in range(6):
        clock.t += 50
        assert sessions.get(sid) is s  # active every 50 s, up to 300 s after login
    clock.t += 1
    assert sessions.get(sid) is None  # past the maximum age, however active
    assert sessions.get("made-up") is None and sessions.get(None) is None
    sid, _ = sessions.open("bob")
    sessions.close(sid)
    assert sessions.get(sid) is None


def test_throttle_per_client_and_overall() -> None:
    clock = Clock()
    t = LoginThrottle(per_client=3, overall=5, window=60, clock=clock)
    for _ in range(3):
        assert t.retry_after("10.0.0.1") == 0
        t.failed("10.0.0.1")
        clock.t += 1
    assert t.retry_after("10.0.0.1") == pytest.approx(57)  # the first failure ages out at 60
    assert t.retry_after("10.0.0.2") == 0  # another address may still try
    t.failed("10.0.0.2")
    t.failed("10.0.0.3")
    assert t.retry_after("10.0.0.4") > 0  # five failures overall: everyone waits
    clock.t += 60
    assert t.retry_after("10.0.0.1") == 0 and t.retry_after("10.0.0.4") == 0
    t.failed("10.0.0.1")
    t.succeeded("10.0.0.1")  # a good login clears the address's own record
    assert t.retry_after("10.0.0.1") == 0
