#!/usr/bin/env bash
# Macro benchmark: etagd beside Varnish and nginx, in one run, on this machine. See BENCHMARKS.md.
#
# Starts (all on 127.0.0.1, free ports, configs and logs in a temp dir, stopped on exit even on failure):
#   origin             demo-origin alone (release build)
#   etagd              $CARGO_TARGET_DIR/release/etagd in front of the origin, with its own memcached(s)
#   etagd-small-body-cache  the same etagd with an in-process body cache too small for 8 MiB (hit-8m only)
#   limit              the ceiling stand-in ($LIMIT_SRC, built outside the repo), with its own memcached
#                      (304, hit-2k and hit-64k only, on its own two paths)
#   varnish            varnishd -F, malloc 1g, backend = the origin
#   nginx-proxy-cache  nginx proxy_cache in front of the origin
#   nginx-memcached    nginx memcached_pass to its own memcached, pre-populated with the bodies
# then, for each round, connection count and scenario, runs wrk against each server (order rotated every round)
# and writes bench/runs/<YYYY-MM-DD>-<host>-<HHMM>/{raw.csv,summary.md}.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: bench/run.sh [options]
  --rounds N              rounds; the server order is rotated each round (default 3)
  --duration S            seconds per wrk run (default 5)
  --warmup S              seconds of unrecorded wrk load before each recorded run (default 1)
  --connections C[,C..]   wrk connections; several values give a scaling table (default 32)
  --threads T             wrk threads, -t (default 1)
  --servers a,b,c         any of origin,etagd,etagd-small-body-cache,limit,varnish,nginx-proxy-cache,
                          nginx-memcached (default all; limit only when its source is there, see LIMIT_SRC)
  --scenarios x,y         any of hit-2k,hit-64k,304,json-gzip,json-identity,hit-8m,miss-2k,miss-ttfb
                          (default all); they run in this order whatever the order given, so the ones that
                          fill caches with new URLs (miss-2k, miss-ttfb) come last in every round
  --ttfb-requests N       miss-ttfb: sequential misses per server and round (default 10)
  --ttfb-ms MS            miss-ttfb: the origin spreads the 8 MiB body over MS milliseconds (default 1000)
  --etagd-workers N[,N..] pass --workers N to etagd; several values run one etagd per value (default: not passed)
  --memcached-servers M[,M..]  memcached processes behind etagd; several values run one etagd per value (default 1)
  --nginx-workers V       worker_processes for both nginx servers: 1, auto, or probe (default probe: measure
                          hit-2k with 1 and with auto for 2 s each and keep the faster)
  --quiet-pct P           before each measured run, wait until the machine is at most P % busy over 0.5 s
                          (other builds or benchmarks skew every figure; default 10)
  --quiet-wait S          give up waiting for quiet after S seconds, run anyway and flag the row (default 120)
  --quiet-budget S        total seconds the whole run may spend waiting for quiet; then it only samples (default 900)
  --no-build              use the binaries already in target/release
  --keep-tmp              keep the temp dir (configs, logs, wrk output) after a successful run
  --out DIR               output dir (default bench/runs/<YYYY-MM-DD>-<hostname>-<HHMM>)
Environment: ETAGD_BIN=/path/to/etagd benchmarks that binary instead of building $CARGO_TARGET_DIR/release/etagd.
CARGO_TARGET_DIR (default <repo>/target) is where the release binaries are built and looked for.
LIMIT_SRC (default <repo>/../shared/reference/limit) is the ceiling stand-in's source; it is copied to
LIMIT_BUILD_DIR (default ~/.cache/etagd-bench/limit) and built there with its own cargo target.
The harness's environment is passed to every server, so RUST_LOG or ETAGD_* settings reach etagd.
EOF
}

ALL_SERVERS=origin,etagd,etagd-small-body-cache,limit,varnish,nginx-proxy-cache,nginx-memcached
ALL_SCENARIOS=hit-2k,hit-64k,304,json-gzip,json-identity,hit-8m,miss-2k,miss-ttfb
# The ceiling stand-in's scenarios: it serves two fixed bodies and 304s for them, nothing else.
LIMIT_SCENARIOS=hit-2k,hit-64k,304
ROUNDS=3
DURATION=5
WARMUP=1
CONNECTIONS=32
THREADS=1
SERVERS=""
SCENARIOS=$ALL_SCENARIOS
TTFB_REQUESTS=10
TTFB_MS=1000
ETAGD_WORKERS=""
MC_SERVERS=1
NGINX_WORKERS=probe
QUIET_PCT=10
QUIET_WAIT=120
QUIET_BUDGET=900
BUILD=1
KEEP_TMP=0
OUT=""

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HARNESS="$REPO/bench/harness.py"
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
LIMIT_SRC=${LIMIT_SRC:-$REPO/../shared/reference/limit}
LIMIT_BUILD_DIR=${LIMIT_BUILD_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/etagd-bench/limit}
COMMAND_LINE="bench/run.sh$(printf ' %q' "$@")"

