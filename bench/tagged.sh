#!/usr/bin/env bash
# Does an entry with tags cost more on the 304 path than one without (issue 9)? Two etagd processes share one
# origin and one memcached; one has a route rule giving /bytes/ two tags. They are measured side by side, order
# rotated each round, and the medians and their ratio printed. Tags are batched with the head read in the common
# case (their counters join the first round), so the ratio should stay near 1.
#
#   bench/tagged.sh [--rounds 3] [--duration 5]
set -euo pipefail

ROUNDS=3
DURATION=5
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    *) echo "tagged.sh: unknown flag $1" >&2; exit 64 ;;
  esac
done

# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

read -r MC ORIGIN P_PLAIN A_PLAIN P_TAGGED A_TAGGED <<<"$(free_ports 6)"
memcached -l 127.0.0.1 -p "$MC" -U 0 -m 256 -t 1 "${as_root[@]}" & PIDS+=($!)
"$BIN_DIR/demo-origin" --listen "127.0.0.1:$ORIGIN" >"$TMP/origin.log" 2>&1 & PIDS+=($!)
cat >"$TMP/tagged.toml" <<TOML
[[route]]
prefix = "/bytes/"
tags = ["payloads", "bytes"]
TOML
start() { # start PORT ADMIN NAMESPACE [--config FILE]
  local port=$1 admin=$2 ns=$3
  shift 3
  ETAGD_LOG=warn "$BIN_DIR/etagd" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
    --upstream "http://127.0.0.1:$ORIGIN" --memcached "127.0.0.1:$MC" --namespace "$ns" "$@" \
    >"$TMP/etagd-$ns.log" 2>&1 &
  PIDS+=($!)
}
start "$P_PLAIN" "$A_PLAIN" "plain$$"
start "$P_TAGGED" "$A_TAGGED" "tagged$$" --config "$TMP/tagged.toml"
sleep 0.5
for admin in "$A_PLAIN" "$A_TAGGED"; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break; sleep 0.1; done
done
cat >"$TMP/inm.lua" <<'LUA'
init = function(args) wrk.headers["If-None-Match"] = args[1] end
LUA
declare -A RPS
names=(untagged tagged)
ports=("$P_PLAIN" "$P_TAGGED")
for i in 0 1; do
  curl -sf -o /dev/null "http://127.0.0.1:${ports[$i]}/bytes/2048"
  status=$(curl -s -o /dev/null -w '%{http_code}' -H 'If-None-Match: "b2048"' "http://127.0.0.1:${ports[$i]}/bytes/2048")
  [ "$status" = 304 ] || { echo "tagged.sh: ${names[$i]} did not answer 304 ($status)" >&2; exit 1; }
done
tags=$(curl -sf "http://127.0.0.1:$A_TAGGED/entries?url=http://127.0.0.1:$P_TAGGED/bytes/2048")
echo "tagged entry: $tags"
for round in $(seq 1 "$ROUNDS"); do
  for k in 0 1; do
    i=$(( (k + round) % 2 ))
    out=$(wrk -t1 -c32 -d"${DURATION}s" --latency -s "$TMP/inm.lua" "http://127.0.0.1:${ports[$i]}/bytes/2048" -- '"b2048"')
    rps=$(echo "$out" | awk '/Requests\/sec/ { print $2 }')
    p99=$(echo "$out" | awk '$1 == "99%" { print $2 }')
    echo "round $round ${names[$i]}: $rps req/s, p99 $p99"
    RPS[${names[$i]}]+="$rps "
  done
done
python3 - "${RPS[untagged]}" "${RPS[tagged]}" <<'PY'
import statistics, sys
untagged = [float(x) for x in sys.argv[1].split()]
tagged = [float(x) for x in sys.argv[2].split()]
u, t = statistics.median(untagged), statistics.median(tagged)
print(f"median 304/s: untagged {u:,.0f}, tagged (2 route tags) {t:,.0f}, tagged/untagged {t / u:.2f}")
PY
