#!/usr/bin/env python3
"""Helper of bench/run.sh (Python 3.11, standard library only).

run.sh owns the processes and the wrk runs; this file owns everything that parses or talks a protocol:

  free-ports N                      print N distinct free loopback ports
  mc-gets PORT[,PORT...]            print the sum of memcached's cmd_get over those servers
  mc-set PORT KEY URL               fetch URL and store its body in memcached under KEY (for nginx memcached_pass)
  prepare SCENARIO BASE_URL LUA [--server NAME]
                                    warm a server up for a scenario, check its answers, write the wrk Lua script;
                                    prints one line of notes; exit 0 = run it, 3 = scenario not applicable
  row ...                           parse one wrk output and append a row to raw.csv
  ttfb ...                          time to first byte of N sequential misses (a new URL each) into ttfb.csv
  tree-jiffies PID                  print the CPU jiffies used so far by every live descendant of PID
  summary RUN_DIR [--keep-disturbed]  write RUN_DIR/summary.md from raw.csv, meta.env, notes.tsv, unavailable.tsv
  scenarios                         print the scenario names
"""

from __future__ import annotations

import argparse
import csv
import http.client
import os
import re
import secrets
import socket
import statistics
import sys
import time
import urllib.parse
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Scenario:
    """What one wrk scenario requests and what a correct answer looks like."""

    path: str
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200
    # Exact body length, or a lower bound for generated JSON whose length is "about n".
    length: int | None = None
    min_length: int | None = None
    # Content-Encodings the answer may carry; empty = it must be identity.
    encodings: tuple[str, ...] = ()
    # Every request a URL never asked before (a query counter), so every request is a miss.
    distinct: bool = False


# The 304 scenario's If-None-Match is filled in from the ETag the server itself returns on a warm-up request.
# The order is the run order within a round: the distinct-URL scenario fills caches, so it runs last (and the
# next round's warm-up refills whatever it evicted).
SCENARIOS: dict[str, Scenario] = {
    "hit-2k": Scenario("/bytes/2048", length=2048),
    "hit-64k": Scenario("/bytes/65536", length=65536),
    "304": Scenario("/bytes/2048", status=304, length=0),
    "json-gzip": Scenario("/json/65536", {"Accept-Encoding": "gzip"}, encodings=("gzip",)),
    "json-identity": Scenario("/json/65536"),
    "hit-8m": Scenario("/json/8388608", min_length=8_300_000),
    "miss-2k": Scenario("/json/2048", {"Accept-Encoding": "gzip, br"}, encodings=("gzip", "br"), distinct=True),
}
SCENARIO_ORDER = list(SCENARIOS)
# The ceiling stand-in serves two fixed paths only; demo-origin serves the same bytes under them (`/b2k.json` is
# `/bytes/2048`), so its 304, hit-2k and hit-64k rows move the same bodies as everyone else's.
SERVER_PATHS: dict[str, dict[str, str]] = {"limit": {"/bytes/2048": "/b2k.json", "/bytes/65536": "/b64k.json"}}
PEERS = ["limit", "varnish", "nginx-proxy-cache", "nginx-memcached"]
# Peers whose per-round ratios are listed beside the medians: the targets of issues 16 and 18 are set against them.
ROUND_RATIO_PEERS = ["limit", "nginx-proxy-cache", "varnish"]
TTFB_FIELDS = ["round", "server", "request", "status", "first_byte_ms", "first_body_byte_ms", "total_ms",
               "body_bytes", "background_busy_pct", "note"]
WARMUP_REQUESTS = 5
NOT_AVAILABLE = "not available"
# Share of the machine's CPU that others may use during a run before the summary flags it.
FOREIGN_LIMIT_PCT = 5.0
RAW_FIELDS = [
    "round", "server", "scenario", "connections", "rps", "p50_ms", "p99_ms", "cpu_us_per_req", "gets_per_req",
    "errors", "requests", "non_2xx_3xx", "socket_errors", "duration_s", "background_busy_pct", "foreign_cpu_pct",
    "note",
]
# Headers that tell whether a response came from a cache; recorded in the notes so a reader can see hits.
CACHE_HEADERS = ["x-cache", "x-cache-status", "cache-status", "x-varnish", "etag", "content-encoding"]


# === small protocol helpers ===


