#!/usr/bin/env python3
"""Proxy overhead benchmark: the same requests sent to `cachet sim` directly, through
`cachet serve`, and through nginx as a plain reverse proxy, in one run. Figures, not a test.

Run it as `./scripts/bench-overhead` (which installs wrk and nginx and builds the release binary
first); this file is the orchestration and the report. wrk generates the load (bench/post.lua);
Python only starts processes, checks answers and does arithmetic, never sits in the request path.

Method
  * Cases: an OpenAI chat request of ~1 KB and of ~400 KB (~100k tokens by the simulator's count,
    deterministic text), each as JSON and as a stream (`"stream": true` with no `stream_options`,
    so cachet injects `stream_options.include_usage` and taps the SSE for usage). Via cachet the
    simulator therefore also sends `"usage":null` in every chunk and a final usage chunk, which
    cachet removes: that extra upstream work is part of what cachet costs on streams.
  * Latency: 1 connection, 1 wrk thread (one request in flight, so latency is not queueing). Rounds
    alternate the three paths (direct, cachet, nginx; the order rotates each round) so that drift
    of a shared machine lands on all three alike. Added latency is computed per round as
    via-proxy minus direct of that same round, then the median across rounds is taken.
  * Throughput: many connections (default 64 on 2 wrk threads), closed loop, requests/s; medians
    across alternating rounds. On this 2-core machine the load generator, the proxy and the
    simulator share the cores, so the figures are relative, not absolute capacities.
  * CPU per request of each process (from /proc) during the throughput runs, and the CPU time
    used by processes that are not part of the benchmark (other work on a shared machine), so a
    disturbed run can be told apart. Before each round the run waits (within --max-wait) for the
    machine to be quiet, and a round during which other processes used more than --max-foreign %
    of the machine is discarded and repeated (not in --quick runs).
  * Idle RSS (VmRSS) of `cachet serve` 1 s after startup and 2 s after the last load.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import http.client
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "bench" / "post.lua"
NGINX_TEMPLATE = ROOT / "bench" / "nginx.conf.in"
PATHS = ("direct", "cachet", "nginx")
OPENAI_CHAT = "/openai/v1/chat/completions"
HZ = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1

# Targets, on the 1 KB cases only (issue 2, "Benchmark").
TARGET_ADDED_P50 = 1.2
TARGET_ADDED_P99 = 1.5
TARGET_THROUGHPUT = 0.8
TARGET_IDLE_RSS_KB = 30 * 1024

BODIES = {"1k": 1024, "400k": 400 * 1024}
MODES = ("json", "stream")


class HarnessError(Exception):
    """Something in the harness itself broke: no figures can be trusted."""


# --------------------------------------------------------------------------------------------
# Request bodies


WORDS = (
    "the of and to in is that for it as was with be by on not this are or from at which but have "
    "an they you were her she there been one all we their has would when if so no out up into do "
    "its time more only other new some could these two may first then any like now my such make "
    "over our even most made after also did many before must through back years where much your "
    "way well down should because each just those people how too little state good very world "
    "still own see men work long get here between both life being under never day same another "
    "know while last might us great old year off come since against go came right used take "
    "three cache token prompt context window model reply request upstream proxy stream latency"
).split()


def deterministic_text(nbytes: int, seed: int) -> str:
    """ASCII words from a fixed list, chosen by a 64-bit LCG: same bytes on every run."""
    state = seed
    out: list[str] = []
    size = 0
    while size <= nbytes:  # size counts a space after every word
        state = (state * 6364136223846793005 + 1442695040888963407) & (2**64 - 1)
        word = WORDS[(state >> 33) % len(WORDS)]
        if (state >> 20) % 17 == 0:
            word += "."
        out.append(word)
        size += len(word) + 1
    return " ".join(out)[:nbytes]


def chat_body(total: int, stream: bool) -> bytes:
    """An OpenAI chat request of exactly `total` bytes (compact JSON, as SDKs send it)."""
    body: dict = {
        "model": "gpt-4.1",
        "messages": [
            {"role": "system", "content": "You are a concise assistant. Answer from the document."},
            {"role": "user", "content": ""},
        ],
        "max_tokens": 256,
        "temperature": 0,
    }
    if stream:
        body["stream"] = True
    empty = len(json.dumps(body, separators=(",", ":")).encode())
    body["messages"][1]["content"] = deterministic_text(total - empty, seed=total)
    raw = json.dumps(body, separators=(",", ":")).encode()
    assert len(raw) == total, (len(raw), total)
    return raw


# --------------------------------------------------------------------------------------------
# Processes


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: if this script is killed outright, its servers go with it.
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)
    except Exception:  # noqa: BLE001 - best effort only
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    port: int
    log: Path
    pids: list[int] = field(default_factory=list)

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Processes:
    def __init__(self) -> None:
        self.servers: list[Server] = []

    def start(self, name: str, cmd: list[str], port: int, log: Path, env=None, cwd=None) -> Server:
        fh = open(log, "wb")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            preexec_fn=_die_with_parent,
        )
        srv = Server(name, proc, port, log, [proc.pid])
        self.servers.append(srv)
        wait_listening(srv)
        return srv

    def stop_all(self) -> None:
        for srv in reversed(self.servers):
            if srv.proc.poll() is None:
                srv.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for srv in reversed(self.servers):
            try:
                srv.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                srv.proc.kill()
                srv.proc.wait()
            # nginx workers exit with their master; make sure of it, by pid.
            for pid in srv.pids[1:]:
                try:
                    os.kill(pid, 0)
                except OSError:
                    continue
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        self.servers.clear()


def wait_listening(srv: Server, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if srv.proc.poll() is not None:
            raise HarnessError(
                f"{srv.name} exited with {srv.proc.returncode} at startup:\n{srv.tail()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline:
                raise HarnessError(f"{srv.name} did not listen on {srv.port}:\n{srv.tail()}")
            time.sleep(0.05)
    # If another process held the port, ours exits right away on the failed bind.
    time.sleep(0.3)
    if srv.proc.poll() is not None:
        raise HarnessError(f"{srv.name} exited at startup (port {srv.port} taken?):\n{srv.tail()}")


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def proc_cpu_ticks(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def machine_busy_ticks() -> int:
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice].
    # Interrupt time is left out: loopback traffic's softirq is not charged to any process.
    user, nice, system = parts[0], parts[1], parts[2]
    steal = parts[7] if len(parts) > 7 else 0
    return user + nice + system + steal


def rss_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


# --------------------------------------------------------------------------------------------
# Requests: a sanity check per path and case before any load


def post(port: int, path: str, body: bytes, timeout: float = 30) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(
            "POST",
            path,
            body=body,
            headers={"Content-Type": "application/json", "Authorization": "Bearer sk-bench"},
        )
        res = conn.getresponse()
        data = res.read()
        return res.status, {k.lower(): v for k, v in res.getheaders()}, data
    finally:
        conn.close()


def answer_of(stream: bool, data: bytes) -> dict:
    """The reply text, the prompt token count (JSON) and whether a usage chunk was seen (SSE)."""
    if not stream:
        j = json.loads(data)
        return {
            "text": j["choices"][0]["message"]["content"],
            "prompt_tokens": j["usage"]["prompt_tokens"],
        }
    text, usage_chunks, done = [], 0, False
    for line in data.decode().split("\n"):
        if not line.startswith("data: "):
            continue
        payload = line[len("data: ") :]
        if payload == "[DONE]":
            done = True
            continue
        chunk = json.loads(payload)
        if chunk.get("usage"):
            usage_chunks += 1
        for choice in chunk.get("choices", []):
            text.append(choice.get("delta", {}).get("content") or "")
    return {"text": "".join(text), "usage_chunks": usage_chunks, "done": done}


def sanity(ports: dict[str, int], case: str, body_file: Path, stream: bool) -> dict:
    body = body_file.read_bytes()
    answers = {}
    for path in PATHS:
        status, headers, data = post(ports[path], OPENAI_CHAT, body)
        if status != 200:
            raise HarnessError(
                f"sanity {case} via {path}: HTTP {status}: {data[:300].decode(errors='replace')}"
            )
        if path == "cachet" and "x-cachet-request-id" not in headers:
            raise HarnessError(f"sanity {case}: the cachet port answered without x-cachet-request-id")
        try:
            answers[path] = answer_of(stream, data)
        except (ValueError, KeyError, IndexError) as err:
            raise HarnessError(f"sanity {case} via {path}: unreadable answer ({err})") from err
        if stream and not answers[path]["done"]:
            raise HarnessError(f"sanity {case} via {path}: stream without [DONE]")
        if stream and answers[path]["usage_chunks"]:
            raise HarnessError(
                f"sanity {case} via {path}: a usage chunk reached a client that did not ask for it"
            )
    texts = {a["text"] for a in answers.values()}
    if len(texts) != 1:
        raise HarnessError(f"sanity {case}: the three paths answered differently: {answers}")
    return answers["direct"]


# --------------------------------------------------------------------------------------------
# Load


@dataclass
class Run:
    path: str
    kind: str  # "latency" | "throughput" | "warmup"
    round: int
    result: dict
    cpu: dict  # seconds per process group during the run, plus "foreign"

    @property
    def errors(self) -> int:
        r = self.result
        return (
            r.get("non2xx", 0)
            + r.get("err_connect", 0)
            + r.get("err_read", 0)
            + r.get("err_write", 0)
            + r.get("err_timeout", 0)
            + (1 if r.get("stalled") else 0)
        )


class Bench:
    def __init__(self, args, tmp: Path, ports: dict[str, int], groups: dict[str, list[int]]):
        self.args = args
        self.tmp = tmp
        self.ports = ports
        self.groups = groups  # process-group name → pids whose CPU time is counted
        self.runs: list[Run] = []
        self.discarded: list[Run] = []
        self.repeated = 0
        self.waited = 0.0
        self.wait_budget = float(args.max_wait)
        self.sent = {p: 0 for p in PATHS}  # requests per path, warm-ups and repeats included
        self.log = open(tmp / "wrk.log", "w")  # noqa: SIM115

    def cpu_snapshot(self) -> tuple[float, dict[str, int], int, float]:
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        per = {g: sum(proc_cpu_ticks(p) for p in pids) for g, pids in self.groups.items()}
        return time.monotonic(), per, machine_busy_ticks(), ru.ru_utime + ru.ru_stime

    def wrk(self, path: str, body: Path, conns: int, threads: int, secs: int) -> tuple[dict, dict]:
        url = f"http://127.0.0.1:{self.ports[path]}{OPENAI_CHAT}"
        cmd = [
            "wrk", f"-t{threads}", f"-c{conns}", f"-d{secs}s", "--timeout", "10s",
            "--latency", "-s", str(LUA), url,
        ]  # fmt: skip
        env = dict(os.environ, BENCH_BODY=str(body))
        t0, per0, busy0, kids0 = self.cpu_snapshot()
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        try:
            out, err = proc.communicate(timeout=secs + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            return {"stalled": True, "requests": 0}, {}
        except BaseException:  # interrupted: take wrk down too
            proc.kill()
            proc.wait()
            raise
        t1, per1, busy1, kids1 = self.cpu_snapshot()
        self.log.write(f"$ {' '.join(cmd)}\n{out}{err}\n")
        self.log.flush()
        line = next((ln for ln in out.splitlines() if ln.startswith("BENCH ")), None)
        if proc.returncode != 0 or line is None:
            raise HarnessError(f"wrk failed ({proc.returncode}): {err.strip() or out.strip()}")
        result = json.loads(line[len("BENCH ") :])
        self.sent[path] += result["requests"]
        result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
        cpu = {g: (per1[g] - per0[g]) / HZ for g in per0}
        cpu["wrk"] = kids1 - kids0
        busy = (busy1 - busy0) / HZ
        cpu["foreign"] = max(0.0, busy - sum(cpu.values()))
        cpu["wall"] = t1 - t0
        return result, cpu

    def quiet(self) -> None:
        """Waits (within the run's budget) until other processes leave the machine nearly idle."""
        while self.wait_budget > 0:
            b0, t0 = machine_busy_ticks(), time.monotonic()
            time.sleep(0.5)
            pct = 100.0 * (machine_busy_ticks() - b0) / HZ / ((time.monotonic() - t0) * NCPU)
            if pct <= self.args.max_foreign:
                return
            self.waited += 0.5
            self.wait_budget -= 0.5
        # Budget spent: go on; the report shows how busy the machine was.

    def rounds(self, kind: str, case: str, body: Path, n: int, secs: int, conns: int, threads: int):
        """n rounds of the three paths, in an order that rotates each round. A round during
        which other processes took more than --max-foreign % of the machine is discarded and
        repeated, at most ceil(n/2) times per call (never in a --quick run)."""
        retries = 0 if self.args.quick else (n + 1) // 2
        done = 0
        kept: list[Run] = []
        while done < n:
            self.quiet()
            order = PATHS[done % 3 :] + PATHS[: done % 3]
            triple = []
            for path in order:
                result, cpu = self.wrk(path, body, conns, threads, secs)
                result["case"] = case
                triple.append(Run(path, kind, done, result, cpu))
            worst = max((foreign_pct(r) or 0.0) for r in triple)
            if worst > self.args.max_foreign and retries > 0:
                retries -= 1
                self.repeated += 1
                self.discarded.extend(triple)
                progress(f"  round {done + 1} disturbed ({worst:.0f}% of the machine used by "
                         "other processes): repeated")
                continue
            kept.extend(triple)
            done += 1
        self.runs.extend(kept)
        return kept


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ratio(a, b):
    if a is None or b is None or b <= 0:
        return None
    return a / b


def target(name: str, value, limit: float, higher_is_better: bool = False) -> dict:
    if value is None:
        ok = None
    else:
        ok = value >= limit if higher_is_better else value <= limit
    return {"name": name, "value": value, "limit": limit, "pass": ok}


def run_case(bench: Bench, args, case: str, body: Path) -> dict:
    stream = case.endswith("stream")
    for path in PATHS:  # warm pools and caches; not recorded
        bench.wrk(path, body, 4, 1, 1)
    lat = {p: [] for p in PATHS}
    progress(f"{case}: latency, {args.rounds} rounds x {args.seconds} s per path, 1 connection")
    for run in bench.rounds("latency", case, body, args.rounds, args.seconds, 1, 1):
        lat[run.path].append(run)
    tput = {p: [] for p in PATHS}
    progress(
        f"{case}: throughput, {args.tput_rounds} rounds x {args.tput_seconds} s per path, "
        f"{args.connections} connections on {args.threads} wrk threads"
    )
    for run in bench.rounds(
        "throughput", case, body, args.tput_rounds, args.tput_seconds, args.connections, args.threads
    ):
        tput[run.path].append(run)

    out: dict = {"case": case, "body": case.split("-")[0], "stream": stream, "latency": {}}
    for p in PATHS:
        runs = lat[p]
        out["latency"][p] = {
            "p50_us": median(r.result.get("lat_p50_us") for r in runs),
            "p99_us": median(r.result.get("lat_p99_us") for r in runs),
            "p999_us": median(r.result.get("lat_p999_us") for r in runs),
            "rps": median(r.result.get("rps") for r in runs),
            "requests": sum(r.result.get("requests", 0) for r in runs),
            "errors": sum(r.errors for r in runs),
            "foreign_cpu_pct": median(foreign_pct(r) for r in runs),
            "rounds": [r.result | {"cpu": r.cpu} for r in runs],
        }
    added: dict = {}
    for p in ("cachet", "nginx"):
        added[p] = {}
        for q in ("p50", "p99"):
            per_round = [
                a.result[f"lat_{q}_us"] - d.result[f"lat_{q}_us"]
                for a, d in zip(lat[p], lat["direct"])
                if f"lat_{q}_us" in a.result and f"lat_{q}_us" in d.result
            ]
            added[p][f"{q}_us"] = median(per_round)
            added[p][f"{q}_rounds_us"] = per_round
    out["added"] = added
    out["added_ratio"] = {
        q: ratio(added["cachet"][f"{q}_us"], added["nginx"][f"{q}_us"]) for q in ("p50", "p99")
    }
    out["throughput"] = {}
    for p in PATHS:
        runs = tput[p]
        reqs = sum(r.result.get("requests", 0) for r in runs)
        cpu_us = {}
        for g in list(bench.groups) + ["wrk", "foreign"]:
            total = sum(r.cpu.get(g, 0.0) for r in runs)
            cpu_us[g] = total / reqs * 1e6 if reqs else None
        out["throughput"][p] = {
            "rps": median(r.result.get("rps") for r in runs),
            "p50_us": median(r.result.get("lat_p50_us") for r in runs),
            "p99_us": median(r.result.get("lat_p99_us") for r in runs),
            "requests": reqs,
            "errors": sum(r.errors for r in runs),
            "cpu_us_per_request": cpu_us,
            "foreign_cpu_pct": median(foreign_pct(r) for r in runs),
            "rounds": [r.result | {"cpu": r.cpu} for r in runs],
        }
    out["throughput_ratio"] = ratio(
        out["throughput"]["cachet"]["rps"], out["throughput"]["nginx"]["rps"]
    )
    out["targets"] = []
    if out["body"] == "1k":
        a, n = added["cachet"], added["nginx"]
        out["targets"] = [
            added_target("added p50", a["p50_us"], n["p50_us"], TARGET_ADDED_P50),
            added_target("added p99", a["p99_us"], n["p99_us"], TARGET_ADDED_P99),
            target(
                "throughput", out["throughput_ratio"], TARGET_THROUGHPUT, higher_is_better=True
            ),
        ]
    return out


def added_target(name: str, cachet_us, nginx_us, limit: float) -> dict:
    t = target(name, ratio(cachet_us, nginx_us), limit)
    if t["value"] is None and cachet_us is not None and nginx_us is not None:
        # nginx added nothing measurable: cachet passes only if it added nothing either.
        t["pass"] = cachet_us <= max(nginx_us, 0)
    return t


def foreign_pct(run: Run):
    wall = run.cpu.get("wall")
    if not wall:
        return None
    return 100.0 * run.cpu.get("foreign", 0.0) / (wall * NCPU)


def progress(msg: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# Report


def fmt_us(v) -> str:
    if v is None:
        return "-"
    if abs(v) >= 10_000:
        return f"{v / 1000:.1f}ms"
    return f"{v:.0f}"


def fmt_target(t: dict | None, value=None) -> str:
    """`1.05x PASS` for a targeted figure, `1.05x` for a reported one."""
    if t is None:
        return "n/a" if value is None else f"{value:.2f}x"
    v = "n/a" if t["value"] is None else f"{t['value']:.2f}x"
    return f"{v} {({True: 'PASS', False: 'MISS', None: '?'})[t['pass']]}"


def report(doc: dict) -> str:
    s, m, v = doc["settings"], doc["machine"], doc["versions"]
    out = [
        "",
        f"cachet proxy overhead, {doc['finished_at']}, {v['cachet']}; {v['nginx']}, {v['wrk']}",
        f"{m['cpus']} cores shared by wrk, the proxy and the simulator. cachet serve runs at log "
        "level warn (no per-request info line, so stderr throughput is not measured).",
        "",
        f"Latency at 1 connection, µs: median of {s['latency_rounds']} alternating rounds x "
        f"{s['latency_seconds']} s per path. added = via proxy - direct in the same round, median.",
        f"Targets (1 KB): added p50 <= {TARGET_ADDED_P50}x nginx's, added p99 <= "
        f"{TARGET_ADDED_P99}x nginx's. 400 KB: reported, not targeted.",
    ]
    hdr = (
        f"{'':<12} {'p50 direct':>10} {'cachet':>7} {'nginx':>7} | {'p99 direct':>10} {'cachet':>7} "
        f"{'nginx':>7} | {'added p50 cachet':>16} {'nginx':>6} {'ratio':>10} | "
        f"{'added p99 cachet':>16} {'nginx':>6} {'ratio':>10}"
    )
    out += [hdr, "-" * len(hdr)]
    for c in doc["cases"]:
        L, A = c["latency"], c["added"]
        tg = {t["name"]: t for t in c["targets"]}
        r50 = fmt_target(tg.get("added p50"), c["added_ratio"]["p50"])
        r99 = fmt_target(tg.get("added p99"), c["added_ratio"]["p99"])
        out.append(
            f"{c['case']:<12} {fmt_us(L['direct']['p50_us']):>10} {fmt_us(L['cachet']['p50_us']):>7}"
            f" {fmt_us(L['nginx']['p50_us']):>7} | {fmt_us(L['direct']['p99_us']):>10}"
            f" {fmt_us(L['cachet']['p99_us']):>7} {fmt_us(L['nginx']['p99_us']):>7}"
            f" | {fmt_us(A['cachet']['p50_us']):>16} {fmt_us(A['nginx']['p50_us']):>6} {r50:>10}"
            f" | {fmt_us(A['cachet']['p99_us']):>16} {fmt_us(A['nginx']['p99_us']):>6} {r99:>10}"
        )
    out += [
        "",
        f"Throughput, {s['throughput_connections']} connections on {s['throughput_threads']} wrk "
        f"threads: median requests/s of {s['throughput_rounds']} alternating rounds x "
        f"{s['throughput_seconds']} s per path.",
        f"Target (1 KB): cachet >= {TARGET_THROUGHPUT}x nginx's. CPU µs per request: of the proxy "
        "process (cachet, nginx's workers), of the simulator and of wrk when sent directly.",
    ]
    hdr = (
        f"{'':<12} {'req/s direct':>12} {'cachet':>7} {'nginx':>7} {'cachet/nginx':>13} | "
        f"{'CPU/req cachet':>14} {'nginx':>6} {'sim':>5} {'wrk':>5} | "
        f"{'p99 under load direct':>21} {'cachet':>7} {'nginx':>7}"
    )
    out += [hdr, "-" * len(hdr)]
    for c in doc["cases"]:
        T = c["throughput"]
        tg = {t["name"]: t for t in c["targets"]}
        rt = fmt_target(tg.get("throughput"), c["throughput_ratio"])
        cc, cn = T["cachet"]["cpu_us_per_request"], T["nginx"]["cpu_us_per_request"]
        cd = T["direct"]["cpu_us_per_request"]
        out.append(
            f"{c['case']:<12} {T['direct']['rps'] or 0:>12.0f} {T['cachet']['rps'] or 0:>7.0f} "
            f"{T['nginx']['rps'] or 0:>7.0f} {rt:>13} | {fmt_us(cc.get('cachet')):>14} "
            f"{fmt_us(cn.get('nginx')):>6} {fmt_us(cd.get('sim')):>5} {fmt_us(cd.get('wrk')):>5} | "
            f"{fmt_us(T['direct']['p99_us']):>21} {fmt_us(T['cachet']['p99_us']):>7} "
            f"{fmt_us(T['nginx']['p99_us']):>7}"
        )
    rss = doc["rss"]
    out += [
        "",
        f"Idle RSS of cachet serve: {rss['after_startup_kb'] / 1024:.1f} MB after startup "
        f"{'PASS' if rss['after_startup_kb'] <= TARGET_IDLE_RSS_KB else 'MISS'}, "
        f"{rss['after_run_kb'] / 1024:.1f} MB idle after the run "
        f"{'PASS' if rss['after_run_kb'] <= TARGET_IDLE_RSS_KB else 'MISS'} (target <= 30 MB; "
        f"peak {rss['peak_kb'] / 1024:.1f} MB under load; {rss['requests_served']} requests served, "
        "/metrics not scraped).",
        f"Other work on the machine during kept runs: median {m['foreign_cpu_pct_median']:.1f}%, "
        f"max {m['foreign_cpu_pct_max']:.1f}% of the {m['cpus']} cores; {m['rounds_repeated']} "
        f"disturbed rounds repeated, {m['waited_s']:.0f} s waited for quiet; load average "
        f"{m['loadavg_start'][0]} at start, {m['loadavg_end'][0]} at end.",
    ]
    if doc["errors"]:
        out.append("ERRORS during load (non-2xx, socket errors, timeouts, stalls):")
        out.extend(f"  {e}" for e in doc["errors"])
    else:
        out.append("Errors during load: none (no non-2xx, no socket errors, no timeouts).")
    t = doc["targets_summary"]
    out.append(
        f"Targets: {t['passed']} of {t['total']} met"
        + (f"; missed: {', '.join(t['missed'])}." if t["missed"] else ".")
    )
    out.append(f"JSON: {doc['json_path']}  ({doc['duration_s']:.0f} s)")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# Main


def version_of(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (p.stdout + p.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def git_describe() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return "cachet (unknown commit)"
    return f"cachet {head}{' + uncommitted changes' if dirty else ''}"


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(
        prog="scripts/bench-overhead",
        description="Latency added and throughput of cachet serve against direct calls to cachet "
        "sim and against nginx as a plain reverse proxy. Figures, not a test: exits 0 whether "
        "targets are met or not, non-zero only when the harness itself broke.",
    )
    p.add_argument("--quick", action="store_true", help="~1-minute smoke run (fewer, shorter rounds)")
    p.add_argument("--rounds", type=int, help="latency rounds per path (default 5, quick 2)")
    p.add_argument("--seconds", type=int, help="seconds per latency round (default 3, quick 1)")
    p.add_argument("--tput-rounds", type=int, help="throughput rounds per path (default 3, quick 1)")
    p.add_argument("--tput-seconds", type=int, help="seconds per throughput round (default 5, quick 1)")
    p.add_argument("--connections", type=int, default=64, help="throughput connections (default 64)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads for throughput (default 2)")
    p.add_argument(
        "--cases", default="1k-json,1k-stream,400k-json,400k-stream",
        help="comma-separated subset of 1k-json,1k-stream,400k-json,400k-stream",
    )  # fmt: skip
    p.add_argument(
        "--max-foreign", type=float, default=10.0,
        help="a round in which other processes used more than this %% of the machine is repeated "
        "(default 10)",
    )  # fmt: skip
    p.add_argument(
        "--max-wait", type=float,
        help="seconds the run may wait in all for other work on the machine to calm down "
        "(default 120, quick 10)",
    )  # fmt: skip
    p.add_argument("--bin", default=str(ROOT / "target" / "release" / "cachet"), help="cachet binary")
    p.add_argument("--json", default=str(ROOT / "target" / "bench-overhead.json"), help="JSON output")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, bodies)")
    args = p.parse_args(argv)
    defaults = (2, 1, 1, 1) if args.quick else (5, 3, 3, 5)
    for name, d in zip(("rounds", "seconds", "tput_rounds", "tput_seconds"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, d)
    if args.max_wait is None:
        args.max_wait = 10.0 if args.quick else 120.0
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for c in args.cases:
        body, _, mode = c.partition("-")
        if body not in BODIES or mode not in MODES:
            p.error(f"unknown case {c!r}")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise HarnessError(f"{tool} not found (scripts/bench-overhead installs it)")
    cachet = Path(args.bin)
    if not os.access(cachet, os.X_OK):
        raise HarnessError(f"{cachet} not found: cargo build --release")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"

    started = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="cachet-bench."))
    procs = Processes()
    try:
        # Bodies, generated afresh each run (deterministic bytes).
        bodies: dict[str, Path] = {}
        for case in args.cases:
            size, mode = case.split("-")
            f = tmp / f"{case}.json"
            f.write_bytes(chat_body(BODIES[size], stream=(mode == "stream")))
            bodies[case] = f

        sim_port, proxy_port, nginx_port = free_port(), free_port(), free_port()
        while len({sim_port, proxy_port, nginx_port}) < 3:
            proxy_port, nginx_port = free_port(), free_port()
        sim = procs.start(
            "cachet sim", [str(cachet), "sim", "--listen", f"127.0.0.1:{sim_port}"], sim_port,
            tmp / "sim.log",
        )  # fmt: skip
        base = f"http://127.0.0.1:{sim_port}"
        env = dict(
            os.environ,
            CACHET_UPSTREAMS__OPENAI__BASE_URL=f"{base}/openai",
            CACHET_UPSTREAMS__ANTHROPIC__BASE_URL=f"{base}/anthropic",
            CACHET_UPSTREAMS__GEMINI__BASE_URL=f"{base}/gemini",
            # warn, not info: the per-request log line would otherwise measure stderr throughput.
            CACHET_LOG__LEVEL="warn",
        )
        env.pop("RUST_LOG", None)  # it would override the level
        proxy = procs.start(
            "cachet serve", [str(cachet), "serve", "--listen", f"127.0.0.1:{proxy_port}"],
            proxy_port, tmp / "serve.log", env=env, cwd=str(ROOT),
        )  # fmt: skip

        ngx_dir = tmp / "nginx"
        ngx_dir.mkdir()
        conf = NGINX_TEMPLATE.read_text()
        user = "user root;" if os.geteuid() == 0 else "# not root: workers run as this user"
        for key, value in {
            "@USER@": user,
            "@PREFIX@": str(ngx_dir),
            "@SIM_PORT@": str(sim_port),
            "@LISTEN_PORT@": str(nginx_port),
        }.items():
            conf = conf.replace(key, value)
        (ngx_dir / "nginx.conf").write_text(conf)
        ngx = procs.start(
            "nginx",
            [nginx, "-p", str(ngx_dir), "-c", str(ngx_dir / "nginx.conf"),
             "-e", str(ngx_dir / "error.log")],
            nginx_port, ngx_dir / "stderr.log",
        )  # fmt: skip
        ngx.pids += children_of(ngx.proc.pid)

        time.sleep(1.0)
        rss_start = rss_kb(proxy.proc.pid)
        ports = {"direct": sim_port, "cachet": proxy_port, "nginx": nginx_port}

        print(
            f"bench-overhead: sim :{sim_port}, cachet serve :{proxy_port} (log level warn), "
            f"nginx :{nginx_port}; temp {tmp}",
            flush=True,
        )
        body_info = {}
        for case in args.cases:
            ans = sanity(ports, case, bodies[case], stream=case.endswith("stream"))
            size = bodies[case].stat().st_size
            body_info[case] = {"bytes": size, **{k: v for k, v in ans.items() if k != "text"}}
            extra = f", {ans['prompt_tokens']} prompt tokens" if "prompt_tokens" in ans else ""
            print(f"  sanity {case}: {size} bytes{extra}; same answer via all three paths")

        groups = {"sim": [sim.proc.pid], "cachet": [proxy.proc.pid], "nginx": ngx.pids}
        bench = Bench(args, tmp, ports, groups)
        loadavg_start = os.getloadavg()
        cases = [run_case(bench, args, case, bodies[case]) for case in args.cases]
        loadavg_end = os.getloadavg()

        time.sleep(2.0)
        rss_end = rss_kb(proxy.proc.pid)
        for srv in procs.servers:
            if srv.proc.poll() is not None:
                raise HarnessError(f"{srv.name} died during the run:\n{srv.tail()}")

        errors = []
        for run in bench.runs:
            if run.errors:
                r = run.result
                errors.append(
                    f"{r.get('case')} {run.kind} round {run.round} via {run.path}: "
                    + ("STALLED (wrk did not finish) " if r.get("stalled") else "")
                    + f"non2xx={r.get('non2xx', 0)} connect={r.get('err_connect', 0)} "
                    f"read={r.get('err_read', 0)} write={r.get('err_write', 0)} "
                    f"timeout={r.get('err_timeout', 0)} of {r.get('requests', 0)} requests"
                )
        serve_log = proxy.tail(10)
        if serve_log:
            errors.append("cachet serve logged (warn level):\n    " + serve_log.replace("\n", "\n    "))

        foreign = [x for x in (foreign_pct(r) for r in bench.runs) if x is not None]
        all_targets = [t for c in cases for t in c["targets"]]
        rss_ok = (
            rss_start["VmRSS"] <= TARGET_IDLE_RSS_KB and rss_end["VmRSS"] <= TARGET_IDLE_RSS_KB
        )
        missed = [
            f"{c['case']} {t['name']}" for c in cases for t in c["targets"] if t["pass"] is not True
        ]
        if rss_start["VmRSS"] > TARGET_IDLE_RSS_KB:
            missed.append("idle RSS after startup")
        if rss_end["VmRSS"] > TARGET_IDLE_RSS_KB:
            missed.append("idle RSS after the run")
        doc = {
            "tool": "scripts/bench-overhead",
            "command": "./scripts/bench-overhead " + " ".join(argv),
            "started_at": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(
                timespec="seconds"
            ),
            "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "duration_s": round(time.time() - started, 1),
            "versions": {
                "cachet": git_describe(),
                "wrk": version_of(["wrk", "--version"]).split(" [")[0],
                "nginx": version_of([nginx, "-v"]).replace("nginx version: ", ""),
                "kernel": platform.release(),
            },
            "machine": {
                "cpus": NCPU,
                "loadavg_start": [round(x, 2) for x in loadavg_start],
                "loadavg_end": [round(x, 2) for x in loadavg_end],
                "foreign_cpu_pct_median": statistics.median(foreign) if foreign else 0.0,
                "foreign_cpu_pct_max": max(foreign) if foreign else 0.0,
                "rounds_repeated": bench.repeated,
                "waited_s": bench.waited,
                "discarded_runs": [
                    {"case": r.result.get("case"), "kind": r.kind, "path": r.path,
                     "foreign_cpu_pct": foreign_pct(r)}
                    for r in bench.discarded
                ],  # fmt: skip
            },
            "settings": {
                "latency_rounds": args.rounds,
                "latency_seconds": args.seconds,
                "latency_connections": 1,
                "throughput_rounds": args.tput_rounds,
                "throughput_seconds": args.tput_seconds,
                "throughput_connections": args.connections,
                "throughput_threads": args.threads,
                "cachet_log_level": "warn",
                "path": OPENAI_CHAT,
            },
            "targets_note": "1 KB cases: added p50 <= 1.2x nginx's, added p99 <= 1.5x nginx's, "
            "throughput >= 0.8x nginx's; idle RSS <= 30 MB. 400 KB cases reported, not targeted.",
            "cachet_env": {k: v for k, v in env.items() if k.startswith("CACHET_")},
            "bodies": body_info,
            "cases": cases,
            "rss": {
                "after_startup_kb": rss_start["VmRSS"],
                "after_run_kb": rss_end["VmRSS"],
                "peak_kb": rss_end.get("VmHWM"),
                "requests_served": bench.sent["cachet"],
                "note": "/metrics is not scraped during the run",
                "target_kb": TARGET_IDLE_RSS_KB,
                "pass": rss_ok,
            },
            "errors": errors,
            "targets_summary": {
                "total": len(all_targets) + 2,
                "passed": len(all_targets) + 2 - len(missed),
                "missed": missed,
            },
            "json_path": args.json,
            "wrk_log": str(tmp / "wrk.log") if args.keep else "(temporary, use --keep)",
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        print(report(doc))
        return 0
    finally:
        procs.stop_all()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except HarnessError as err:
        print(f"bench-overhead: harness error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("bench-overhead: interrupted", file=sys.stderr)
        sys.exit(130)
