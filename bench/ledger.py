#!/usr/bin/env python3
"""Ledger latency benchmark (issue 6, "Benchmark"): what recording every request costs the
request path. Figures, not a test. Run it as `./scripts/bench-ledger`, which builds the release
binary, then runs this and the write-rate benchmark (benches/ledger_write.rs).

Method
  * One `cachet sim` and three `cachet serve` processes in front of it, alike but for the
    ledger: `off` (no ledger), `sqlite` (the default SQLite file, WAL) and `postgres` (the
    machine's PostgreSQL, database `test`, a schema of its own), each flushing every second.
  * Requests: the same ~1 KB OpenAI chat bodies as scripts/bench-overhead, JSON and streamed, one
    connection (one request in flight: latency, not queueing), and a loaded run of 16
    connections, where the writer's batches compete with requests for the 2 cores.
  * Rounds: each round measures direct, off, on (sqlite, postgres) and off again, in that order,
    --rounds times (default 5): off and on alternate, and the two off runs of a round give the
    off-vs-off spread, which is how much two identical runs differ on this machine.
  * Added latency = p99 via the proxy − p99 direct, per round; medians across rounds. The
    target: |added on − added off| ≤ max(5% of added off, the off-vs-off spread), where the
    spread is the median across rounds of |added off₁ − added off₂|.
  * Every proxy's ledger is checked at the end: the records it holds equal the requests it
    served (nothing dropped, nothing twice).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead as oh  # noqa: E402  (the harness pieces: processes, wrk, bodies)

ROOT = oh.ROOT
PG = "postgres://postgres@127.0.0.1:5432/test"
LEDGERS = ("off", "sqlite", "postgres")


def psql(sql: str) -> str:
    out = subprocess.run(
        ["psql", "-X", "-q", "-t", "-A", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-c", sql],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return out.stdout.strip()


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    p.add_argument("--seconds", type=int, default=3, help="seconds per run (default 3)")
    p.add_argument("--loaded-connections", type=int, default=16, help="connections of the loaded runs")
    p.add_argument("--max-foreign", type=float, default=25.0, help=argparse.SUPPRESS)
    p.add_argument("--max-wait", type=float, default=60.0, help=argparse.SUPPRESS)
    p.add_argument("--bin", default=str(ROOT / "target" / "release" / "cachet"))
    p.add_argument("--json", default=str(ROOT / "target" / "bench-ledger.json"))
    args = p.parse_args(argv)
    args.quick = False
    return args


def measure(bench, bodies, conns: int, rounds: int, secs: int) -> dict:
    """Per case, per path: the p99 of each round, in µs."""
    out: dict = {}
    for case, body in bodies.items():
        for path in bench.ports:  # warm-up, not recorded
            bench.wrk(path, body, 2, 1, 1)
        p99 = collections.defaultdict(list)
        for r in range(rounds):
            bench.quiet()
            order = ["direct", "off"] + [p for p in LEDGERS if p != "off"] + ["off"]
            seen_off = 0
            for path in order:
                result, cpu = bench.wrk(path, body, conns, min(conns, 2), secs)
                if oh.Run(path, "latency", r, result, cpu).errors:
                    raise oh.HarnessError(f"{case} round {r} via {path}: errors {result}")
                name = path
                if path == "off":
                    seen_off += 1
                    name = f"off{seen_off}"
                p99[name].append(result["lat_p99_us"])
            oh.progress(
                f"  {case} c={conns} round {r + 1}: "
                + ", ".join(f"{k} {v[-1] / 1000:.2f} ms" for k, v in p99.items())
            )
        out[case] = dict(p99)
    return out


def metric_sum(port: int, name: str) -> int:
    """The sum of every series of a counter on a proxy's /metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    data = conn.getresponse().read()
    conn.close()
    total = 0.0
    for line in data.decode().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def summarise(p99: dict) -> dict:
    direct = p99["direct"]

    def added(name):
        return [a - d for a, d in zip(p99[name], direct)]

    off1, off2 = added("off1"), added("off2")
    off = [(a + b) / 2 for a, b in zip(off1, off2)]
    spread_us = oh.median([abs(a - b) for a, b in zip(off1, off2)])
    added_off = oh.median(off)
    rows = {"off": {"added_p99_us": added_off, "rounds_us": off}}
    for ledger in LEDGERS[1:]:
        on = added(ledger)
        added_on = oh.median(on)
        diff = added_on - added_off
        allowed = max(0.05 * abs(added_off), spread_us)
        rows[ledger] = {
            "added_p99_us": added_on,
            "rounds_us": on,
            "difference_us": diff,
            "difference_pct": 100.0 * diff / added_off if added_off else None,
            "allowed_us": allowed,
            "pass": abs(diff) <= allowed,
        }
    return {"spread_us": spread_us, "direct_p99_us": oh.median(direct), "ledgers": rows}