die() {
  echo "run.sh: $*" >&2
  exit 64
}
posint() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 wants a positive integer, got '$2'"; }
posints() {
  local v
  local -a list
  IFS=, read -r -a list <<<"$2"
  ((${#list[@]})) || die "$1 wants a list of positive integers"
  for v in "${list[@]}"; do posint "$1" "$v"; done
}
within() { # within FLAG LIST ALLOWED
  local v
  local -a list
  IFS=, read -r -a list <<<"$2"
  ((${#list[@]})) || die "$1 wants a non-empty list"
  for v in "${list[@]}"; do [[ ,$3, == *,"$v",* ]] || die "$1: unknown '$v'; pick from $3"; done
}

while (($#)); do
  case $1 in
    --rounds) posint "$1" "${2-}"; ROUNDS=$2; shift 2 ;;
    --duration) posint "$1" "${2-}"; DURATION=$2; shift 2 ;;
    --warmup) [[ ${2-} =~ ^[0-9]+$ ]] || die "--warmup wants seconds"; WARMUP=$2; shift 2 ;;
    --connections) posints "$1" "${2-}"; CONNECTIONS=$2; shift 2 ;;
    --threads) posint "$1" "${2-}"; THREADS=$2; shift 2 ;;
    --servers) within "$1" "${2-}" "$ALL_SERVERS"; SERVERS=$2; shift 2 ;;
    --scenarios) within "$1" "${2-}" "$ALL_SCENARIOS"; SCENARIOS=$2; shift 2 ;;
    --ttfb-requests) posint "$1" "${2-}"; TTFB_REQUESTS=$2; shift 2 ;;
    --ttfb-ms) [[ ${2-} =~ ^[0-9]+$ ]] || die "--ttfb-ms wants milliseconds"; TTFB_MS=$2; shift 2 ;;
    --etagd-workers) posints "$1" "${2-}"; ETAGD_WORKERS=$2; shift 2 ;;
    --memcached-servers) posints "$1" "${2-}"; MC_SERVERS=$2; shift 2 ;;
    --nginx-workers) [[ ${2-} =~ ^(1|auto|probe)$ ]] || die "--nginx-workers wants 1, auto or probe"; NGINX_WORKERS=$2; shift 2 ;;
    --quiet-pct) [[ ${2-} =~ ^[0-9]+$ ]] || die "--quiet-pct wants a percentage"; QUIET_PCT=$2; shift 2 ;;
    --quiet-wait) [[ ${2-} =~ ^[0-9]+$ ]] || die "--quiet-wait wants seconds"; QUIET_WAIT=$2; shift 2 ;;
    --quiet-budget) [[ ${2-} =~ ^[0-9]+$ ]] || die "--quiet-budget wants seconds"; QUIET_BUDGET=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --keep-tmp) KEEP_TMP=1; shift ;;
    --out) [[ -n ${2-} ]] || die "--out wants a directory"; OUT=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option '$1'" ;;
  esac
done

# limit is a default server only where its source is: without it, a plain run measures everything else as before.
# Asked for by name, a missing source is an error.
if [[ -z $SERVERS ]]; then
  SERVERS=$ALL_SERVERS
  if [[ ! -f $LIMIT_SRC/Cargo.toml ]]; then
    SERVERS=${SERVERS/,limit/}
    echo "run.sh: leaving out limit (the ceiling stand-in): no Cargo.toml in LIMIT_SRC=$LIMIT_SRC" >&2
  fi
elif [[ ,$SERVERS, == *,limit,* && ! -f $LIMIT_SRC/Cargo.toml ]]; then
  die "--servers has limit, but its source is missing: no Cargo.toml in LIMIT_SRC=$LIMIT_SRC (set LIMIT_SRC to a copy of shared/reference/limit, or leave limit out)"
