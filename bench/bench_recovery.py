"""Outage recovery at load: 50 devices x 12 points at 1 s (10 buses) -> agent -> Mosquitto.
Mosquitto is stopped for 60 s (--quick: 15 s) and restarted on the same port; the backlog the
outbox kept is replayed. Figures: backlog size, replay rate (historical readings received per
second from the first one after the restart to the last one), time to drain, and the loss check:
every outbox id the agent assigned must have reached the subscriber or still be in the outbox
after a graceful stop. Target replay >= 5 000 readings/s.

The subscriber keeps a persistent session on a broker with persistence on, so readings the agent
publishes before the subscriber has reconnected are queued for it, not lost by the test rig.

    .venv/bin/python bench/bench_recovery.py [--quick] [--json] [--outage S]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.forward.outbox_store import Store
from bench.common import (
    Counter,
    Mosquitto,
    SimFleet,
    cpu_seconds,
    emit_json,
    gateway_config,
    start_agent,
    stop_agent,
    workdir,
)

TARGET_REPLAY = 5000.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="15 s outage instead of 60 s")
    ap.add_argument("--json", action="store_true", help="also print a BENCH-JSON result line")
    ap.add_argument("--outage", type=float, default=None)
    args = ap.parse_args()
    outage = args.outage or (15.0 if args.quick else 60.0)
    with workdir("recovery") as base:
        broker = Mosquitto(base)
        broker.start()
        fleet = SimFleet(10, 5)
        sub = Counter(broker.port, keep_ids=True, client_id="bench-recovery", persistent=True)
        try:
            cfg = gateway_config(
                base, fleet.ports, 5, points=12, interval=1.0, broker_url=broker.url
            )
            proc = start_agent(cfg)
            try:
                time.sleep(8.0)
                before = sub.readings
                broker.stop()
                time.sleep(outage)
                c0 = cpu_seconds(proc.pid)
                broker.start()
                t_up = time.monotonic()
                # drain: wait until no historical reading arrived for 3 s (or 120 s passed)
                while time.monotonic() - t_up < 120:
                    time.sleep(0.5)
                    with sub._lock:
                        hist = [t for t, _, h in sub.log if t >= t_up and h]
                    if hist and time.monotonic() - hist[-1] > 3.0:
                        break
                c1 = cpu_seconds(proc.pid)
                time.sleep(2.0)
            finally:
                stop_agent(proc, cfg)
            time.sleep(1.0)
        finally:
            sub.close()
            fleet.stop()
            broker.stop()
        st = Store.open_readonly(base / "state" / "outbox-city.sqlite")
        last_id = st.last_id
        remaining = {r.id for r in st.read(0, 10**8)}
        st.close()
    with sub._lock:
        after = [(t, n, h) for t, n, h in sub.log if t >= t_up]
    hist_msgs = [(t, h) for t, _, h in after if h]
    backlog = sum(h for _, h in hist_msgs)
    if hist_msgs:
        first = after[0][0]
        last = hist_msgs[-1][0]
        rate = backlog / max(last - first, 1e-3)
        drain = last - t_up
        reconnect = first - t_up
    else:
        rate = drain = reconnect = 0.0
    lost = sorted(set(range(1, last_id + 1)) - sub.ids - remaining)
    print(
        f"outage {outage:.0f} s at 600 readings/s polled; before the outage "
        f"{before} readings delivered"
    )
    print(
        f"backlog replayed: {backlog} readings (historical) in {drain:.1f} s after the "
        f"restart (first message {reconnect:.1f} s after it)"
    )
    print(
        f"replay rate: {rate:.0f} readings/s (target >= {TARGET_REPLAY:.0f}); "
        f"agent CPU during drain {c1 - c0:.2f} s"
    )
    print(
        f"ids assigned {last_id}, received {len(sub.ids)} distinct "
        f"({sub.dups} redeliveries), left in outbox {len(remaining)}, lost {len(lost)}"
    )
    if args.json:
        emit_json(
            {
                "bench": "recovery",
                "outage_s": outage,
                "backlog": backlog,
                "replay_per_s": round(rate, 1),
                "drain_s": round(drain, 2),
                "reconnect_s": round(reconnect, 2),
                "ids": last_id,
                "received": len(sub.ids),
                "redeliveries": sub.dups,
                "left_in_outbox": len(remaining),
                "lost": len(lost),
                "drain_cpu_s": round(c1 - c0, 2),
                "target_replay": TARGET_REPLAY,
            }
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