def main(argv) -> int:
    args = parse_args(argv)
    cachet = Path(args.bin)
    if not os.access(cachet, os.X_OK):
        raise oh.HarnessError(f"{cachet} not found: cargo build --release")
    tmp = Path(tempfile.mkdtemp(prefix="cachet-bench-ledger."))
    schema = f"cachet_bench_latency_{os.getpid()}"
    procs = oh.Processes()
    try:
        bodies = {}
        for case, stream in (("1k-json", False), ("1k-stream", True)):
            f = tmp / f"{case}.json"
            f.write_bytes(oh.chat_body(oh.BODIES["1k"], stream=stream))
            bodies[case] = f
        psql(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")
        urls = {
            "off": "",
            "sqlite": f"sqlite://{tmp}/cachet.db",
            "postgres": f"{PG}?options=-c%20search_path%3D{schema}",
        }
        sim_port = oh.free_port()
        sim = procs.start(
            "cachet sim", [str(cachet), "sim", "--listen", f"127.0.0.1:{sim_port}"], sim_port,
            tmp / "sim.log",
        )  # fmt: skip
        base = f"http://127.0.0.1:{sim_port}"
        ports = {"direct": sim_port}
        groups = {"sim": [sim.proc.pid]}
        serves = {}
        for ledger, url in urls.items():
            port = oh.free_port()
            env = dict(
                os.environ,
                CACHET_UPSTREAMS__OPENAI__BASE_URL=f"{base}/openai",
                CACHET_LEDGER__URL=url,
                CACHET_LEDGER__FLUSH_INTERVAL="1s",
                CACHET_LOG__LEVEL="warn",
            )
            env.pop("RUST_LOG", None)
            serves[ledger] = procs.start(
                f"cachet serve ({ledger})",
                [str(cachet), "serve", "--listen", f"127.0.0.1:{port}"],
                port, tmp / f"serve-{ledger}.log", env=env, cwd=str(ROOT),
            )  # fmt: skip
            ports[ledger] = port
            groups[ledger] = [serves[ledger].proc.pid]
        print(f"bench-ledger: sim :{sim_port}, " + ", ".join(
            f"{k} :{ports[k]}" for k in LEDGERS) + f"; temp {tmp}", flush=True)

        bench = oh.Bench(args, tmp, ports, groups)
        bench.sent = collections.defaultdict(int)
        results = {}
        for label, conns in (("1 connection", 1), (f"{args.loaded_connections} connections",
                                                    args.loaded_connections)):
            oh.progress(f"{label}: {args.rounds} rounds x {args.seconds} s per path")
            raw = measure(bench, bodies, conns, args.rounds, args.seconds)
            results[label] = {case: summarise(p99) | {"p99_us": p99} for case, p99 in raw.items()}

        # What each proxy recorded, by its own count; then stop them (graceful: the ledger is
        # flushed) and count what each one stored.
        served = {k: metric_sum(ports[k], "cachet_requests_total") for k in LEDGERS}
        dropped = {k: metric_sum(ports[k], "cachet_ledger_dropped_total") for k in LEDGERS}
        procs.stop_all()
        db = sqlite3.connect(tmp / "cachet.db")
        stored = {
            "sqlite": db.execute("SELECT COUNT(*) FROM ledger").fetchone()[0],
            "postgres": int(psql(f"SELECT COUNT(*) FROM {schema}.ledger")),
        }
        db.close()

        lines = ["", "ledger on vs off: p99 added latency (via cachet − direct), median of rounds"]
        ok = True
        for label, cases in results.items():
            for case, s in cases.items():
                lines.append(
                    f"  {label:<15} {case:<9}  direct p99 {s['direct_p99_us'] / 1000:6.2f} ms  "
                    f"added: off {s['ledgers']['off']['added_p99_us']:7.0f} µs  "
                    f"(off-vs-off spread {s['spread_us']:.0f} µs)"
                )
                for ledger in LEDGERS[1:]:
                    row = s["ledgers"][ledger]
                    ok &= row["pass"]
                    pct = row["difference_pct"]
                    lines.append(
                        f"  {'':<15} {'':<9}  {ledger:<8} {row['added_p99_us']:7.0f} µs  "
                        f"difference {row['difference_us']:+6.0f} µs"
                        + (f" ({pct:+.1f}%)" if pct is not None else "")
                        + f"  allowed ±{row['allowed_us']:.0f} µs  "
                        + ("met" if row["pass"] else "MISSED")
                    )
        lines.append("")
        for ledger in LEDGERS[1:]:
            lines.append(
                f"  {ledger}: {served[ledger]} requests recorded (cachet_requests_total), "
                f"{stored[ledger]} records stored, {dropped[ledger]} dropped"
                + ("" if served[ledger] == stored[ledger] else "  MISMATCH")
            )
        print("\n".join(lines))
        doc = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "args": vars(args),
            "results": results,
            "served": served,
            "stored": stored,
            "dropped": dropped,
            "targets_met": ok,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=2))
        print(f"\nbench-ledger: {'targets met' if ok else 'targets MISSED'}; JSON in {args.json}")
        return 0
    finally:
        procs.stop_all()
        try:
            psql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        except (subprocess.CalledProcessError, FileNotFoundError):
            pass


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except oh.HarnessError as e:
        print(f"bench-ledger: {e}", file=sys.stderr)
        sys.exit(1)
