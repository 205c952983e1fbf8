#!/usr/bin/env bash
# Where etagd spends its cycles on the hot path, beside the ceiling stand-in (../shared/reference/limit) in the
# same run: each server under `wrk -t1 -c32` on a 304 (and a 2 KiB hit), `perf record -g` on that server's
# process only, then `perf report --no-children` summaries of both, written to OUT (default a temp dir, printed).
#
#   bench/profile.sh [ETAGD_BIN] [LIMIT_BIN] [SECONDS]
#
# CALLGRAPH=dwarf (and FREQ=299) attribute Rust frames better than the default frame pointers, and add
# {etagd,limit}-parts.txt: each server's CPU per request split by part (bench/attribute.py).
# SYSCALLS=1 counts system calls instead (`strace -c -f` attached for exactly one 4 s wrk run; needs strace):
# per request and by call, for both servers, into {etagd,limit}-syscalls.txt. strace slows both servers
# several times over, so read the counts per request, not the rates.
# ETAGD_BIN defaults to ${CARGO_TARGET_DIR:-target}/release/etagd; LIMIT_BIN to /tmp/limit/target/release/limit
# (build it as ../shared/reference/limit/README.md says). Loopback only; bounded in time. Needs perf.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
ETAGD=${1:-$TARGET/release/etagd}
LIMIT=${2:-/tmp/limit/target/release/limit}
SECS=${3:-5}
OUT=${OUT:-$(mktemp -d /tmp/etagd-profile.XXXXXX)}
[ "${SYSCALLS:-0}" = 1 ] || command -v perf >/dev/null || { echo "profile.sh: perf is not installed (apt-get install linux-perf)" >&2; exit 64; }
[ -x "$ETAGD" ] || { echo "profile.sh: no etagd binary at $ETAGD" >&2; exit 64; }
[ -x "$LIMIT" ] || { echo "profile.sh: no stand-in binary at $LIMIT; see ../shared/reference/limit/README.md" >&2; exit 64; }

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
as_root=()
[ "$(id -u)" -eq 0 ] && as_root=(-u root)
read -r MC ORIGIN E_PORT E_ADMIN L_PORT L_ADMIN <<<"$(python3 "$REPO/bench/harness.py" free-ports 6 | tr '\n' ' ')"
memcached "${as_root[@]}" -l 127.0.0.1 -p "$MC" -U 0 -m 256 &
PIDS+=($!)
"$TARGET/release/demo-origin" --listen "127.0.0.1:$ORIGIN" >"$OUT/origin.log" 2>&1 &
PIDS+=($!)
sleep 0.3
"$ETAGD" --listen "127.0.0.1:$E_PORT" --admin-listen "127.0.0.1:$E_ADMIN" --upstream "http://127.0.0.1:$ORIGIN" \
  --memcached "127.0.0.1:$MC" >"$OUT/etagd.log" 2>&1 &
E_PID=$!
PIDS+=($E_PID)
"$LIMIT" --listen "127.0.0.1:$L_PORT" --upstream "http://127.0.0.1:$ORIGIN" --memcached "127.0.0.1:$MC" \
  --admin-listen "127.0.0.1:$L_ADMIN" --mode batched --threads 1 >"$OUT/limit.log" 2>&1 &
L_PID=$!
PIDS+=($L_PID)
etag() { curl -s -D - -o /dev/null "$1" | awk -F': ' 'tolower($1)=="etag"{print $2}' | tr -d '\r'; }
for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$E_PORT/bytes/2048" && break || sleep 0.1; done
for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$L_PORT/b2k.json" && break || sleep 0.1; done
E_TAG=$(etag "http://127.0.0.1:$E_PORT/bytes/2048")
L_TAG=$(etag "http://127.0.0.1:$L_PORT/b2k.json")

profile() { # name pid url etag
  local name=$1 pid=$2 url=$3 tag=$4
  wrk -t1 -c32 -d1s -H "If-None-Match: $tag" "$url" >/dev/null 2>&1
  wrk -t1 -c32 -d"$((SECS + 1))s" -H "If-None-Match: $tag" "$url" >"$OUT/$name-wrk.txt" 2>&1 &
  local wrk_pid=$!
  sleep 0.5
  perf record -F "${FREQ:-999}" --call-graph "${CALLGRAPH:-fp}" -p "$pid" -o "$OUT/$name.data" -- sleep "$SECS" >/dev/null 2>&1
  wait "$wrk_pid"
  perf report -i "$OUT/$name.data" --no-children --stdio --percent-limit 0.7 -g none 2>/dev/null |
    grep -v '^#' | grep -v '^$' >"$OUT/$name-flat.txt"
  perf report -i "$OUT/$name.data" --no-children --stdio --sort dso 2>/dev/null | grep -v '^#' | grep -v '^$' \
    >"$OUT/$name-dso.txt"
  local rate
  rate=$(awk '/Requests\/sec/{print $2}' "$OUT/$name-wrk.txt")
  echo "$name: $rate 304/s under perf"
  if [ "${CALLGRAPH:-fp}" = dwarf ]; then
    # CPU per request by part (the access log, the lookup, hyper, ...): frame pointers lose too many frames.
    python3 "$REPO/bench/attribute.py" "$OUT/$name.data" "$(python3 -c "print($rate * $SECS)")" "${FREQ:-999}" \
      >"$OUT/$name-parts.txt"
  fi
}
syscalls() { # name pid url etag: system calls per request over one wrk run with strace attached throughout
  local name=$1 pid=$2 url=$3 tag=$4 tracer requests
  wrk -t1 -c32 -d1s -H "If-None-Match: $tag" "$url" >/dev/null 2>&1
  strace -c -f -p "$pid" -o "$OUT/$name-strace.txt" 2>/dev/null &
  tracer=$!
  sleep 0.5
  wrk -t1 -c32 -d4s -H "If-None-Match: $tag" "$url" >"$OUT/$name-wrk.txt" 2>&1
  kill -INT "$tracer"
  wait "$tracer" || true
  requests=$(awk '/requests in/{print $1}' "$OUT/$name-wrk.txt")
  awk -v n="$requests" -v name="$name" 'BEGIN{printf "%s: %d requests under strace\n", name, n}
    $NF=="total" {printf "  %-14s %7.3f per request\n", "all", $4/n}
    NR>2 && $NF!="total" && $4~/^[0-9]+$/ {printf "  %-14s %7.3f per request\n", $NF, $4/n}' \
    "$OUT/$name-strace.txt" | tee "$OUT/$name-syscalls.txt"
}
if [ "${SYSCALLS:-0}" = 1 ]; then
  command -v strace >/dev/null || { echo "profile.sh: SYSCALLS=1 needs strace (apt-get install strace)" >&2; exit 64; }
  syscalls etagd "$E_PID" "http://127.0.0.1:$E_PORT/bytes/2048" "$E_TAG"
  syscalls limit "$L_PID" "http://127.0.0.1:$L_PORT/b2k.json" "$L_TAG"
  exit 0
fi
profile etagd "$E_PID" "http://127.0.0.1:$E_PORT/bytes/2048" "$E_TAG"
profile limit "$L_PID" "http://127.0.0.1:$L_PORT/b2k.json" "$L_TAG"
echo "profiles in $OUT: {etagd,limit}-flat.txt (symbols), {etagd,limit}-dso.txt (kernel vs user)," \
  "{etagd,limit}-parts.txt (CPU per request by part, with CALLGRAPH=dwarf)"
