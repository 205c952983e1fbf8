#!/usr/bin/env bash
# Resident memory of etagd after a flood of distinct cold URLs (issue 9): every request is a miss that fills a
# new entry, so anything unbounded in process (body cache, hints, in-flight fills) would grow with it.
#
#   bench/memory.sh [--urls 200000] [--body-cache-bytes 67108864]
#
# Starts memcached (-m 1024), the demo origin and a release etagd on loopback, records etagd's VmRSS/VmHWM from
# /proc before and after, sends at least N requests for N distinct URLs (/bytes/2048?u=1..N, in 10 s wrk chunks that
# continue the numbering), and prints the figures. Bounded: it stops once N are sent or after 10 minutes;
# everything is stopped on exit.
set -euo pipefail

URLS=200000
BODY_CACHE=$((64 << 20))
while [ $# -gt 0 ]; do
  case "$1" in
    --urls) URLS=$2; shift 2 ;;
    --body-cache-bytes) BODY_CACHE=$2; shift 2 ;;
    *) echo "memory.sh: unknown flag $1" >&2; exit 64 ;;
  esac
done

# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

read -r MC ORIGIN PROXY ADMIN <<<"$(free_ports 4)"
memcached -l 127.0.0.1 -p "$MC" -U 0 -m 1024 -t 1 "${as_root[@]}" & PIDS+=($!)
"$BIN_DIR/demo-origin" --listen "127.0.0.1:$ORIGIN" >"$TMP/origin.log" 2>&1 & PIDS+=($!)
sleep 0.3
ETAGD_LOG=warn "$BIN_DIR/etagd" --listen "127.0.0.1:$PROXY" --admin-listen "127.0.0.1:$ADMIN" \
  --upstream "http://127.0.0.1:$ORIGIN" --memcached "127.0.0.1:$MC" --namespace "mem$$" \
  --body-cache-bytes "$BODY_CACHE" >"$TMP/etagd.log" 2>&1 & ETAGD=$!
PIDS+=($ETAGD)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ADMIN/readyz" >/dev/null && break; sleep 0.1; done

rss() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$ETAGD/status"; }
curl -sf -o /dev/null "http://127.0.0.1:$PROXY/bytes/2048?u=0"
BEFORE=$(rss VmRSS)

# wrk runs in 10 s chunks; each chunk numbers its URLs from where the last stopped, so every request is a new URL.
cat >"$TMP/distinct.lua" <<'LUA'
local n = 0
init = function(args) n = tonumber(args[1]) end
request = function()
  n = n + 1
  return wrk.format("GET", "/bytes/2048?u=" .. n)
end
LUA
START=$(date +%s.%N)
SENT=0
DEADLINE=$(( $(date +%s) + 600 ))
while [ "$SENT" -lt "$URLS" ] && [ "$(date +%s)" -lt "$DEADLINE" ]; do
  # One connection per chunk keeps the numbering exact (wrk gives every connection the same script state).
  wrk -t1 -c1 -d10s --timeout 5s -s "$TMP/distinct.lua" "http://127.0.0.1:$PROXY/" -- "$SENT" >"$TMP/wrk.out"
  SENT=$(( SENT + $(awk '/requests in/ { print $1 }' "$TMP/wrk.out") ))
done
END=$(date +%s.%N)
AFTER=$(rss VmRSS)
PEAK=$(rss VmHWM)
METRICS=$(curl -sf "http://127.0.0.1:$ADMIN/metrics")
metric() { echo "$METRICS" | awk -v m="$1" '$1 == m { print $2 }'; }

printf 'distinct cold URLs requested: %s (target %s)\n' "$SENT" "$URLS"
printf 'fills stored: %s, origin errors: %s\n' "$(metric etagd_fills_stored_total)" "$(metric etagd_origin_errors_total)"
printf 'body cache bound: %d MiB, held at the end: %d MiB\n' $((BODY_CACHE >> 20)) $(( $(metric etagd_body_cache_bytes) >> 20 ))
printf 'etagd VmRSS before: %d MiB, after: %d MiB, peak (VmHWM): %d MiB\n' $((BEFORE >> 10)) $((AFTER >> 10)) $((PEAK >> 10))
printf 'elapsed: %s s\n' "$(python3 -c "print(round($END - $START, 1))")"