fi
((TTFB_MS <= 60000)) || die "--ttfb-ms wants at most 60000 (what demo-origin's /stream accepts)"
# Run order within a round is the canonical order, whatever order --scenarios gave.
ordered=""
for s in ${ALL_SCENARIOS//,/ }; do [[ ,$SCENARIOS, == *,"$s",* ]] && ordered+="${ordered:+,}$s"; done
SCENARIOS=$ordered
IFS=, read -r -a SERVER_LIST <<<"$SERVERS"
IFS=, read -r -a SCENARIO_LIST <<<"$SCENARIOS"
IFS=, read -r -a CONN_LIST <<<"$CONNECTIONS"
IFS=, read -r -a MC_LIST <<<"$MC_SERVERS"
if [[ -n $ETAGD_WORKERS ]]; then IFS=, read -r -a WORKER_LIST <<<"$ETAGD_WORKERS"; else WORKER_LIST=(""); fi
export PATH="$PATH:/usr/sbin:/sbin"

# --- dependencies and build -------------------------------------------------------------------------------------

bash "$REPO/bench/install-deps.sh"

ETAGD_BUILD_ERROR=""
# ETAGD_BIN from the environment benchmarks a binary built elsewhere; then only demo-origin is built here.
if [[ -n ${ETAGD_BIN-} ]]; then
  ETAGD_PACKAGES=()
else
  ETAGD_BIN="$TARGET_DIR/release/etagd"
  ETAGD_PACKAGES=(-p etagd)
fi
if ((BUILD)); then
  echo "run.sh: building release binaries"
  BUILD_LOG=$(mktemp /tmp/etagd-bench-build.XXXXXX)
  if ! (cd "$REPO" && cargo build --release -p etagd-demo-origin "${ETAGD_PACKAGES[@]}") 2>&1 | tee "$BUILD_LOG"; then
    # The sidecar may not compile while it is being written; the peers are still worth measuring, but a stale
    # etagd binary must not be benchmarked as if it were the current one.
    first_error=$(grep -m1 '^error' "$BUILD_LOG" | cut -c1-120 || true)
    ETAGD_BUILD_ERROR="cargo build --release -p etagd failed${first_error:+: $first_error}"
    (cd "$REPO" && cargo build --release -p etagd-demo-origin) || die "cannot build demo-origin"
  fi
  rm -f "$BUILD_LOG"
fi
ORIGIN_BIN="$TARGET_DIR/release/demo-origin"
[[ -x $ORIGIN_BIN ]] || die "$ORIGIN_BIN is missing; run without --no-build"

# The ceiling stand-in is a cargo project of its own, not a member of this workspace: it is copied outside the
# repo (the shared source is read-only) and built there with its own target dir.
LIMIT_BIN="$LIMIT_BUILD_DIR/target/release/limit"
LIMIT_BUILD_ERROR=""
if [[ ,$SERVERS, == *,limit,* ]]; then
  mkdir -p "$LIMIT_BUILD_DIR"
  if ! diff -rq -x target "$LIMIT_SRC" "$LIMIT_BUILD_DIR" >/dev/null 2>&1; then
    find "$LIMIT_BUILD_DIR" -mindepth 1 -maxdepth 1 ! -name target -exec rm -rf {} +
    # Writable copies, so that the next refresh can replace them.
    cp -r --no-preserve=mode "$LIMIT_SRC/." "$LIMIT_BUILD_DIR/"
  fi
  if ((BUILD)); then
    echo "run.sh: building limit from $LIMIT_SRC in $LIMIT_BUILD_DIR"
    LIMIT_LOG=$(mktemp /tmp/etagd-bench-limit-build.XXXXXX)
    if ! (cd "$LIMIT_BUILD_DIR" && env -u CARGO_TARGET_DIR cargo build --release) >"$LIMIT_LOG" 2>&1; then
      first_error=$(grep -m1 '^error' "$LIMIT_LOG" | cut -c1-120 || true)
      LIMIT_BUILD_ERROR="cargo build --release in $LIMIT_BUILD_DIR failed${first_error:+: $first_error} (log: $LIMIT_LOG)"
    else
      rm -f "$LIMIT_LOG"
    fi
  fi
fi

# --- run dirs, process bookkeeping, cleanup ---------------------------------------------------------------------

STAMP_DATE=$(date +%F)
STAMP_TIME=$(date +%H%M)
HOST=$(hostname -s 2>/dev/null || hostname)
OUT=${OUT:-"$REPO/bench/runs/$STAMP_DATE-$HOST-$STAMP_TIME"}
mkdir -p "$OUT"
RAW="$OUT/raw.csv"
rm -f "$RAW"
TMP=$(mktemp -d /tmp/etagd-bench.XXXXXX)
# varnishd's and nginx's unprivileged children must reach their work dirs inside.
chmod 755 "$TMP"
NOTES="$TMP/notes.tsv"
UNAVAILABLE="$TMP/unavailable.tsv"
: >"$NOTES"
: >"$UNAVAILABLE"
# nginx proxy_cache's files go to tmpfs when it is there (see nginx_conf), removed on exit like TMP.
NGINX_CACHE_ROOT=$TMP
if [[ -d /dev/shm && -w /dev/shm ]]; then NGINX_CACHE_ROOT=$(mktemp -d /dev/shm/etagd-bench-nginx.XXXXXX); fi
chmod 755 "$NGINX_CACHE_ROOT"
CLK_TCK=$(getconf CLK_TCK)
NPROC=$(nproc)

PIDS=()
SUCCESS=0
stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  wait 2>/dev/null || true
  [[ $NGINX_CACHE_ROOT == /dev/shm/* ]] && rm -rf "$NGINX_CACHE_ROOT"
  if ((SUCCESS && !KEEP_TMP)); then
    rm -rf "$TMP"
  else
    echo "run.sh: configs, logs and wrk output kept in $TMP" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_ports() { python3 "$HARNESS" free-ports "$1"; }

busy_jiffies() {
  local _cpu user nice system _idle _iowait irq softirq steal _rest
  read -r _cpu user nice system _idle _iowait irq softirq steal _rest </proc/stat
  echo $((user + nice + system + irq + softirq + steal))
}

# Sets VAR to the CPU jiffies of this shell's finished children (wrk, once waited for), from the `times`
# builtin. `times` must run in this shell, not in $(...), where it would see the subshell's children only.
children_jiffies() { # children_jiffies VAR
  times >"$TMP/.times"
  printf -v "$1" '%s' "$(awk -v hz="$CLK_TCK" 'NR == 2 {
    n = split($0, t, " "); total = 0
    for (i = 1; i <= n; i++) { split(t[i], ms, "m"); sub("s", "", ms[2]); total += ms[1] * 60 + ms[2] }
    printf "%d", total * hz + 0.5 }' "$TMP/.times")"
}

# Percentage of the whole machine (all CPUs) busy over half a second while no load is being generated.
background_pct() {
  local a b
  a=$(busy_jiffies)
  sleep 0.5
  b=$(busy_jiffies)
  echo $(((b - a) * 200 / (CLK_TCK * NPROC)))
}

# Waits until the machine is quiet and sets QUIET_RESULT to the last background percentage. Bounded twice: by
# --quiet-wait per run and by --quiet-budget over the whole script, after which it only samples.
QUIET_SPENT=0
wait_quiet() {
  local start=$SECONDS deadline pct warned=0
  deadline=$((SECONDS + QUIET_WAIT))
  ((QUIET_SPENT >= QUIET_BUDGET)) && deadline=$SECONDS
  while :; do
    pct=$(background_pct)
    if ((pct <= QUIET_PCT || SECONDS >= deadline)); then
      break
    fi
    if ((!warned)); then
      echo "  machine ${pct}% busy before the run; waiting up to ${QUIET_WAIT}s for <= ${QUIET_PCT}%" >&2
      warned=1
    fi
    sleep 1
  done
  QUIET_SPENT=$((QUIET_SPENT + SECONDS - start))
  QUIET_RESULT=$pct
}


# wait_port PORT PID SECONDS: true once something accepts on PORT, false if PID died or time ran out.
wait_port() {
  local port=$1 pid=$2 deadline=$((SECONDS + $3))
  while ((SECONDS < deadline)); do
    kill -0 "$pid" 2>/dev/null || return 1
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

unavailable() { # unavailable SERVER REASON
  printf '%s\t%s\n' "$1" "$2" >>"$UNAVAILABLE"
  echo "run.sh: $1 not available: $2" >&2
}
is_unavailable() { cut -f1 "$UNAVAILABLE" | grep -qxF -- "$1"; }

ROOT_USER=()
((EUID == 0)) && ROOT_USER=(-u root)

# Like Varnish's malloc: room for every object of a run, so that the misses of one round (miss-2k's small items,
# miss-ttfb's 8 MiB bodies) do not take the slab pages the next round's hits need.
MEMCACHED_MB=1024

# start_memcached NAME: prints the port. memcached cannot report a port it chose, so pick one and retry on a clash.
start_memcached() {
  local name=$1 _attempt port pid
  for _attempt in 1 2 3; do
    port=$(free_ports 1)
    memcached -l 127.0.0.1 -p "$port" -U 0 -m "$MEMCACHED_MB" -t 1 "${ROOT_USER[@]}" >"$TMP/$name.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    if wait_port "$port" "$pid" 10; then
      echo "$port"
      return 0
    fi
    stop_pid "$pid"
  done
  return 1
}

# Every long-running process is started in this shell (not in $(...)), so that PIDS is this shell's list.
MC_PORT_OUT="$TMP/.port"
memcached_into() { # memcached_into NAME VAR
  start_memcached "$1" >"$MC_PORT_OUT" || return 1
  printf -v "$2" '%s' "$(cat "$MC_PORT_OUT")"
}

declare -A PORT=()           # server -> port
declare -A PID_OF=()         # server -> pid of its main process, checked before every run
declare -A LOG_OF=()         # server -> its log, quoted when it dies
declare -A MC_OF=()          # server -> comma-separated memcached ports whose cmd_get is read
declare -A SCENARIOS_OF=()   # server -> scenarios it takes part in
SERVER_NAMES=()              # every server measured, in --servers order (etagd expanded per variant)

# --- origin -------------------------------------------------------------------------------------------------------

ORIGIN_PORT=$(free_ports 1)
"$ORIGIN_BIN" --listen "127.0.0.1:$ORIGIN_PORT" >"$TMP/origin.log" 2>&1 &
ORIGIN_PID=$!
PIDS+=("$ORIGIN_PID")
wait_port "$ORIGIN_PORT" "$ORIGIN_PID" 15 || die "demo-origin did not start; see $TMP/origin.log"
ORIGIN="http://127.0.0.1:$ORIGIN_PORT"

# --- nginx --------------------------------------------------------------------------------------------------------

nginx_conf() { # nginx_conf DIR PORT WORKERS KIND(proxy-cache|memcached) MC_PORT
  local dir=$1 port=$2 workers=$3 kind=$4 mc=${5-} user_line=""
  mkdir -p "$dir/cache" "$dir/tmp"
  ((EUID == 0)) && user_line="user root;"
  {
    cat <<EOF
# generated by bench/run.sh
$user_line
worker_processes $workers;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  keepalive_requests 1000000;
  # sendfile stays at nginx's default (off): on this machine it helped hit-64k a little but cost 2 KiB hits and
  # 304s about 20 %, and with tcp_nopush on (Debian's packaged config) hit-64k collapsed to under 1k req/s.
EOF
    if [[ $kind == proxy-cache ]]; then
      cat <<EOF
  # On tmpfs when there is one, like Varnish's malloc and memcached: miss-2k writes a cache file per request,
  # and disk writeback would be measured as another process's load. 64m of keys holds every miss of a run.
  proxy_cache_path $NGINX_CACHE_ROOT/$(basename "$dir") levels=1:2 keys_zone=bench:64m max_size=2g inactive=1h use_temp_path=off;
  upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 64; }
  gzip on;
  gzip_types application/json;
  gzip_proxied any;
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache bench;
      proxy_cache_valid 200 1h;
      proxy_cache_lock on;
      # hit-8m: the 8 MiB body is buffered to a temp file on its way into the cache (its default limit is 1024m,
      # stated here so the cached size does not depend on a default).
      proxy_max_temp_file_size 1024m;
      add_header X-Cache-Status \$upstream_cache_status;
    }
  }
}
EOF
    else
      cat <<EOF
  upstream mc { server 127.0.0.1:$mc; keepalive 64; }
  server {
    listen 127.0.0.1:$port;
    location / {
      set \$memcached_key "\$uri";
      memcached_pass mc;
      # One buffer must hold a whole item: with nginx's default (one page) a 64 KiB body is relayed in 4 KiB
      # pieces and hit-64k drops from about 24k to 6k req/s on this machine.
      memcached_buffer_size 128k;
      default_type application/octet-stream;
    }
  }
}
EOF
    fi
  } >"$dir/nginx.conf"
}

# start_nginx NAME KIND WORKERS [MC_PORT]: sets PORT[NAME] and NGINX_PID, or returns 1.
start_nginx() {
  local name=$1 kind=$2 workers=$3 mc=${4-} port dir
  port=$(free_ports 1)
  dir="$TMP/$name-$workers"
  nginx_conf "$dir" "$port" "$workers" "$kind" "$mc"
  nginx -t -q -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$dir/test.log" 2>&1 || {
    unavailable "$name" "nginx -t rejected the config: $(tail -n1 "$dir/test.log")"
    return 1
  }
  nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$dir/stdout.log" 2>&1 &
  NGINX_PID=$!
  PIDS+=("$NGINX_PID")
  if ! wait_port "$port" "$NGINX_PID" 15; then
    unavailable "$name" "nginx did not start: $(tail -n1 "$dir/error.log" 2>/dev/null)"
    return 1
  fi
  PORT[$name]=$port
  PID_OF[$name]=$NGINX_PID
  LOG_OF[$name]=$dir/error.log
}

# One wrk run, unrecorded; prints requests per second.
quick_rps() { # quick_rps URL SECONDS
  wrk -t"$THREADS" -c32 -d"$2" --timeout 2s "$1" 2>&1 | awk '/^Requests\/sec:/ {printf "%.0f", $2}'
}

wants() { [[ ,$SERVERS, == *,"$1",* ]]; }

NGINX_CHOICE=""
if wants nginx-proxy-cache || wants nginx-memcached; then
  NGINX_CHOICE=$NGINX_WORKERS
  if [[ $NGINX_WORKERS == probe ]]; then
    declare -A PROBE=()
    for w in 1 auto; do
      if start_nginx nginx-probe proxy-cache "$w"; then
        url="http://127.0.0.1:${PORT[nginx-probe]}/bytes/2048"
        curl -s -o /dev/null "$url" || true
        quick_rps "$url" 1 >/dev/null || true
        wait_quiet
        PROBE[$w]=$(quick_rps "$url" 2 || echo 0)
        stop_pid "$NGINX_PID"
      else
        PROBE[$w]=0
      fi
    done
    if ((${PROBE[auto]:-0} > ${PROBE[1]:-0})); then NGINX_CHOICE=auto; else NGINX_CHOICE=1; fi
    NGINX_PROBE="probe on hit-2k, 2 s each: worker_processes 1 = ${PROBE[1]:-0} req/s, auto = ${PROBE[auto]:-0} req/s; kept $NGINX_CHOICE"
    # The probe leaves no trace in the unavailable list; only the measured servers count there.
    sed -i '/^nginx-probe\t/d' "$UNAVAILABLE"
    echo "run.sh: nginx $NGINX_PROBE"
  fi
fi

# --- servers ------------------------------------------------------------------------------------------------------

# Large enough for every object of a run: hit-8m's body, and the misses of miss-2k in every round (a few KiB
# each), so a later round does not measure Varnish evicting.
VARNISH_MALLOC=1g

varnish_start() {
  local port dir
  port=$(free_ports 1)
  dir="$TMP/varnish"
  mkdir -p "$dir"
  cat >"$dir/bench.vcl" <<EOF
vcl 4.1;
# generated by bench/run.sh: cache what the origin marks public (Varnish's built-in VCL does the rest, including
# answering If-None-Match with 304 from a cached object that has an ETag).
import std;
backend origin {
  .host = "127.0.0.1";
  .port = "$ORIGIN_PORT";
}
sub vcl_backend_response {
  # JSON is stored gzipped (json-gzip, miss-2k), as Varnish users set it up. Varnish keeps one copy, so a body
  # over 1 MiB stays as sent: a gzipped 8 MiB object would be gunzipped for every identity client of hit-8m.
  if (beresp.http.Content-Type ~ "^application/json" && std.integer(beresp.http.Content-Length, 0) <= 1048576) {
    set beresp.do_gzip = true;
  }
}
EOF
  varnishd -F -n "$dir/work" -a "127.0.0.1:$port" -f "$dir/bench.vcl" -s "malloc,$VARNISH_MALLOC" -T none \
    >"$dir/varnishd.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  if ! wait_port "$port" "$pid" 30; then
    unavailable varnish "varnishd did not start: $(grep -v '^$' "$dir/varnishd.log" | tail -n1)"
    return 1
  fi
  PORT[varnish]=$port
  PID_OF[varnish]=$pid
  LOG_OF[varnish]=$dir/varnishd.log
}

ETAGD_HELP=""
# etagd_supports FLAG: whether the binary under test knows FLAG (ETAGD_BIN may be an older build).
etagd_supports() {
  [[ -n $ETAGD_HELP ]] || ETAGD_HELP=$("$ETAGD_BIN" --help 2>&1 || true)
  [[ $ETAGD_HELP == *"$1"* ]]
}

etagd_start() { # etagd_start NAME WORKERS MC_COUNT [EXTRA_ARGS...]
  local name=$1 workers=$2 count=$3 i mc port admin pid mc_ports="" mcport
  shift 3
  local extra=("$@")
  if [[ -n $ETAGD_BUILD_ERROR ]]; then
    unavailable "$name" "$ETAGD_BUILD_ERROR"
    return 1
  fi
  if [[ ! -x $ETAGD_BIN ]]; then
    unavailable "$name" "$ETAGD_BIN is missing"
    return 1
  fi
  mc=""
  for ((i = 1; i <= count; i++)); do
    memcached_into "$name-memcached-$i" mcport || {
      unavailable "$name" "its memcached did not start"
      return 1
    }
    mc+="${mc:+,}127.0.0.1:$mcport"
    mc_ports+="${mc_ports:+,}$mcport"
  done
  read -r port admin < <(free_ports 2)
  local args=(--listen "127.0.0.1:$port" --upstream "$ORIGIN" --memcached "$mc" --admin-listen "127.0.0.1:$admin")
  [[ -n $workers ]] && args+=(--workers "$workers")
  # The streamed miss and hit-8m need 8 MiB stored; say so explicitly, so a change of the default cannot make
  # them measure a pass-through.
  etagd_supports --max-body-bytes && args+=(--max-body-bytes "$ETAGD_MAX_BODY_BYTES")
  args+=("${extra[@]}")
  echo "$ETAGD_BIN ${args[*]}" >"$TMP/$name.cmd"
  "$ETAGD_BIN" "${args[@]}" >"$TMP/$name.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  if ! wait_port "$port" "$pid" 15; then
    local last
    last=$(grep -v '^$' "$TMP/$name.log" | tail -n1 | cut -c1-160)
    unavailable "$name" "$ETAGD_BIN did not start listening${last:+: $last}"
    return 1
  fi
  PORT[$name]=$port
  PID_OF[$name]=$pid
  LOG_OF[$name]=$TMP/$name.log
  MC_OF[$name]=$mc_ports
}

limit_start() {
  local port admin pid mcport deadline
  if [[ -n $LIMIT_BUILD_ERROR ]]; then
    unavailable limit "$LIMIT_BUILD_ERROR"
    return 1
  fi
  if [[ ! -x $LIMIT_BIN ]]; then
    unavailable limit "$LIMIT_BIN is missing; run without --no-build"
    return 1
  fi
  memcached_into limit-memcached mcport || {
    unavailable limit "its memcached did not start"
    return 1
  }
  read -r port admin < <(free_ports 2)
  local args=(--listen "127.0.0.1:$port" --upstream "$ORIGIN" --memcached "127.0.0.1:$mcport"
    --admin-listen "127.0.0.1:$admin" --mode batched --threads 1)
  echo "$LIMIT_BIN ${args[*]}" >"$TMP/limit.cmd"
  "$LIMIT_BIN" "${args[@]}" >"$TMP/limit.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  # It binds before it fetches its bodies and stores their validators; it is ready once it says it listens.
  deadline=$((SECONDS + 30))
  until grep -q 'listening on' "$TMP/limit.log" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); then
      unavailable limit "it did not start: $(grep -v '^$' "$TMP/limit.log" | tail -n1 | cut -c1-160)"
      return 1
    fi
    sleep 0.1
  done
  PORT[limit]=$port
  PID_OF[limit]=$pid
  LOG_OF[limit]=$TMP/limit.log
  MC_OF[limit]=$mcport
}

# only LIST / except LIST: the chosen scenarios that are / are not in LIST.
only() {
  local s out=""
  for s in "${SCENARIO_LIST[@]}"; do [[ ,$1, == *,"$s",* ]] && out+="${out:+,}$s"; done
  echo "$out"
}
except() {
  local s out=""
  for s in "${SCENARIO_LIST[@]}"; do [[ ,$1, == *,"$s",* ]] || out+="${out:+,}$s"; done
  echo "$out"
}

# Bodies up to a quarter of the body cache are kept in process, so 4 MiB keeps 2 KiB and 64 KiB bodies but not
# the 8 MiB one: hit-8m then reads its chunks from Memcached on every request.
SMALL_BODY_CACHE_BYTES=4194304
ETAGD_MAX_BODY_BYTES=67108864

for server in "${SERVER_LIST[@]}"; do
  case $server in
    origin)
      PORT[origin]=$ORIGIN_PORT
      PID_OF[origin]=$ORIGIN_PID
      LOG_OF[origin]=$TMP/origin.log
      SERVER_NAMES+=(origin)
      SCENARIOS_OF[origin]=$SCENARIOS
      ;;
    etagd)
      for w in "${WORKER_LIST[@]}"; do
        for m in "${MC_LIST[@]}"; do
          name=etagd
          ((${#WORKER_LIST[@]} > 1 || ${#MC_LIST[@]} > 1)) && name="etagd-w${w:-default}-mc$m"
          SERVER_NAMES+=("$name")
          SCENARIOS_OF[$name]=$SCENARIOS
          etagd_start "$name" "$w" "$m" || true
        done
      done
      ;;
    etagd-small-body-cache)
      SCENARIOS_OF[$server]=$(only hit-8m)
      [[ -n ${SCENARIOS_OF[$server]} ]] || continue
      SERVER_NAMES+=("$server")
      if [[ -z $ETAGD_BUILD_ERROR && -x $ETAGD_BIN ]] && ! etagd_supports --body-cache-bytes; then
        unavailable "$server" "$ETAGD_BIN has no --body-cache-bytes"
      else
        etagd_start "$server" "${WORKER_LIST[0]}" "${MC_LIST[0]}" --body-cache-bytes "$SMALL_BODY_CACHE_BYTES" || true
      fi
      ;;
    limit)
      SCENARIOS_OF[limit]=$(only "$LIMIT_SCENARIOS")
      [[ -n ${SCENARIOS_OF[limit]} ]] || continue
      SERVER_NAMES+=(limit)
      limit_start || true
      ;;
    varnish)
      SERVER_NAMES+=(varnish)
      SCENARIOS_OF[varnish]=$(except miss-ttfb)
      varnish_start || true
      ;;
    nginx-proxy-cache)
      SERVER_NAMES+=(nginx-proxy-cache)
      SCENARIOS_OF[nginx-proxy-cache]=$(except miss-ttfb)
      start_nginx nginx-proxy-cache proxy-cache "$NGINX_CHOICE" || true
      ;;
    nginx-memcached)
      SERVER_NAMES+=(nginx-memcached)
      # memcached_pass serves bodies only: no validators, no compression, and it holds only the two bodies stored
      # below (8 MiB is past a memcached item), so only hit-2k and hit-64k apply.
      SCENARIOS_OF[nginx-memcached]=$(only hit-2k,hit-64k)
      if memcached_into nginx-memcached-store NGINX_MC_PORT; then
        MC_OF[nginx-memcached]=$NGINX_MC_PORT
        if python3 "$HARNESS" mc-set "$NGINX_MC_PORT" /bytes/2048 "$ORIGIN/bytes/2048" &&
          python3 "$HARNESS" mc-set "$NGINX_MC_PORT" /bytes/65536 "$ORIGIN/bytes/65536"; then
          start_nginx nginx-memcached memcached "$NGINX_CHOICE" "$NGINX_MC_PORT" || true
        else
          unavailable nginx-memcached "could not pre-populate its memcached"
        fi
      else
        unavailable nginx-memcached "its memcached did not start"
      fi
      ;;
  esac
done

# --- metadata -----------------------------------------------------------------------------------------------------

version_of() { "$@" 2>&1 | head -n1 | tr -d '\r' || true; }
COMMIT=$(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$REPO" status --porcelain 2>/dev/null | head -n1) ]]; then COMMIT+=" (with uncommitted changes)"; fi
{
  echo "command=$COMMAND_LINE"
  echo "commit=$COMMIT"
  echo "started=$(date '+%F %T %Z')"
  echo "nproc=$(nproc)"
  echo "cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "kernel=$(uname -r)"
  echo "mem=$(awk '/^MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo)"
  echo "versions=$(version_of varnishd -V | sed 's/ revision.*)/)/'); $(version_of nginx -v | sed 's/^nginx version: //'); memcached $(memcached -V | awk '{print $2}'); $(version_of wrk -v | awk '{print $1, $2}'); Python $(python3 -c 'import platform; print(platform.python_version())')"
  echo "rounds=$ROUNDS"
  echo "duration=$DURATION"
  echo "warmup=$WARMUP"
  echo "threads=$THREADS"
  echo "quiet_pct=$QUIET_PCT"
  settings="memcached -U 0 -m $MEMCACHED_MB -t 1 (one per etagd variant x --memcached-servers, one for limit, one for nginx-memcached); varnishd -s malloc,$VARNISH_MALLOC, default thread pools, JSON up to 1 MiB stored gzipped; nginx worker_processes $NGINX_CHOICE, proxy_cache files in $(dirname "$NGINX_CACHE_ROOT")"
  [[ -n ${NGINX_PROBE-} ]] && settings+=" ($NGINX_PROBE)"
  settings+="; demo-origin with default tokio workers (one per CPU)"
  [[ -n $ETAGD_WORKERS ]] && settings+="; etagd --workers $ETAGD_WORKERS"
  [[ -x $ETAGD_BIN ]] && etagd_supports --max-body-bytes && settings+="; etagd --max-body-bytes $ETAGD_MAX_BODY_BYTES"
  [[ ,$SERVERS, == *,etagd-small-body-cache,* ]] && settings+="; etagd-small-body-cache: --body-cache-bytes $SMALL_BODY_CACHE_BYTES"
  [[ ,$SERVERS, == *,limit,* ]] && settings+="; limit (the ceiling stand-in, from $LIMIT_SRC) --mode batched --threads 1, on /b2k.json and /b64k.json"
  [[ ,$SCENARIOS, == *,miss-ttfb,* ]] && settings+="; miss-ttfb: $TTFB_REQUESTS sequential misses per server and round on /stream/8388608?ms=$TTFB_MS"
  echo "settings=$settings"
} >"$TMP/meta.env"

# --- measurement --------------------------------------------------------------------------------------------------

measure() { # measure ROUND SERVER SCENARIO CONNECTIONS
  local round=$1 server=$2 scenario=$3 c=$4 lua out note rc before after gets="" g0="" g1="" quiet
  local pid=${PID_OF[$server]-}
  if [[ -n $pid ]] && ! is_unavailable "$server" && ! kill -0 "$pid" 2>/dev/null; then
    # Rows measured before it died stay; the rest are recorded as not available, never silently dropped.
    unavailable "$server" "exited during round $round, before $scenario at c=$c: $(grep -v '^$' "${LOG_OF[$server]}" 2>/dev/null | tail -n1 | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-160)"
  fi
  if is_unavailable "$server"; then
    python3 "$HARNESS" row --raw "$RAW" --round "$round" --server "$server" --scenario "$scenario" \
      --connections "$c" --unavailable
    return 0
  fi
  local url="http://127.0.0.1:${PORT[$server]}"
  lua="$TMP/$server-$scenario.lua"
  out="$TMP/wrk-r$round-$server-$scenario-c$c.txt"
  rc=0
  note=$(python3 "$HARNESS" prepare "$scenario" "$url" "$lua" --server "$server") || rc=$?
  printf '%s\t%s\t%s\n' "$server" "$scenario" "$note" >>"$NOTES"
  if ((rc != 0)); then
    ((rc == 3)) || note="warm-up helper failed (exit $rc)"
    python3 "$HARNESS" row --raw "$RAW" --round "$round" --server "$server" --scenario "$scenario" \
      --connections "$c" --skipped "$note"
    return 0
  fi
  # An 8 MiB answer to each of 32 connections at once takes longer than the 2 s that flags a small one as lost.
  local wrk_timeout=2s
  [[ $scenario == hit-8m ]] && wrk_timeout=10s
  # BENCH_PHASE keeps the warm-up's URLs apart from the measured run's in miss-2k (see harness.py).
  if ((WARMUP > 0)); then
    BENCH_PHASE=w timeout $((WARMUP + 30)) wrk -t"$THREADS" -c"$c" -d"$WARMUP" --timeout "$wrk_timeout" -s "$lua" \
      "$url/" >/dev/null 2>&1 || true
  fi
  wait_quiet
  quiet=$QUIET_RESULT
  [[ -n ${MC_OF[$server]-} ]] && g0=$(python3 "$HARNESS" mc-gets "${MC_OF[$server]}" 2>/dev/null || echo "")
  # Interference check: the machine's busy time minus what this harness's processes used (servers and
  # memcached from /proc/<pid>/stat of every descendant of this shell; wrk from `times` once it has exited).
  # Softirq work for loopback traffic is charged to the process it interrupts, so the two sides add up.
  local own0 own1 kids0 kids1
  own0=$(python3 "$HARNESS" tree-jiffies $$)
  children_jiffies kids0
  before=$(busy_jiffies)
  BENCH_PHASE=m timeout $((DURATION + 30)) wrk -t"$THREADS" -c"$c" -d"$DURATION" --timeout "$wrk_timeout" --latency \
    -s "$lua" "$url/" >"$out" 2>&1 || true
  after=$(busy_jiffies)
  children_jiffies kids1
  own1=$(python3 "$HARNESS" tree-jiffies $$)
  [[ -n ${MC_OF[$server]-} ]] && g1=$(python3 "$HARNESS" mc-gets "${MC_OF[$server]}" 2>/dev/null || echo "")
  [[ -n $g0 && -n $g1 ]] && gets=$((g1 - g0))
  python3 "$HARNESS" row --raw "$RAW" --round "$round" --server "$server" --scenario "$scenario" \
    --connections "$c" --wrk-out "$out" --busy-jiffies $((after - before)) --clk-tck "$CLK_TCK" --gets "$gets" \
    --background-pct "$quiet" --nproc "$NPROC" \
    --foreign-jiffies $(((after - before) - (own1 - own0) - (kids1 - kids0)))
}

# Time to first byte of a miss: sequential requests, not wrk, into ttfb.csv; not a function of --connections.
measure_ttfb() { # measure_ttfb ROUND SERVER
  local round=$1 server=$2 pid=${PID_OF[$2]-}
  if [[ -n $pid ]] && ! is_unavailable "$server" && ! kill -0 "$pid" 2>/dev/null; then
    unavailable "$server" "exited during round $round, before miss-ttfb: $(grep -v '^$' "${LOG_OF[$server]}" 2>/dev/null | tail -n1 | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-160)"
  fi
  is_unavailable "$server" && return 0
  wait_quiet
  python3 "$HARNESS" ttfb --csv "$OUT/ttfb.csv" --round "$round" --server "$server" \
    --url "http://127.0.0.1:${PORT[$server]}" --path "/stream/8388608?ms=$TTFB_MS" --requests "$TTFB_REQUESTS" \
    --timeout $((TTFB_MS / 1000 + 30)) --expect-from "$ORIGIN/json/8388608" --background-pct "$QUIET_RESULT" ||
    echo "run.sh: miss-ttfb helper failed for $server in round $round" >&2
}

rm -f "$OUT/ttfb.csv"
n=${#SERVER_NAMES[@]}
for ((round = 1; round <= ROUNDS; round++)); do
  echo "run.sh: round $round/$ROUNDS"
  for c in "${CONN_LIST[@]}"; do
    for scenario in "${SCENARIO_LIST[@]}"; do
      [[ $scenario == miss-ttfb && $c != "${CONN_LIST[0]}" ]] && continue
      for ((i = 0; i < n; i++)); do
        server=${SERVER_NAMES[$(((i + round - 1) % n))]}
        [[ ,${SCENARIOS_OF[$server]}, == *,"$scenario",* ]] || continue
        if [[ $scenario == miss-ttfb ]]; then
          measure_ttfb "$round" "$server"
        else
          measure "$round" "$server" "$scenario" "$c"
        fi
      done
    done
  done
done

echo "finished=$(date '+%F %T %Z')" >>"$TMP/meta.env"
cp "$TMP/meta.env" "$TMP/notes.tsv" "$TMP/unavailable.tsv" "$OUT/"
# meta.env, notes.tsv and unavailable.tsv stay beside raw.csv so that `bench/harness.py summary DIR` can rebuild
# summary.md later (for example after changing the report's layout).
python3 "$HARNESS" summary "$OUT" >/dev/null
SUCCESS=1
echo "run.sh: wrote $OUT/raw.csv and $OUT/summary.md"
