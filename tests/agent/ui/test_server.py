"""The commissioning page's HTTP side against the real agent: login, session cookie, CSRF,
origin and host checks, the login throttle, live events, and a write that reaches the
simulator and the audit trail under the logged-in user's name."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pwd
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from agent.ui.app import UiSettings
from agent.ui.serve import Listen, serve
from tests.agent.ui.stack import PASSWORD, page, stack


async def _json(resp: aiohttp.ClientResponse) -> Any:
    return json.loads(await resp.text())


async def test_login_csrf_and_an_audited_write(tmp_path: Path) -> None:
    jar = aiohttp.CookieJar(unsafe=True)  # the page is on an address: aiohttp needs to be told
    async with stack(tmp_path) as st, aiohttp.ClientSession(cookie_jar=jar) as http:
        url = st.url.rstrip("/")
        origin = {"Origin": url}
        r = await http.get(f"{url}/api/session")
        assert await _json(r) == {"login": True, "user": None, "csrf": None, "interval": 0.5}
        r = await http.get(f"{url}/api/snapshot")
        assert r.status == 401  # nothing but the page itself without a session
        r = await http.get(f"{url}/")
        assert r.status == 200 and "CityEdge" in await r.text()
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]

        # another site's page cannot log in, nor reach the page by a rebound DNS name
        r = await http.post(f"{url}/api/login", json={}, headers={"Origin": "http://evil.example"})
        assert r.status == 403
        r = await http.get(f"{url}/api/session", headers={"Host": "evil.example:8088"})
        assert r.status == 421
        r = await http.post(f"{url}/api/login", data="user=alice", headers=origin)
        assert r.status == 415

        # three wrong passwords from one address (the stack's limit), then even the right one
        # waits: 429 with Retry-After, and the password is not even checked
        for _ in range(3):
            r = await http.post(
                f"{url}/api/login", json={"user": "alice", "password": "guess"}, headers=origin
            )
            assert r.status == 401 and (await _json(r))["error"] == "wrong user name or password"
        r = await http.post(
            f"{url}/api/login", json={"user": "alice", "password": PASSWORD}, headers=origin
        )
        assert r.status == 429 and int(r.headers["Retry-After"]) > 0
        st.settings.throttle.succeeded("127.0.0.1")  # the window would take 5 minutes

        r = await http.post(
            f"{url}/api/login", json={"user": "alice", "password": PASSWORD}, headers=origin
        )
        assert r.status == 200, await r.text()
        cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        csrf = (await _json(r))["csrf"]
        r = await http.get(f"{url}/api/session")
        assert (await _json(r))["user"] == "alice"

        write = {"device": "lamp-1", "point": "dim_level", "value": "0.3"}
        r = await http.post(f"{url}/api/write", json=write)
        assert r.status == 403  # no CSRF token
        r = await http.post(f"{url}/api/write", json=write, headers={"X-CSRF-Token": "x" * 43})
        assert r.status == 403
        assert st.street.registers(1, "holding", 0, 1) != [30]
        r = await http.post(f"{url}/api/write", json=write, headers={"X-CSRF-Token": csrf})
        assert r.status == 200
        answer = await _json(r)
        assert answer["status"] == "ok" and answer["value"] == 0.3, answer
        assert st.street.registers(1, "holding", 0, 1) == [30]
        record = json.loads(st.audit[-1])
        me = pwd.getpwuid(os.getuid()).pw_name
        assert record["user"] == me and record["onBehalfOf"] == "alice", record
        assert record["result"] == "ok" and record["id"].startswith("ui-")

        r = await http.post(
            f"{url}/api/write",
            json={"device": "lamp-1", "point": "voltage", "value": "1"},
            headers={"X-CSRF-Token": csrf},
        )
        answer = await _json(r)
        assert answer["status"] == "rejected" and "read-only" in answer["reason"]

        r = await http.post(f"{url}/api/logout", json={}, headers={"X-CSRF-Token": csrf})
        assert r.status == 200
        r = await http.get(f"{url}/api/snapshot")
        assert r.status == 401


async def test_events_stream_plan_and_snapshots_without_login(tmp_path: Path) -> None:
    async with stack(tmp_path, login=False) as st, aiohttp.ClientSession() as http:
        url = st.url.rstrip("/")
        session = await _json(await http.get(f"{url}/api/session"))
        assert session["login"] is False and session["user"] is None and session["csrf"]
        events: dict[str, dict[str, Any]] = {}
        async with http.get(f"{url}/api/events") as r:
            assert r.headers["Content-Type"] == "text/event-stream"
            name = None
            async with asyncio.timeout(10):
                while len(events) < 3 or events["snapshot"]["buses"][0].get("load") is None:
                    line = (await r.content.readline()).decode().rstrip("\n")
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: ") and name is not None:
                        events[name] = json.loads(line[6:])
        snap, plan, described = events["snapshot"], events["plan"], events["devices"]
        assert snap["agent"] == {"reachable": True, "error": None}
        assert snap["gateway"] == "hn-cabinet-0042"
        # the description comes once per config, the values every second
        lamp = described["devices"]["lamp-1"]
        assert lamp["kind"] == "streetlight" and lamp["interval"] == 1.0
        dim = next(p for p in lamp["points"] if p["point"] == "dim_level")
        assert dim["writable"] and dim["metric"] == "illuminanceLevel" and dim["max"] == 1
        assert "value" not in dim
        live = snap["devices"]["lamp-1"]
        assert live["state"] == "online" and "kind" not in live
        dim = next(p for p in live["points"] if p["point"] == "dim_level")
        assert dim["quality"] == "good" and "value" in dim and "writable" not in dim
        uplink = snap["sinks"][0]
        assert uplink["name"] == "uplink" and "depth" in uplink["outbox"]
        street = next(b for b in snap["buses"] if b["id"] == "street")
        assert street["connected"] and 0 <= street["load"] <= 1
        lamp_plan = next(d for b in plan["buses"] for d in b["devices"] if d["id"] == "lamp-1")
        assert lamp_plan["groups"][0]["requests"][0]["fc"] in (1, 2, 3, 4)

        # a write without a login: audited as the page's process user, no onBehalfOf
        r = await http.post(
            f"{url}/api/write",
            json={"device": "lamp-2", "point": "working_mode", "value": "manual"},
            headers={"X-CSRF-Token": session["csrf"]},
        )
        assert (await _json(r))["status"] == "ok"
        record = json.loads(st.audit[-1])
        assert "onBehalfOf" not in record and record["value"] == "manual"


async def test_agent_not_running_is_a_message_not_an_error(tmp_path: Path) -> None:
    async with page(UiSettings(tmp_path / "control.sock", None)) as url:
        async with aiohttp.ClientSession() as http:
            snap = await _json(await http.get(f"{url}api/snapshot"))
            session = await _json(await http.get(f"{url}api/session"))
            r = await http.post(
                f"{url}api/write",
                json={"device": "lamp-1", "point": "dim_level", "value": 0.5},
                headers={"X-CSRF-Token": session["csrf"]},
            )
            assert r.status == 503 and "did not take the write" in (await _json(r))["error"]
        assert snap["agent"]["reachable"] is False
        assert "is the agent running" in snap["agent"]["error"]


async def test_beyond_loopback_without_users_is_refused(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        "ui",
        "--host",
        "0.0.0.0",
        "--socket",
        str(tmp_path / "control.sock"),
        "--users",
        str(tmp_path / "absent"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    # a hang guard: one CLI run took over 30 s under qemu-user on a loaded machine
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 78 and b"absent: No such file" in err, err
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        "ui",
        "--host",
        "0.0.0.0",
        "--socket",
        str(tmp_path / "control.sock"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "CREDENTIALS_DIRECTORY": str(tmp_path)},
    )
    # a hang guard: one CLI run took over 30 s under qemu-user on a loaded machine
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 78 and b"beyond loopback needs a login" in err, err


async def test_socket_activation_serves_the_passed_socket_then_idles_out(tmp_path: Path) -> None:
    # what cityedge-ui.socket does: systemd listens, hands the socket over as fd 3 with
    # LISTEN_FDS/LISTEN_PID (sd_listen_fds(3)); the page serves it and leaves when idle
    import socket as sk

    listener = sk.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    cmd = (  # exec keeps the shell's pid: $$ is the page's own
        f"exec env LISTEN_PID=$$ LISTEN_FDS=1 {sys.executable} -m agent ui "
        f"--socket {tmp_path / 'control.sock'} --idle-exit 2 3<&{listener.fileno()}"
    )
    proc = await asyncio.create_subprocess_exec(
        "bash",  # (dash redirects single-digit descriptors only)
        "-c",
        cmd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        pass_fds=(listener.fileno(),),
    )
    listener.close()
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if not line:
        assert proc.stderr is not None
        raise AssertionError((await proc.stderr.read()).decode())
    assert f"http://127.0.0.1:{port}/" in line.decode(), line
    async with aiohttp.ClientSession() as http:
        r = await http.get(f"http://127.0.0.1:{port}/api/session")
        assert (await _json(r))["login"] is False
    await asyncio.wait_for(proc.wait(), 30)  # nobody on the page for 2 s: it leaves
    assert proc.returncode == 0


def test_the_daemon_never_loads_the_page() -> None:
    # the page is its own process: neither the web framework nor agent.ui in the daemon
    code = (
        "import sys, agent.runtime, agent.control.ctl; "
        "from agent.cli.main import build_parser; build_parser(); "  # what `cityedge run` loads
        "print(sorted(m for m in sys.modules if m.startswith(('aiohttp', 'agent.ui'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


async def test_https_and_a_secure_cookie(tmp_path: Path, mqtt_certs: Any) -> None:
    # --tls-cert/--tls-key: the test PKI's server certificate (localhost, 127.0.0.1)
    import ssl

    from agent.cli.ui import _tls
    from agent.ui.auth import Users, add_user

    args = argparse.Namespace(tls_cert=mqtt_certs.server_cert, tls_key=mqtt_certs.server_key)
    add_user(tmp_path / "ui_users", "alice", PASSWORD)
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    settings = UiSettings(tmp_path / "control.sock", Users.load(tmp_path / "ui_users"), tls=True)
    task = asyncio.create_task(
        serve(
            settings,
            Listen("127.0.0.1", 0, tls=_tls(args)),
            announce=lambda _: None,
            stop=stop,
            signals=False,
            on_ready=ready.set_result,
        )
    )
    try:
        url = await asyncio.wait_for(ready, 10)
        assert url.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(mqtt_certs.ca))
        async with aiohttp.ClientSession() as http:
            r = await http.post(
                f"{url}api/login",
                json={"user": "alice", "password": PASSWORD},
                headers={"Origin": url.rstrip("/")},
                ssl=trust,
            )
            assert r.status == 200, await r.text()
            assert "Secure" in r.headers["Set-Cookie"]
            try:  # plain HTTP on the TLS port gets nowhere
                await http.get(url.replace("https", "http") + "api/session")
                raise AssertionError("plain HTTP answered")
            except aiohttp.ClientError:
                pass
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