def free_ports(count: int) -> list[int]:
    # All sockets stay open until every port is chosen, so the ports are distinct.
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def mc_command(port: int, payload: bytes, terminator: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        data = b""
        while not data.endswith(terminator):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def mc_gets(ports: list[int]) -> int:
    total = 0
    for port in ports:
        stats = mc_command(port, b"stats\r\n", b"END\r\n").decode()
        match = re.search(r"^STAT cmd_get (\d+)\r?$", stats, re.M)
        if not match:
            raise SystemExit(f"memcached on port {port} reported no cmd_get")
        total += int(match.group(1))
    return total


def fetch(url: str, headers: dict[str, str], conn: http.client.HTTPConnection | None = None):
    parts = urllib.parse.urlsplit(url)
    own = conn is None
    if own:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("GET", target, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        if own:
            conn.close()


def mc_set(port: int, key: str, url: str) -> None:
    status, _, body = fetch(url, {})
    if status != 200:
        raise SystemExit(f"mc-set: {url} answered {status}, expected 200")
    reply = mc_command(port, f"set {key} 0 0 {len(body)}\r\n".encode() + body + b"\r\n", b"\r\n")
    if reply != b"STORED\r\n":
        raise SystemExit(f"mc-set: memcached on port {port} answered {reply!r} for {key}")
    got = mc_command(port, f"get {key}\r\n".encode(), b"END\r\n")
    if body not in got:
        raise SystemExit(f"mc-set: memcached on port {port} did not return what was stored for {key}")


def tree_jiffies(root: int) -> int:
    """utime + stime of every live descendant of root (threads included), leaving out this helper and its parent."""
    parent: dict[int, int] = {}
    cpu: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        # After "pid (comm)": state ppid ... utime is field 14 and stime 15 of the full line (1-based).
        parent[int(entry)] = int(fields[1])
        cpu[int(entry)] = int(fields[11]) + int(fields[12])
    skip = {os.getpid(), os.getppid()}
    total = 0
    for pid in cpu:
        node = pid
        while node > 1 and node != root:
            node = parent.get(node, 0)
        if node == root and pid != root and pid not in skip:
            total += cpu[pid]
    return total


# === prepare: warm-up, checks, Lua script ===


def lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


LUA_DONE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH-RESULT requests=%.0f duration_us=%.0f bytes=%.0f connect=%.0f read=%.0f write=%.0f status=%.0f timeout=%.0f p50_us=%.0f p99_us=%.0f\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


# Each wrk thread numbers its own requests; the token (new per prepare) and BENCH_PHASE (set by run.sh to tell the
# warm-up from the measured run) keep every URL of the whole run distinct.
LUA_DISTINCT = r"""
local token = TOKEN .. (os.getenv("BENCH_PHASE") or "")
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end
local prefix, counter
function init(args)
  prefix = wrk.path .. "?miss=" .. token .. "-" .. tostring(thread_id or 0) .. "-"
  counter = 0
end
function request()
  counter = counter + 1
  return wrk.format(nil, prefix .. counter)
end
"""


def prepare(scenario: str, base_url: str, lua_path: str, server: str = "") -> int:
    spec = SCENARIOS[scenario]
    path = SERVER_PATHS.get(server, {}).get(spec.path, spec.path)
    headers = dict(spec.headers)
    url = base_url.rstrip("/") + path
    token = secrets.token_hex(4)
    notes: list[str] = []
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        if scenario == "304":
            status, resp_headers, _ = fetch(url, {}, conn)
            etag = resp_headers.get("etag")
            if status != 200 or not etag:
                print(f"not applicable: warm-up GET answered {status} with ETag {etag!r}")
                return 3
            headers["If-None-Match"] = etag
        status = 0
        resp_headers: dict[str, str] = {}
        body = b""
        for i in range(WARMUP_REQUESTS):
            # A distinct-URL scenario warms up on URLs of its own: the answers checked are misses, like the run's.
            target = f"{url}?miss={token}-warm-{i}" if spec.distinct else url
            status, resp_headers, body = fetch(target, headers, conn)
    except (OSError, http.client.HTTPException) as error:
        print(f"not applicable: warm-up failed: {error}")
        return 3
    finally:
        conn.close()

    if status != spec.status:
        notes.append(f"CHECK FAILED: answered {status}, expected {spec.status}")
    encoding = resp_headers.get("content-encoding", "")
    if spec.length is not None and status == spec.status and len(body) != spec.length:
        notes.append(f"CHECK FAILED: body {len(body)} bytes, expected {spec.length}")
    if spec.min_length is not None and status == spec.status and not encoding and len(body) < spec.min_length:
        notes.append(f"CHECK FAILED: body {len(body)} bytes, expected at least {spec.min_length}")
    if spec.encodings and encoding not in spec.encodings:
        notes.append(f"not compressed (no Content-Encoding: {' or '.join(spec.encodings)})")
    if not spec.encodings and encoding:
        notes.append(f"CHECK FAILED: Content-Encoding {encoding} without Accept-Encoding")
    if scenario.startswith("json") or scenario.startswith("miss") or scenario == "hit-8m":
        notes.append(f"body {len(body)} B{' ' + encoding if encoding else ''}")
    if path != spec.path:
        notes.append(f"path {path}")
    seen = []
    for name in CACHE_HEADERS:
        value = resp_headers.get(name)
        if value is None:
            continue
        if name == "etag" and spec.distinct:
            continue  # a new one per URL: it would make every round's note differ
        if name == "x-varnish":
            # Two transaction ids mean the object came from the cache; one means a fetch from the backend.
            value = "hit" if len(value.split()) == 2 else "miss"
        elif name == "age":
            continue
        seen.append(f"{name}: {normalize_note(value)}")
    if seen:
        notes.append("; ".join(seen))

    lines = [f"-- generated by bench/harness.py: scenario {scenario}, {url}", f"wrk.path = {lua_string(path)}"]
    for name, value in headers.items():
        lines.append(f"wrk.headers[{lua_string(name)}] = {lua_string(value)}")
    if spec.distinct:
        lines.append(LUA_DISTINCT.replace("TOKEN", lua_string(token)))
    with open(lua_path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n" + LUA_DONE)
    print(" | ".join(notes))
    return 0


# === row: one wrk run -> raw.csv ===


def parse_wrk(text: str) -> dict[str, float] | None:
    match = re.search(r"^BENCH-RESULT (.*)$", text, re.M)
    if not match:
        return None
    return {k: float(v) for k, v in (pair.split("=") for pair in match.group(1).split())}


def row(args: argparse.Namespace) -> None:
    record = {k: "" for k in RAW_FIELDS}
    record.update(round=args.round, server=args.server, scenario=args.scenario, connections=args.connections,
                  note=args.note, background_busy_pct=args.background_pct)
    if args.unavailable:
        record["note"] = NOT_AVAILABLE
    elif args.skipped is not None:
        record["note"] = args.skipped
        # A warm-up that could not even connect is an error; a scenario the server cannot do (no ETag) is not.
        record["errors"] = "" if args.skipped.startswith("not applicable: warm-up GET answered") else "warm-up-failed"
    elif args.wrk_out is None:
        raise SystemExit("row: pass --wrk-out or --unavailable")
    else:
        with open(args.wrk_out, encoding="utf-8", errors="replace") as f:
            result = parse_wrk(f.read())
        if result is None:
            record["note"] = "; ".join(x for x in [args.note, "wrk produced no result"] if x)
            record["errors"] = "wrk-failed"
        else:
            fill_measurement(record, result, args)
    append_row(args.raw, record)
    print(f"  {args.server:<18} {args.scenario:<14} c={args.connections:<4} rps={record['rps'] or '-':>7} "
          f"p50={record['p50_ms'] or '-'}ms p99={record['p99_ms'] or '-'}ms cpu/req={record['cpu_us_per_req'] or '-'}us "
          f"gets/req={record['gets_per_req'] or '-'} errors={record['errors'] or 0} {record['note']}")


def fill_measurement(record: dict[str, str], result: dict[str, float], args: argparse.Namespace) -> None:
    duration = result["duration_us"] / 1e6
    socket_errors = int(result["connect"] + result["read"] + result["write"] + result["timeout"])
    non_ok = int(result["status"])
    requests = int(result["requests"])
    # Only 2xx/3xx answers count as throughput: a server answering errors quickly must not look fast.
    ok = max(requests - non_ok, 0)
    record.update(
        rps=f"{ok / duration:.0f}",
        p50_ms=f"{result['p50_us'] / 1000:.3f}",
        p99_ms=f"{result['p99_us'] / 1000:.3f}",
        errors=str(non_ok + socket_errors),
        requests=str(requests),
        non_2xx_3xx=str(non_ok),
        socket_errors=str(socket_errors),
        duration_s=f"{duration:.2f}",
    )
    if args.foreign_jiffies is not None and args.nproc:
        # Machine CPU not used by this harness's processes (servers, memcached, wrk) nor by interrupts: another
        # process, or the hypervisor's steal, competing with the measurement.
        foreign = max(args.foreign_jiffies, 0) / args.clk_tck
        record["foreign_cpu_pct"] = f"{100 * foreign / (duration * args.nproc):.1f}"
    if ok:
        cpu_seconds = args.busy_jiffies / args.clk_tck
        record["cpu_us_per_req"] = f"{cpu_seconds * 1e6 / ok:.1f}"
        if args.gets != "":
            record["gets_per_req"] = f"{int(args.gets) / ok:.3f}"


def append_row(raw: str, record: dict[str, str]) -> None:
    new_file = not os.path.exists(raw)
    with open(raw, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=RAW_FIELDS)
        if new_file:
            writer.writeheader()
        writer.writerow(record)


# === ttfb: time to the first byte of a miss ===


def time_one(host: str, port: int, target: str, timeout: float) -> tuple[int, float, float, float, int]:
    """One GET on a new connection: (status, ms to the first response byte, ms to the first body byte, ms to the
    end, body bytes). The clock starts before connecting, as curl's time_starttransfer does."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        start = time.perf_counter()
        conn.connect()
        conn.request("GET", target, headers={"Connection": "close"})
        # Peeking leaves the byte for the parser: this is when the status line's first byte arrived.
        assert conn.sock is not None
        conn.sock.recv(1, socket.MSG_PEEK)
        first = time.perf_counter()
        resp = conn.getresponse()
        head = resp.read(1)
        first_body = time.perf_counter()
        rest = resp.read()
        end = time.perf_counter()
        return resp.status, (first - start) * 1e3, (first_body - start) * 1e3, (end - start) * 1e3, len(head) + len(rest)
    finally:
        conn.close()


def ttfb(args: argparse.Namespace) -> None:
    parts = urllib.parse.urlsplit(args.url)
    expected = None
    if args.expect_from:
        status, _, body = fetch(args.expect_from, {})
        expected = len(body) if status == 200 else None
    token = secrets.token_hex(4)
    new_file = not os.path.exists(args.csv)
    firsts = []
    with open(args.csv, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=TTFB_FIELDS)
        if new_file:
            writer.writeheader()
        for i in range(args.requests):
            # A URL no one asked before, so each request is a miss (the origin ignores the extra parameter).
            target = f"{args.path}{'&' if '?' in args.path else '?'}miss={token}-{i}"
            record = {k: "" for k in TTFB_FIELDS}
            record.update(round=args.round, server=args.server, request=i + 1,
                          background_busy_pct=args.background_pct)
            try:
                status, first, first_body, total, size = time_one(parts.hostname, parts.port, target, args.timeout)
                record.update(status=status, first_byte_ms=f"{first:.3f}", first_body_byte_ms=f"{first_body:.3f}",
                              total_ms=f"{total:.1f}", body_bytes=size)
                if status != 200:
                    record["note"] = f"answered {status}"
                elif expected is not None and size != expected:
                    record["note"] = f"body {size} bytes, expected {expected}"
                else:
                    firsts.append(first)
            except (OSError, http.client.HTTPException) as error:
                record["note"] = f"failed: {error}"
            writer.writerow(record)
    med = f"{statistics.median(firsts):.2f}" if firsts else "-"
    print(f"  {args.server:<18} {'miss-ttfb':<14} {len(firsts)}/{args.requests} good, median first byte {med} ms")


# === summary ===


def read_meta(path: str) -> dict[str, str]:
    meta: dict[str, str] = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if "=" in line:
                    key, value = line.rstrip("\n").split("=", 1)
                    meta[key] = value
    return meta


def normalize_note(text: str) -> str:
    # Remaining-lifetime parameters change from round to round; without them equal notes merge into one.
    return re.sub(r";\s*(ttl|age)=\d+", "", text)


def read_tsv(path: str) -> list[list[str]]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def fnum(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def p90(values: list[float]) -> float | None:
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def server_order(names: list[str]) -> list[str]:
    fixed = ["origin"] + PEERS
    etagds = sorted(n for n in names if n.startswith("etagd"))
    rest = [n for n in names if n not in fixed and n not in etagds]
    return ["origin"] * ("origin" in names) + etagds + [p for p in PEERS if p in names] + rest


def is_disturbed(r: dict[str, str], quiet_limit: float) -> bool:
    return ((fnum(r.get("background_busy_pct", "")) or 0.0) > quiet_limit
            or (fnum(r.get("foreign_cpu_pct", "")) or 0.0) > FOREIGN_LIMIT_PCT)


def summary(run_dir: str, keep_disturbed: bool = False) -> None:
    meta = read_meta(os.path.join(run_dir, "meta.env"))
    quiet_limit = fnum(meta.get("quiet_pct", "")) or 10.0
    rows: list[dict[str, str]] = []
    # A run of miss-ttfb alone writes ttfb.csv and no raw.csv.
    if os.path.exists(os.path.join(run_dir, "raw.csv")):
        with open(os.path.join(run_dir, "raw.csv"), newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    notes: dict[tuple[str, str], list[str]] = defaultdict(list)
    for fields in read_tsv(os.path.join(run_dir, "notes.tsv")):
        text = normalize_note(fields[2]) if len(fields) >= 3 else ""
        if text and text not in notes[(fields[0], fields[1])]:
            notes[(fields[0], fields[1])].append(text)
    unavailable = {fields[0]: fields[1] if len(fields) > 1 else "" for fields in read_tsv(os.path.join(run_dir, "unavailable.tsv"))}

    groups: dict[tuple[str, str, int], list[dict[str, str]]] = defaultdict(list)
    not_run: set[tuple[str, str, int]] = set()
    for r in rows:
        if r["note"] == NOT_AVAILABLE:
            not_run.add((r["server"], r["scenario"], int(r["connections"])))
            continue
        groups[(r["server"], r["scenario"], int(r["connections"]))].append(r)
    servers = server_order(sorted({r["server"] for r in rows} | set(unavailable)))
    connections = sorted({int(r["connections"]) for r in rows})
    scenarios = [s for s in SCENARIO_ORDER if any(r["scenario"] == s for r in rows)]

    # A round that another process disturbed is left out of a cell's medians as long as a clean round remains;
    # the Quiet check section lists every such round, and the rounds column says how many were used.
    used: dict[tuple[str, str, int], list[dict[str, str]]] = {}
    for key, group in groups.items():
        clean = [r for r in group if not is_disturbed(r, quiet_limit)]
        used[key] = group if keep_disturbed or not clean else clean

    def med(key, field):
        return median([v for v in (fnum(r[field]) for r in used.get(key, [])) if v is not None])

    out: list[str] = []
    w = out.append
    w(f"# Benchmark run {os.path.basename(os.path.normpath(run_dir))}")
    w("")
    w(f"Command: `{meta.get('command', '?')}`  ")
    w(f"Commit: `{meta.get('commit', '?')}`  ")
    w(f"Started: {meta.get('started', '?')}, finished: {meta.get('finished', '?')}  ")
    w(f"Machine: {meta.get('nproc', '?')} CPUs ({meta.get('cpu_model', '?')}), kernel {meta.get('kernel', '?')}, "
      f"{meta.get('mem', '?')}  ")
    w(f"Versions: {meta.get('versions', '?')}  ")
    w(f"Load: wrk -t{meta.get('threads', '?')}, {meta.get('duration', '?')} s per run after a "
      f"{meta.get('warmup', '?')} s warm-up, {meta.get('rounds', '?')} rounds with the server order rotated each round; "
      f"every process (servers, memcached, wrk) on the same machine.  ")
    w(f"Settings: {meta.get('settings', '')}")
    w("")
    w("Each figure is the median over rounds (rounds disturbed by another process are left out while a clean one "
      "remains; `rounds` says how many were used). rps counts 2xx/3xx answers only. CPU/req is whole-machine busy CPU "
      "(all processes, /proc/stat) during the wrk run divided by those answers. gets/req is memcached `cmd_get` "
      "(delta over the run) per answer, for servers that use memcached. In `miss-2k` every request is a new URL, so "
      "req/s is misses/s and CPU us/req is CPU per miss.")
    w("")
    if unavailable:
        w("## Not available in this run")
        w("")
        for name, reason in unavailable.items():
            w(f"- **{name}**: not available ({reason})")
        w("")

    flagged: list[str] = []
    for c in connections:
        w(f"## Medians at {c} connections")
        w("")
        w("| scenario | server | req/s | req/s range | p50 ms | p99 ms | CPU us/req | gets/req | errors | rounds | notes |")
        w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for scenario in scenarios:
            for server in servers:
                key = (server, scenario, c)
                if key in not_run and key not in groups:
                    w(f"| {scenario} | {server} | not available | | | | | | | | |")
                    continue
                if key not in groups:
                    continue
                group = groups[key]
                rps_values = [v for v in (fnum(r["rps"]) for r in used[key]) if v is not None]
                errors = sum(int(r["errors"]) for r in group if r["errors"].isdigit())
                failed = sum(1 for r in group if r["errors"] in ("wrk-failed", "warm-up-failed"))
                requests = sum(int(r["requests"]) for r in group if r["requests"].isdigit())
                err_cell = str(errors)
                if errors or failed:
                    err_cell = f"**{errors}**" + (f" (+{failed} failed runs)" if failed else "")
                    flagged.append(f"{server} / {scenario} / c={c}: {errors} errors in {requests} requests"
                                   + (f", {failed} wrk runs failed" if failed else ""))
                rng = f"{fmt(min(rps_values))}-{fmt(max(rps_values))}" if rps_values else "-"
                row_notes = [n for r in group for n in [r["note"]] if n]
                note = "; ".join(dict.fromkeys(notes.get((server, scenario), []) + row_notes))
                w(f"| {scenario} | {server} | {fmt(med(key, 'rps'))} | {rng} | {fmt(med(key, 'p50_ms'), 3)} | "
                  f"{fmt(med(key, 'p99_ms'), 3)} | {fmt(med(key, 'cpu_us_per_req'), 1)} | "
                  f"{fmt(med(key, 'gets_per_req'), 3)} | {err_cell} | {len(used[key])}/{len(group)} | "
                  f"{note.replace('|', '/')} |")
        w("")
        round_ratio_tables(w, groups, servers, scenarios, c, None if keep_disturbed else quiet_limit)

    if len(connections) > 1:
        w("## Scaling with connections (median req/s; p99 ms in brackets)")
        w("")
        w("| scenario | server | " + " | ".join(f"c={c}" for c in connections) + " |")
        w("|---|---|" + "---:|" * len(connections))
        for scenario in scenarios:
            for server in servers:
                if not any((server, scenario, c) in groups for c in connections):
                    continue
                cells = [f"{fmt(med((server, scenario, c), 'rps'))} [{fmt(med((server, scenario, c), 'p99_ms'), 2)}]"
                         if (server, scenario, c) in groups else "-" for c in connections]
                w(f"| {scenario} | {server} | " + " | ".join(cells) + " |")
        w("")

    w("## Errors")
    w("")
    if flagged:
        w("These cells had non-2xx/3xx answers or socket errors; their req/s counts good answers only, "
          "and their ratios below are marked with `!`:")
        w("")
        for line in flagged:
            w(f"- {line}")
    else:
        w("None: every wrk run finished with zero non-2xx/3xx answers and zero socket errors.")
    w("")

    etagds = [s for s in servers if s.startswith("etagd")]
    noisy = [r for r in rows if (fnum(r.get("background_busy_pct", "")) or 0.0) > quiet_limit]
    disturbed = [r for r in rows if (fnum(r.get("foreign_cpu_pct", "")) or 0.0) > FOREIGN_LIMIT_PCT]
    w("## Quiet check")
    w("")
    w(f"Before each run the machine must be at most {quiet_limit:.0f} % busy over 0.5 s; during each run, CPU used "
      f"by processes other than this harness's (servers, memcached, wrk), plus hypervisor steal, should stay under "
      f"{FOREIGN_LIMIT_PCT:.0f} % of the machine.")
    w("")
    if not noisy and not disturbed:
        w("Every run passed both checks.")
    for title, flagged_rows, field in (
        ("started on a busy machine", noisy, "background_busy_pct"),
        ("shared the machine with another process while measuring", disturbed, "foreign_cpu_pct"),
    ):
        if not flagged_rows:
            continue
        w(f"These runs {title}; treat their figures with care:")
        w("")
        by_cell: dict[tuple[str, str, str], list[str]] = defaultdict(list)
        for r in flagged_rows:
            by_cell[(r["server"], r["scenario"], r["connections"])].append(f"round {r['round']}: {r[field]} %")
        for (server, scenario, c), runs in by_cell.items():
            w(f"- {server} / {scenario} / c={c}: " + ", ".join(runs))
        w("")
    if not noisy and not disturbed:
        w("")

    ttfb_section(w, run_dir)

    w("## etagd vs peers (same run)")
    w("")
    w("Ratio = etagd / peer, computed within each round (the two servers ran minutes apart at most), then the median over rounds (range in "
      "brackets). req/s: above 1 means etagd answers more. CPU/req: below 1 means etagd costs less.")
    w("")
    present = [e for e in etagds if any(k[0] == e for k in groups)]
    if not present:
        why = "; ".join(f"{e}: {unavailable.get(e, 'not run')}" for e in etagds) or "not in --servers"
        w(f"etagd: not available in this run ({why}), so there are no ratios.")
        w("")
    else:
        errored = {(s, sc, c) for s, sc, c in groups if any(r["errors"] not in ("", "0") for r in groups[(s, sc, c)])}
        # A server that did not do what the scenario asks (no 304, no gzip) is not comparable on that row.
        suspect = {key for key, texts in notes.items()
                   if any("CHECK FAILED" in t or "not compressed" in t for t in texts)}
        w("Rounds in which either run was disturbed are left out while a clean pair remains. `~` = every pair was "
          "disturbed, so all were used; `!` = errors in one of the two cells (see Errors); `?` = one of the two "
          "servers failed the scenario's check (no 304, no gzip, wrong body; see the notes column), so that ratio "
          "compares different work.")
        w("")
        for etagd in present:
            for c in connections:
                w(f"### {etagd}, {c} connections")
                w("")
                peers = [p for p in PEERS if p in servers and p not in unavailable]
                w("| scenario | " + " | ".join(f"req/s vs {p} | CPU/req vs {p}" for p in peers) + " |")
                w("|---|" + "---:|---:|" * len(peers))
                for scenario in scenarios:
                    if (etagd, scenario, c) not in groups:
                        continue
                    cells = []
                    for peer in peers:
                        for field in ("rps", "cpu_us_per_req"):
                            cells.append(ratio_cell(groups, etagd, peer, scenario, c, field, errored, suspect,
                                                    None if keep_disturbed else quiet_limit))
                    w(f"| {scenario} | " + " | ".join(cells) + " |")
                w("")
    with open(os.path.join(run_dir, "summary.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(out))
    print("\n".join(out))


def round_ratio_tables(w, groups, servers, scenarios, c, quiet_limit) -> None:
    """etagd / peer req/s for every round, beside the medians: a 5 % target sits inside one round's noise, so the
    spread over rounds is what says whether it is met."""
    etagds = [s for s in servers if s.startswith("etagd") and any(k[0] == s and k[2] == c for k in groups)]
    rounds = sorted({r["round"] for g in groups.values() for r in g}, key=lambda x: int(x) if x.isdigit() else 0)
    for etagd in etagds:
        rows = []
        for peer in ROUND_RATIO_PEERS:
            for scenario in scenarios:
                mine = {r["round"]: r for r in groups.get((etagd, scenario, c), [])}
                theirs = {r["round"]: r for r in groups.get((peer, scenario, c), [])}
                cells, clean, every = [], [], []
                for k in rounds:
                    a, b = mine.get(k), theirs.get(k)
                    if not a or not b or not fnum(a["rps"]) or not fnum(b["rps"]):
                        cells.append("-")
                        continue
                    ratio = fnum(a["rps"]) / fnum(b["rps"])
                    every.append(ratio)
                    disturbed = quiet_limit is not None and (is_disturbed(a, quiet_limit) or is_disturbed(b, quiet_limit))
                    if not disturbed:
                        clean.append(ratio)
                    cells.append(f"{ratio:.2f}{'~' if disturbed else ''}")
                if every:
                    used = clean or every
                    rows.append(f"| {peer} | {scenario} | {statistics.median(used):.2f} | {min(used):.2f} | "
                                + " | ".join(cells) + " |")
        if not rows:
            continue
        w(f"### Per-round req/s ratios, {etagd} / peer, {c} connections")
        w("")
        w("Each round's ratio of the two servers' runs in that round; `~` = one of the two runs was disturbed (left "
          "out of the median and the minimum while a clean round remains).")
        w("")
        w("| peer | scenario | median | min | " + " | ".join(f"round {k}" for k in rounds) + " |")
        w("|---|---|---:|---:|" + "---:|" * len(rounds))
        for line in rows:
            w(line)
        w("")


def ttfb_section(w, run_dir: str) -> None:
    path = os.path.join(run_dir, "ttfb.csv")
    if not os.path.exists(path):
        return
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    good = [r for r in rows if not r["note"] and fnum(r["first_byte_ms"]) is not None]
    servers = server_order(sorted({r["server"] for r in rows}))
    rounds = sorted({r["round"] for r in rows}, key=lambda x: int(x) if x.isdigit() else 0)

    def values(server, column, rnd=None):
        return [fnum(r[column]) for r in good if r["server"] == server and (rnd is None or r["round"] == rnd)]

    w("## Miss time to first byte (streamed 8 MiB body)")
    w("")
    w("Sequential GETs, one per new connection, each a URL never asked before (so every one is a miss through a "
      "cache), against an origin that sends an 8 MiB JSON body in pieces spread over about one second, no "
      "Accept-Encoding. First byte = the status line's first byte arrived (clock started before connecting, like "
      "curl's `time_starttransfer`); first body byte = the body's first byte was read; total = the whole body read.")
    w("")
    w("| server | requests | first byte p50 ms | first byte p90 ms | first body byte p50 ms | p90 ms | total p50 ms | "
      "failed |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|")
    for server in servers:
        failed = sum(1 for r in rows if r["server"] == server and r["note"])
        w(f"| {server} | {len(values(server, 'first_byte_ms'))} | {fmt(median(values(server, 'first_byte_ms')), 2)} | "
          f"{fmt(p90(values(server, 'first_byte_ms')), 2)} | {fmt(median(values(server, 'first_body_byte_ms')), 2)} | "
          f"{fmt(p90(values(server, 'first_body_byte_ms')), 2)} | {fmt(median(values(server, 'total_ms')), 1)} | "
          f"{'**' + str(failed) + '**' if failed else 0} |")
    w("")
    failures = [r for r in rows if r["note"]]
    for r in failures[:10]:
        w(f"- failed: {r['server']} round {r['round']} request {r['request']}: {r['note']}")
    if failures:
        w("")
    if "origin" not in servers:
        return
    w("Ratio to the origin alone (above 1 = later than the origin; the issue's target is at most 1.10 on the first "
      "byte), over all requests and per round (medians):")
    w("")
    w("| server | figure | p50 ratio | p90 ratio | " + " | ".join(f"round {k}" for k in rounds) + " |")
    w("|---|---|---:|---:|" + "---:|" * len(rounds))
    for server in servers:
        if server == "origin":
            continue
        for column, label in (("first_byte_ms", "first byte"), ("first_body_byte_ms", "first body byte")):
            def ratio(fn, rnd=None):
                mine, base = fn(values(server, column, rnd)), fn(values("origin", column, rnd))
                return f"{mine / base:.2f}" if mine is not None and base else "-"
            per_round = [ratio(median, k) for k in rounds]
            w(f"| {server} | {label} | {ratio(median)} | {ratio(p90)} | " + " | ".join(per_round) + " |")
    w("")


def ratio_cell(groups, etagd, peer, scenario, c, field, errored, suspect, quiet_limit) -> str:
    mine = {r["round"]: r for r in groups.get((etagd, scenario, c), [])}
    theirs = {r["round"]: r for r in groups.get((peer, scenario, c), [])}
    pairs = [(mine[k], theirs[k]) for k in mine if k in theirs and fnum(mine[k][field]) and fnum(theirs[k][field])]
    clean = [p for p in pairs if quiet_limit is None or not any(is_disturbed(r, quiet_limit) for r in p)]
    mark = ""
    if not clean and pairs:
        clean, mark = pairs, "~"
    ratios = [fnum(a[field]) / fnum(b[field]) for a, b in clean]
    if not ratios:
        return "-"
    mark += "!" if (etagd, scenario, c) in errored or (peer, scenario, c) in errored else ""
    if (etagd, scenario) in suspect or (peer, scenario) in suspect:
        mark += "?"
    return f"{statistics.median(ratios):.2f}{mark} [{min(ratios):.2f}-{max(ratios):.2f}]"


# === command line ===


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("free-ports").add_argument("count", type=int)
    sub.add_parser("mc-gets").add_argument("ports")
    p = sub.add_parser("mc-set")
    p.add_argument("port", type=int)
    p.add_argument("key")
    p.add_argument("url")
    p = sub.add_parser("prepare")
    p.add_argument("scenario", choices=SCENARIO_ORDER)
    p.add_argument("base_url")
    p.add_argument("lua")
    p.add_argument("--server", default="", help="server name, for servers that serve the scenario under another path")
    p = sub.add_parser("row")
    p.add_argument("--raw", required=True)
    p.add_argument("--round", required=True)
    p.add_argument("--server", required=True)
    p.add_argument("--scenario", required=True)
    p.add_argument("--connections", required=True)
    p.add_argument("--wrk-out")
    p.add_argument("--unavailable", action="store_true", help="write a 'not available' row")
    p.add_argument("--skipped", help="write a row without figures, with this note (warm-up failed, not applicable)")
    p.add_argument("--busy-jiffies", type=int, default=0)
    p.add_argument("--clk-tck", type=int, default=100)
    p.add_argument("--gets", default="")
    p.add_argument("--note", default="")
    p.add_argument("--background-pct", default="", help="machine busy %% just before the run")
    p.add_argument("--foreign-jiffies", type=int, help="process CPU during the run not used by the harness's own")
    p.add_argument("--nproc", type=int, default=0)
    p = sub.add_parser("ttfb")
    p.add_argument("--csv", required=True)
    p.add_argument("--round", required=True)
    p.add_argument("--server", required=True)
    p.add_argument("--url", required=True, help="the server's base URL")
    p.add_argument("--path", required=True, help="path (and query) of the streamed route")
    p.add_argument("--requests", type=int, default=10)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--expect-from", help="URL whose body length every answer must have")
    p.add_argument("--background-pct", default="")
    p = sub.add_parser("summary")
    p.add_argument("run_dir")
    p.add_argument("--keep-disturbed", action="store_true", help="use every round, even disturbed ones")
    sub.add_parser("tree-jiffies").add_argument("root", type=int)
    sub.add_parser("scenarios")
    args = parser.parse_args()

    if args.command == "free-ports":
        print(" ".join(map(str, free_ports(args.count))))
    elif args.command == "mc-gets":
        print(mc_gets([int(p) for p in args.ports.split(",") if p]))
    elif args.command == "mc-set":
        mc_set(args.port, args.key, args.url)
    elif args.command == "prepare":
        return prepare(args.scenario, args.base_url, args.lua, args.server)
    elif args.command == "row":
        row(args)
    elif args.command == "ttfb":
        ttfb(args)
    elif args.command == "tree-jiffies":
        print(tree_jiffies(args.root))
    elif args.command == "summary":
        summary(args.run_dir, args.keep_disturbed)
    elif args.command == "scenarios":
        print(",".join(SCENARIO_ORDER))
    return 0


if __name__ == "__main__":
    sys.exit(main())
