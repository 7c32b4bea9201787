"""Shared fixtures: a real Mosquitto broker on a free loopback port.

Usage::

    def test_x(mosquitto):
        broker = mosquitto()                              # anonymous, plain TCP
        broker = mosquitto(users={"gw1": "secret"})       # password file, no anonymous
        broker = mosquitto(tls=True, require_certificate=True)  # client certs (broker.certs)
        broker = mosquitto(tls=True, wrong_server_name=True)  # cert for wrong.example only
        broker = mosquitto(persistence=True)  # sessions/queued messages survive stop()/start()
        broker = mosquitto(users=..., acl="user gw1\\ntopic readwrite cityedge/gw1/#\\n")
        broker.url, broker.host, broker.port
        broker.stop(); broker.start()                    # same port (outage tests)

Certificates (CA, server for localhost/127.0.0.1, client CN ``gw1`` and ``other``) are made
once per session with the ``openssl`` CLI. With ``require_certificate`` the client certificate's
CN becomes the MQTT username (``use_identity_as_username``), so ACLs apply to it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from drivers.core.fpenv import keep_subnormals

# Tests load aiohttp (the page, and pymodbus.server for the simulators) in whatever order they
# are collected; on armhf its yarl turns on flush-to-zero for the whole process
# (drivers/core/fpenv.py). Loaded here first and undone, no float test depends on that order.
assert aiohttp
keep_subnormals()
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path  # CN=gw1
    client_key: Path
    other_cert: Path  # CN=other
    other_key: Path
    wrong_cert: Path  # a server certificate for wrong.example only (hostname-check tests)
    wrong_key: Path


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True)


def _leaf(d: Path, name: str, cn: str, ext: str) -> None:
    (d / f"{name}.ext").write_text(
        f"{ext}\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
        "basicConstraints=CA:FALSE\n"
    )
    _openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        f"/CN={cn}",
        cwd=d,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        f"{name}.crt",
        "-extfile",
        f"{name}.ext",
        cwd=d,
    )


@pytest.fixture(scope="session")
def mqtt_certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    if shutil.which("openssl") is None:
        raise RuntimeError("openssl CLI is required to generate test certificates")
    d = tmp_path_factory.mktemp("pki")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=cityedge-test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )
    _leaf(
        d,
        "server",
        "localhost",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth",
    )
    _leaf(d, "client", "gw1", "extendedKeyUsage=clientAuth")
    _leaf(d, "other", "other", "extendedKeyUsage=clientAuth")
    _leaf(
        d, "wrong", "wrong.example", "subjectAltName=DNS:wrong.example\nextendedKeyUsage=serverAuth"
    )
    return Certs(
        d / "ca.crt",
        d / "server.crt",
        d / "server.key",
        d / "client.crt",
        d / "client.key",
        d / "other.crt",
        d / "other.key",
        d / "wrong.crt",
        d / "wrong.key",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Mosquitto:
    workdir: Path
    port: int
    tls: bool
    certs: Certs | None
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def conf(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log(self) -> Path:
        return self.workdir / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def start(self, timeout: float = 5.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        with self.log.open("ab") as logf:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf)], stdout=logf, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self.proc.returncode}:\n"
                    + self.log.read_text(errors="replace")[-2000:]
                )
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


MosquittoFactory = Callable[..., Mosquitto]


@pytest.fixture
def mosquitto(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[MosquittoFactory]:
    if not os.path.exists(MOSQUITTO):
        raise RuntimeError(f"mosquitto not found at {MOSQUITTO}: install it (apt mosquitto)")
    started: list[Mosquitto] = []

    def factory(
        *,
        users: dict[str, str] | None = None,
        tls: bool = False,
        require_certificate: bool = False,
        acl: str | None = None,
        port: int | None = None,
        persistence: bool = False,
        wrong_server_name: bool = False,
    ) -> Mosquitto:
        d = tmp_path / f"mosquitto{len(started)}"
        d.mkdir()
        certs = request.getfixturevalue("mqtt_certs") if tls else None
        b = Mosquitto(d, port or free_port(), tls, certs)
        lines = [
            "per_listener_settings false",
            f"log_dest file {b.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            f"listener {b.port} 127.0.0.1",
            f"allow_anonymous {'false' if users or require_certificate else 'true'}",
        ]
        if persistence:  # sessions and queued QoS 1 messages survive stop()/start()
            lines += ["persistence true", f"persistence_location {d}/"]
        else:
            lines.append("persistence false")
        if os.geteuid() == 0:
            lines.insert(0, "user root")  # else it drops privileges and cannot read tmp files
        if users:
            pw = d / "passwd"
            pw.write_text("".join(f"{u}:{p}\n" for u, p in users.items()))
            pw.chmod(0o600)
            subprocess.run(["mosquitto_passwd", "-U", str(pw)], check=True, capture_output=True)
            lines.append(f"password_file {pw}")
        if acl is not None:
            (d / "acl").write_text(acl)
            lines.append(f"acl_file {d / 'acl'}")
        if certs is not None:
            lines += [
                f"cafile {certs.ca}",
                f"certfile {certs.wrong_cert if wrong_server_name else certs.server_cert}",
                f"keyfile {certs.wrong_key if wrong_server_name else certs.server_key}",
            ]
            if require_certificate:
                lines += ["require_certificate true", "use_identity_as_username true"]
        b.conf.write_text("\n".join(lines) + "\n")
        b.start()
        started.append(b)
        return b

    yield factory
    for b in started:
        b.stop()
