#!/usr/bin/env bash
# Checks deploy/prometheus/ with Prometheus's own tools, against what a real etagd exports:
#
#   1. `promtool check rules` and `promtool check config` on the rules and the sample prometheus.yml;
#   2. starts Memcached, the demo origin and etagd on loopback (release binaries), sends traffic that produces
#      hits, misses, 304s, a weakened validator and an invalidation, and scrapes /metrics;
#   3. deploy/prometheus/scrape_series.py fails if a metric the rules use, or a series or label of the hand-written
#      tests (deploy/prometheus/tests/*.yml), is not in that scrape, and writes a test whose input series are the
#      scrape's samples, with the recording rules' values and the alerts expected from the scraped numbers;
#   4. `promtool test rules` on the hand-written tests and on the one written from the scrape.
#
# Needs memcached and Prometheus: scripts/install-test-deps.sh installs both (Prometheus unpacked from Debian's
# package under ~/.cache/etagd/prometheus). Set CARGO_TARGET_DIR as for any cargo command.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
START=$SECONDS
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
WORK="$TARGET/check-prometheus"
PROMETHEUS_DIR="${PROMETHEUS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/etagd/prometheus}"
PROMTOOL="$PROMETHEUS_DIR/usr/bin/promtool"
export PYTHONDONTWRITEBYTECODE=1

step() { printf '\n== %s (%ss)\n' "$*" "$((SECONDS - START))"; }

bash scripts/install-test-deps.sh >/dev/null
MEMCACHED="$(command -v memcached || echo /usr/bin/memcached)"
"$PROMTOOL" --version 2>&1 | head -1

step "promtool check rules / check config"
"$PROMTOOL" check rules deploy/prometheus/etagd-rules.yml
"$PROMTOOL" check config deploy/prometheus/prometheus.yml
# A canary: a rule with a PromQL syntax error must be rejected, or the green line above means nothing.
rm -rf "$WORK"
mkdir -p "$WORK"
sed 's/rate(etagd_requests_total\[5m\])/rate(etagd_requests_total[5m)/' deploy/prometheus/etagd-rules.yml \
    >"$WORK/canary-rules.yml"
if "$PROMTOOL" check rules "$WORK/canary-rules.yml" >/dev/null 2>&1; then
    echo "check-prometheus: canary: promtool accepted a rule with a syntax error" >&2
    exit 1
fi
echo "canary: a rule with a syntax error is rejected, as it must be"

step "a real etagd: traffic, then a scrape of /metrics"
# The same packages as scripts/compose-fleet.sh builds, so that one build serves both (another set of packages
# unifies features differently and rebuilds).
nice -n 10 cargo build --release --locked -p etagd -p etagctl -p etagd-demo-origin
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
MEMCACHED_PORT=$(free_port)
ORIGIN_PORT=$(free_port)
PROXY_PORT=$(free_port)
ADMIN_PORT=$(free_port)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
# -u: memcached refuses to run as root without naming a user.
"$MEMCACHED" -l 127.0.0.1 -p "$MEMCACHED_PORT" -U 0 -m 16 -u "$(id -un)" >"$WORK/memcached.log" 2>&1 &
PIDS+=($!)
"$TARGET/release/demo-origin" --listen "127.0.0.1:$ORIGIN_PORT" >"$WORK/origin.log" 2>&1 &
PIDS+=($!)
"$TARGET/release/etagd" --listen "127.0.0.1:$PROXY_PORT" --upstream "http://127.0.0.1:$ORIGIN_PORT" \
    --memcached "127.0.0.1:$MEMCACHED_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
    --config deploy/compose/etagd.toml >"$WORK/etagd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$ADMIN_PORT/readyz" 2>/dev/null && break
    sleep 0.1
done
curl -fsS -o /dev/null "http://127.0.0.1:$ADMIN_PORT/readyz" || {
    cat "$WORK/etagd.log" >&2
    echo "check-prometheus: etagd did not become ready" >&2
    exit 1
}
PROXY="http://127.0.0.1:$PROXY_PORT"
get() { curl -fsS -o /dev/null -w '%{http_code} ' "$@"; }
# A miss, then hits, 304s for the stored tag and for a weakened copy of it (what gzip in an ingress sends), a POST
# that invalidates, and the miss after it.
get "$PROXY/json/1"
get "$PROXY/json/1"
get "$PROXY/json/1"
ETAG="$(curl -fsS -o /dev/null -D - "$PROXY/json/1" | awk 'tolower($1) == "etag:" { sub(/\r$/, ""); print $2 }')"
get -H "If-None-Match: $ETAG" "$PROXY/json/1"
get -H "If-None-Match: W/$ETAG" "$PROXY/json/1"
get "$PROXY/api/servers"
get -X POST -H 'content-type: application/json' --data '{"hostname": "check-prometheus.test"}' "$PROXY/api/servers"
get "$PROXY/api/servers"
get "$PROXY/api/servers"
echo
curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" >"$WORK/scrape.txt"
grep '^etagd_requests_total' "$WORK/scrape.txt"

step "rule tests checked against the scrape, and one written from it"
# PyYAML, pinned, in a venv of its own (the machine's python3 need not have it).
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/etagd/check-prometheus/venv-$(python3 --version | sha256sum | cut -c1-16)"
if [[ ! -f "$VENV/.complete" ]]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-input PyYAML==6.0.4
    touch "$VENV/.complete"
fi
"$VENV/bin/python" deploy/prometheus/scrape_series.py --scrape "$WORK/scrape.txt" --rules deploy/prometheus/etagd-rules.yml \
    --tests deploy/prometheus/tests/*.yml --out "$WORK/scraped.test.yml"

step "promtool test rules"
"$PROMTOOL" test rules deploy/prometheus/tests/*.yml "$WORK/scraped.test.yml"
echo "check-prometheus: rules checked and tested in $((SECONDS - START))s"
