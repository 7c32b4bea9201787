"""Shared helpers for the benchmarks: Mosquitto launcher, simulator fleet in a child process,
gateway config writer, per-process CPU/RSS sampling from /proc and a counting subscriber.

The agent under test always runs as its own process (``python -m agent run CONFIG``) so its CPU
time and memory are measured alone; simulators, Mosquitto and the subscriber live elsewhere.

    .venv/bin/python bench/common.py sims BUSES UNITS_PER_BUS   (internal: the simulator fleet)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from agent.config.outputs import MqttOutput

PY = sys.executable
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
CLK_TCK = os.sysconf("SC_CLK_TCK")
GATEWAY_ID = "bench-gw"
DATA_TOPIC = f"cityedge/{GATEWAY_ID}/data"

# --- bench-only device profiles -------------------------------------------------------------
# Both map onto the register map the simulator serves for streetlight units
# (drivers/profiles/cityedge/streetlight.toml), so every point reads real simulated values.
_SL_POINTS = {
    "dim_level": 'table = "holding"\naddress = 0\ntype = "uint16"\nscale = 0.01',
    "working_mode": 'table = "holding"\naddress = 2\ntype = "uint16"',
    "power_state": 'table = "input"\naddress = 0\ntype = "uint16"',
    "status_flags": 'table = "input"\naddress = 1\ntype = "uint16"',
    "status": 'table = "input"\naddress = 2\ntype = "uint16"',
    "voltage": 'table = "input"\naddress = 3\ntype = "uint16"\nscale = 0.1\nunit = "V"',
    "current": 'table = "input"\naddress = 4\ntype = "uint16"\nscale = 0.001\nunit = "A"',
    "active_power": 'table = "input"\naddress = 5\ntype = "uint16"\nscale = 0.1\nunit = "W"',
    "power_factor": 'table = "input"\naddress = 6\ntype = "int16"\nscale = 0.001',
    "frequency": 'table = "input"\naddress = 7\ntype = "uint16"\nscale = 0.01\nunit = "Hz"',
    "energy": 'table = "input"\naddress = 8\ntype = "uint32"\norder = "CDAB"\nscale = 0.001',
    "burning_hours": 'table = "input"\naddress = 10\ntype = "uint32"',
    # the 20-point variant adds these
    "lamp_switch": 'table = "holding"\naddress = 1\ntype = "uint16"',
    "rated_power": 'table = "holding"\naddress = 3\ntype = "uint16"\nunit = "W"',
    "lamp_on": 'table = "input"\naddress = 1\ntype = "bit"\nbit = 0',
    "lamp_failure": 'table = "input"\naddress = 1\ntype = "bit"\nbit = 1',
    "daytime": 'table = "input"\naddress = 1\ntype = "bit"\nbit = 4',
    "manual_mode": 'table = "input"\naddress = 1\ntype = "bit"\nbit = 5',
    "firmware": 'table = "input"\naddress = 16\ntype = "string"\nlength = 4',
    "relay_closed": 'table = "discrete"\naddress = 0\ntype = "bool"',
}
PROFILE_POINTS = {12: list(_SL_POINTS)[:12], 20: list(_SL_POINTS)}

# A typical chain on the analogue points (plausibility range, then deadband with heartbeat);
# abs/pct 0 = report every change, so the chain runs on every sample but thins only repeats.
FILTERED = {
    "voltage": '[{type = "range", min = 0, max = 300}, '
    '{type = "deadband", abs = 0.0, heartbeat = 60}]',
    "current": '[{type = "range", min = 0, max = 10}, '
    '{type = "deadband", abs = 0.0, heartbeat = 60}]',
    "active_power": '[{type = "range", min = 0, max = 1000}, '
    '{type = "deadband", abs = 0.0, heartbeat = 60}]',
    "frequency": '[{type = "range", min = 45, max = 65}, '
    '{type = "deadband", abs = 0.0, heartbeat = 60}]',
}


def write_profiles(base: Path) -> Path:
    """bench/sl12 and bench/sl20 under ``base``; returns the profile dir."""
    d = base / "profiles" / "bench"
    d.mkdir(parents=True, exist_ok=True)
    for n, names in PROFILE_POINTS.items():
        body = [
            f'id = "bench/sl{n}"',
            'kind = "streetlight"',
            'word_order = "ABCD"',
            "[limits]",
            "max_registers = 64",
            "max_gap = 8",
            'undefined = [{ table = "input", start = 12, end = 15 }]',
        ]
        for name in names:
            body += ["[[points]]", f'name = "{name}"', _SL_POINTS[name]]
        (d / f"sl{n}.toml").write_text("\n".join(body) + "\n")
    return base / "profiles"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


# --- Mosquitto ------------------------------------------------------------------------------
class Mosquitto:
    """``mosquitto -c CONF`` on a free loopback port; ``stop``/``start`` keep the port.
    Persistence is on so a subscriber's session (and the QoS 1 messages queued for it) survive
    a restart: the outage benchmark counts every reading across the broker restart."""

    def __init__(self, workdir: Path, options: Sequence[str] = ()) -> None:
        self.dir = workdir / "mosquitto"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        conf = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.dir}/",
            "max_queued_messages 0",
            "max_inflight_messages 0",
            "log_type error",
            *options,
        ]
        if os.geteuid() == 0:
            conf.insert(0, "user root")
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(conf) + "\n")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.proc is not None:
            return
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            wait_port(self.port)
        except TimeoutError:
            self.proc.kill()
            err = self.proc.communicate()[1].decode(errors="replace")
            self.proc = None
            raise RuntimeError(f"mosquitto did not start: {err}") from None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None


# --- simulator fleet (child process) --------------------------------------------------------
class SimFleet:
    """``buses`` Modbus TCP simulator servers, ``units`` streetlight unit ids each, served by
    ``procs`` child processes (each runs an asyncio loop with its share of the servers)."""

    def __init__(self, buses: int, units: int, procs: int = 1) -> None:
        self.buses, self.units = buses, units
        self.procs: list[subprocess.Popen[str]] = []
        self.ports: list[int] = []
        per = [buses // procs + (1 if i < buses % procs else 0) for i in range(procs)]
        for n in per:
            if n == 0:
                continue
            p = subprocess.Popen(
                [PY, str(Path(__file__)), "sims", str(n), str(units)],
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            self.procs.append(p)
        for p in self.procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            if not line:
                self.stop()
                raise RuntimeError("simulator process died at start")
            self.ports += json.loads(line)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []


SIM_LOCAL_HOUR = 21.0  # simulated local time of the bench fleet (see _sims_main)


async def _sims_main(buses: int, units: int) -> None:
    from drivers.sim.physics import UTC_OFFSET_S
    from drivers.sim.server import SimSpec, SimulatorServer

    spec = SimSpec(streetlights=range(1, units + 1), water_meters=(), cameras=())
    # The simulated lamps follow the local day (off in daylight, so their values stop changing
    # and the deadbands suppress them): pin the simulated time to 21:00 local, lamps on, so the
    # figures do not depend on the hour the benchmark happens to run.
    now = time.time()
    offset = (SIM_LOCAL_HOUR * 3600 - (now + UTC_OFFSET_S) % 86400) % 86400

    def clock() -> float:
        return time.time() + offset

    servers = [SimulatorServer(spec, clock=clock) for _ in range(buses)]
    for s in servers:
        await s.start()
    print(json.dumps([s.port for s in servers]), flush=True)
    try:
        # The registers are refreshed from the physics on every request: no tick task needed.
        await asyncio.Event().wait()
    finally:
        for s in servers:
            await s.stop()


# --- gateway config -------------------------------------------------------------------------
def gateway_config(
    workdir: Path,
    ports: Sequence[int],
    units: int,
    *,
    points: int,
    interval: float,
    broker_url: str | None,
    filters: bool = True,
    reconnect_max: float = 5.0,
) -> Path:
    """A gateway file: one bus per simulator port, ``units`` devices on each (bench/slNN
    profile), filter chains on the analogue points of every device, one native MQTT output."""
    profiles = write_profiles(workdir)
    state = workdir / "state"
    state.mkdir(parents=True, exist_ok=True)
    lines = [
        "[gateway]",
        f'id = "{GATEWAY_ID}"',
        f'state_dir = "{state}"',
        f'profile_dirs = ["{profiles}"]',
        'log_level = "info"',
        "shutdown_grace = 5.0",
        "[metrics]",
        "port = 0",
    ]
    for b, port in enumerate(ports):
        lines += [
            "[[buses]]",
            f'id = "bus{b}"',
            f'endpoint = "tcp://127.0.0.1:{port}"',
            "timeout = 1.0",
        ]
    for b in range(len(ports)):
        for u in range(1, units + 1):
            lines += [
                "[[devices]]",
                f'id = "sl-{b}-{u}"',
                f'bus = "bus{b}"',
                f'profile = "bench/sl{points}"',
                f"unit_id = {u}",
                f"interval = {interval}",
            ]
            if filters:
                lines.append("[devices.filters]")
                lines += [f"{k} = {v}" for k, v in FILTERED.items()]
    if broker_url:
        lines += [
            "[[outputs]]",
            'type = "mqtt"',
            'id = "city"',
            f'brokers = [{{ url = "{broker_url}" }}]',
            'encoding = "native"',
            "qos = 1",
            "reconnect_min = 0.5",
            f"reconnect_max = {reconnect_max}",
        ]
    else:
        lines += ["[[outputs]]", 'type = "jsonl"', 'id = "null"', 'path = "/dev/null"']
    cfg = workdir / "gateway.toml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


UNIT = ROOT / "systemd" / "cityedge.service"
CACHE_ROOT = ROOT / ".bench-cache"  # the unit's %C: -OO bytecode, kept warm between runs


def service_env(cache_root: Path = CACHE_ROOT) -> dict[str, str]:
    """The ``Environment=`` of the systemd unit, ``%C`` (the cache root) set to ``cache_root``:
    the agent is measured (and tested) in the interpreter mode it runs in on a gateway."""
    env: dict[str, str] = {}
    for line in UNIT.read_text().splitlines():
        if line.startswith("Environment="):
            for item in shlex.split(line.removeprefix("Environment=")):
                key, _, value = item.partition("=")
                env[key] = value.replace("%C", str(cache_root))
    # the unit cannot write bytecode beside the sources; neither may a developer's setting stop
    # the cache directory from filling (an empty value means unset to Python)
    env["PYTHONDONTWRITEBYTECODE"] = ""
    return env


def start_agent(
    cfg: Path,
    *,
    no_ext: bool = False,
    extra_env: dict[str, str] | None = None,
    prefix: Sequence[str] = (),
    cache_root: Path = CACHE_ROOT,
) -> subprocess.Popen[bytes]:
    """``python -m agent run CFG`` in the unit's environment (``prefix`` replaces the
    interpreter, e.g. a profiler); stderr goes to agent.log beside the config (a pipe nobody
    reads could block the agent)."""
    env = {**os.environ, **service_env(cache_root), **(extra_env or {})}
    env.pop("CITYEDGE_NO_EXT", None)
    if no_ext:
        env["CITYEDGE_NO_EXT"] = "1"
    cmd = [*(prefix or [PY]), "-m", "agent", "run", str(cfg)]
    with open(cfg.parent / "agent.log", "ab") as log:
        return subprocess.Popen(cmd, cwd=cfg.parent, env=env, stdout=subprocess.DEVNULL, stderr=log)


def stop_agent(proc: subprocess.Popen[bytes], cfg: Path, timeout: float = 20.0) -> str:
    """SIGTERM, wait; returns the agent's log."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return (cfg.parent / "agent.log").read_text(errors="replace")


