#!/usr/bin/env bash
# Two etagd binaries side by side in one run, for "did this change cost speed": same memcached, same demo origin,
# wrk against each in turn (order rotated every round), medians printed with the ratio B/A, the per-round ratios,
# and each sidecar process's own CPU per request (utime+stime from /proc over the wrk run: steadier than req/s on
# a shared machine). A third variant runs binary B with ETAGD_LOG=warn, to show what the access log costs.
#
#   bench/compare.sh OLD_ETAGD NEW_ETAGD [ROUNDS] [SECONDS]
#
# SCENARIOS (default "304 hit-2k") may add miss-2k: a distinct URL per request (2 KiB JSON, Accept-Encoding
# gzip, br); its CPU per request is read only once the sidecar's fills answered before their commit have landed
# (etagd_fills_in_flight back to 0), so a build that defers work past the run is not credited for it.
#
# Build the old binary from a worktree of the commit to compare against (git worktree add /tmp/old <commit>;
# cargo build --release -p etagd there); the new one is $CARGO_TARGET_DIR/release/etagd (default target/). Loopback only; bounded in time.
set -euo pipefail
OLD=${1:?usage: bench/compare.sh OLD_ETAGD NEW_ETAGD [ROUNDS] [SECONDS]}
NEW=${2:?usage: bench/compare.sh OLD_ETAGD NEW_ETAGD [ROUNDS] [SECONDS]}
ROUNDS=${3:-3}
SECONDS_PER_RUN=${4:-5}
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

read -r MC_PORT ORIGIN_PORT A_PORT A_ADMIN B_PORT B_ADMIN C_PORT C_ADMIN <<<"$(free_ports 8)"
memcached "${as_root[@]}" -l 127.0.0.1 -p "$MC_PORT" -U 0 -m 256 &
PIDS+=($!)
"$BIN_DIR/demo-origin" --listen "127.0.0.1:$ORIGIN_PORT" >"$TMP/origin.log" 2>&1 &
PIDS+=($!)
start() { # name binary port admin [env...]
  local name=$1 binary=$2 port=$3 admin=$4
  shift 4
  env "$@" "$binary" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
    --upstream "http://127.0.0.1:$ORIGIN_PORT" --memcached "127.0.0.1:$MC_PORT" --namespace "$name" \
    >"$TMP/$name.log" 2>&1 &
  PIDS+=($!)
  PID_OF[$name]=$!
}
declare -A PID_OF=()
start old "$OLD" "$A_PORT" "$A_ADMIN"
start new "$NEW" "$B_PORT" "$B_ADMIN"
start new-nolog "$NEW" "$C_PORT" "$C_ADMIN" ETAGD_LOG=warn
for port in "$A_PORT" "$B_PORT" "$C_PORT"; do
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/bytes/2048" && break || sleep 0.1; done
done
ETAG=$(curl -s -D - -o /dev/null "http://127.0.0.1:$B_PORT/bytes/2048" | awk -F': ' 'tolower($1)=="etag"{print $2}' | tr -d '\r')

SCENARIOS=${SCENARIOS:-304 hit-2k}
declare -A ADMIN_OF=([old]=$A_ADMIN [new]=$B_ADMIN [new-nolog]=$C_ADMIN)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# settle admin_port: waits (at most 10 s) until no fill is running, so the commits a run queued are counted.
settle() {
  for _ in $(seq 100); do
    curl -s "http://127.0.0.1:$1/metrics" | grep -q '^etagd_fills_in_flight 0$' && return
    sleep 0.1
  done
}
RUN=0
run() { # scenario name port: prints scenario, name, req/s, process CPU us per request
  local args=() path=/bytes/2048 before after out
  RUN=$((RUN + 1))
  case $1 in
    304) args=(-H "If-None-Match: $ETAG") ;;
    miss-2k)
      path=/json/2048
      sed "s/TOKEN/$$-$RUN/" >"$TMP/miss.lua" <<'LUA'
local prefix, counter
function init(args) prefix = wrk.path .. "?miss=TOKEN-" counter = 0 end
function request() counter = counter + 1 return wrk.format(nil, prefix .. counter) end
LUA
      args=(-H "Accept-Encoding: gzip, br" -s "$TMP/miss.lua")
      ;;
  esac
  before=$(cpu_ticks "${PID_OF[$2]}")
  out=$(wrk -t1 -c32 -d"${SECONDS_PER_RUN}s" "${args[@]}" "http://127.0.0.1:$3$path" 2>/dev/null)
  [ "$1" = miss-2k ] && settle "${ADMIN_OF[$2]}"
  after=$(cpu_ticks "${PID_OF[$2]}")
  awk -v s="$1" -v n="$2" -v ticks="$((after - before))" -v hz="$(getconf CLK_TCK)" \
    '/requests in/{reqs=$1} /Requests\/sec/{rps=$2} END{printf "%s %s %s %.2f\n", s, n, rps, ticks * 1e6 / hz / reqs}' \
    <<<"$out"
}
servers=("old:$A_PORT" "new:$B_PORT" "new-nolog:$C_PORT")
: >"$TMP/results"
for round in $(seq "$ROUNDS"); do
  for scenario in $SCENARIOS; do
    for i in 0 1 2; do
      item=${servers[$(((i + round) % 3))]}
      run "$scenario" "${item%%:*}" "${item##*:}" | tee -a "$TMP/results"
    done
  done
done
python3 - "$TMP/results" $SCENARIOS <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
names = ("old", "new", "new-nolog")
for scenario in sys.argv[2:]:
    runs = {n: [r for r in rows if r[0] == scenario and r[1] == n] for n in names}
    med = {n: statistics.median(float(r[2]) for r in runs[n]) for n in names}
    cpu = {n: statistics.median(float(r[3]) for r in runs[n]) for n in names}
    ratios = [float(b[2]) / float(a[2]) for a, b in zip(runs["old"], runs["new"])]
    print(f"{scenario}: old {med['old']:.0f}/s, new {med['new']:.0f}/s ({med['new'] / med['old']:.2f}x), "
          f"new without the access log {med['new-nolog']:.0f}/s ({med['new-nolog'] / med['old']:.2f}x)")
    print(f"  per-round new/old: {' '.join(f'{r:.2f}' for r in ratios)}")
    print(f"  sidecar CPU us/req: old {cpu['old']:.1f}, new {cpu['new']:.1f} ({cpu['new'] / cpu['old']:.2f}x), "
          f"new without the access log {cpu['new-nolog']:.1f}")
EOF