def agent_totals(log: str) -> tuple[int, int, int] | None:
    """(read, delivered, suppressed) from the agent's 'stopped:' log line."""
    import re

    m = re.search(r"stopped: (\d+) readings read, (\d+) delivered .*?, (\d+) suppressed", log)
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


# --- /proc sampling -------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB."""
    cur = peak = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return cur, peak


@dataclass
class Sampler:
    """Samples a process's RSS every ``period`` s in a thread (steady = median of samples)."""

    pid: int
    period: float = 0.5
    samples: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _t: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._t = threading.Thread(target=self._loop, daemon=True, name="rss-sampler")
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._t:
            self._t.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            with contextlib.suppress(OSError):
                self.samples.append(rss_mb(self.pid)[0])

    @property
    def steady(self) -> float:
        return statistics.median(self.samples) if self.samples else 0.0


# --- counting subscriber --------------------------------------------------------------------
class Counter:
    """paho-mqtt subscriber (network thread) on the native data topic: counts readings,
    arrival times per message, distinct reading ids and historical readings. A persistent
    session (fixed client id, clean_session False) keeps the subscription across a broker
    restart (``persistent``), so nothing published while it reconnects is missed."""

    def __init__(
        self,
        port: int,
        *,
        keep_ids: bool = False,
        client_id: str = "bench-sub",
        persistent: bool = False,
    ) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.readings = 0
        self.messages = 0
        self.historical = 0
        self.keep_ids = keep_ids
        self.ids: set[int] = set()
        self.dups = 0
        self.log: list[tuple[float, int, int]] = []  # (monotonic, readings, historical)
        self._lock = threading.Lock()
        self._connected = threading.Event()
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent
        )
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]  # seconds; paho's hint says int
        c.max_inflight_messages_set(1000)
        self.client = c
        c.connect("127.0.0.1", port, keepalive=30)
        c.loop_start()
        if not self._connected.wait(10):
            raise RuntimeError("subscriber could not connect")

    def _on_connect(
        self, client: object, userdata: object, flags: object, rc: object, props: object = None
    ) -> None:
        self.client.subscribe(DATA_TOPIC, qos=1)
        self._connected.set()

    def _on_message(self, client: object, userdata: object, msg: object) -> None:
        doc = json.loads(msg.payload)  # type: ignore[attr-defined]
        rs = doc.get("readings", ())
        hist = 0
        for r in rs:
            if r.get("historical"):
                hist += 1
        now = time.monotonic()
        with self._lock:
            self.messages += 1
            self.readings += len(rs)
            self.historical += hist
            self.log.append((now, len(rs), hist))
            if self.keep_ids:
                for r in rs:
                    i = r["id"]
                    if i in self.ids:
                        self.dups += 1
                    else:
                        self.ids.add(i)

    def count_between(self, t0: float, t1: float) -> int:
        with self._lock:
            return sum(n for t, n, _ in self.log if t0 <= t < t1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    # /var/tmp: on disk (not tmpfs), so the outbox's fsyncs cost what they cost on a gateway
    d = Path(tempfile.mkdtemp(prefix=f"cityedge-{prefix}-", dir="/var/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def machine() -> dict[str, str]:
    import platform

    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    env = {k: v for k, v in os.environ.items() if k != "CITYEDGE_NO_EXT"}
    impl = subprocess.run(
        [PY, "-c", "import ext; print(ext.IMPLEMENTATION)"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": f"{mem / 1024:.1f} GiB",
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "filters": impl or "unknown",
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def emit_json(result: Mapping[str, object]) -> None:
    """The machine-readable result line run_all.py looks for."""
    print("BENCH-JSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "sims":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_sims_main(int(sys.argv[2]), int(sys.argv[3])))
    else:
        print(__doc__)
        sys.exit(2)


def local_mqtt_output(port: int) -> MqttOutput:
    """An MQTT output to a bench broker on loopback: quick reconnects, no health messages."""
    from agent.config.outputs import MqttOutput

    return MqttOutput.model_validate(
        {
            "type": "mqtt",
            "id": "up",
            "brokers": [{"url": f"mqtt://127.0.0.1:{port}"}],
            "health_interval": 0,
            "reconnect_min": 0.2,
            "reconnect_max": 1.0,
        }
    )
