#!/usr/bin/env bash
# Builds the container image and runs docker-compose.yml for real with podman, then checks the fleet from the
# host through nginx's published loopback port and removes everything it started:
#
#   1. tools: Debian's podman (with runc, netavark, aardvark-dns) and mmdebstrap, podman-compose from PyPI (pinned
#      in deploy/podman/requirements.txt, in its own venv under ~/.cache/etagd/);
#   2. base images from Debian's packages, since no image registry can be reached: mmdebstrap unpacks the packages
#      (variant `extract`: no maintainer scripts, no shell needed) and `podman import` loads the tarball:
#        localhost/etagd-runtime-base:bookworm  glibc, libgcc, tzdata, CA certificates, the nonroot user (65532),
#                                               standing in for gcr.io/distroless/cc-debian12:nonroot
#        localhost/etagd-memcached:bookworm     Debian's memcached, for the compose file's memcached:1.6
#        localhost/etagd-nginx:bookworm         Debian's nginx-light, for the compose file's nginx:1.27
#   3. the binaries with cargo on the host (Debian 12, the runtime base's glibc), and etagd:local from
#      deploy/Dockerfile's runtime stage (`--build-arg BINARIES=prebuilt`);
#   4. `podman-compose up` on docker-compose.yml (its own network; ports published on 127.0.0.1 only), then, through
#      nginx: both replicas answer with the same ETag, If-None-Match earns a 304, and a POST through one replica
#      invalidates the entry for the other;
#   5. `podman-compose down`, on success or failure.
#
# podman runs as root with deploy/podman/containers.conf (CONTAINERS_CONF), which says why each setting is needed.
# Needs root (podman and mmdebstrap run as root here) and network access to Debian's and PyPI's registries on first
# run. Set CARGO_TARGET_DIR as for any cargo command.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
START=$SECONDS
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/etagd/compose-fleet"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
WORK="$TARGET/compose-fleet"
SUITE=bookworm
export CONTAINERS_CONF="$ROOT/deploy/podman/containers.conf"
# Compose's project name is the file's `name:`; podman-compose names containers <project>_<service>_1.
PROJECT=etagd-demo

step() { printf '\n== %s (%ss)\n' "$*" "$((SECONDS - START))"; }
die() {
    echo "compose-fleet: $*" >&2
    exit 1
}

if [[ "$(id -u)" -ne 0 ]]; then
    die "run as root: podman runs rootful here and mmdebstrap needs root to unpack packages"
fi

# --- 1. tools ----------------------------------------------------------------------------------------------------
step "tools"
# iptables: netavark sets up the bridge and the published ports with it ("netavark: No such file or directory"
# when missing; it is only a Recommends of netavark).
APT_PACKAGES=(podman runc netavark aardvark-dns iptables mmdebstrap curl)
missing=()
for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "installing ${missing[*]} from Debian"
    # A fresh machine has no package lists yet.
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
REQUIREMENTS=deploy/podman/requirements.txt
VENV="$CACHE/venv-$(cat "$REQUIREMENTS" <(python3 --version) | sha256sum | cut -c1-16)"
if [[ ! -f "$VENV/.complete" ]]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$REQUIREMENTS"
    touch "$VENV/.complete"
fi
COMPOSE=("$VENV/bin/podman-compose" --podman-path podman -f docker-compose.yml)
echo "$(podman --version), $(runc --version | head -1), mmdebstrap $(mmdebstrap --version | awk '{print $2}'), \
podman-compose $("$VENV/bin/podman-compose" --version 2>/dev/null | awk '/podman-compose/ {print $NF}')"

# --- 2. base images ----------------------------------------------------------------------------------------------
# Removes the image this script made under that name before, now that the name points at a new one.
forget() {
    local image="$1" previous="$2"
    if [[ -n "$previous" && "$previous" != "$(podman image inspect --format '{{.Id}}' "$image")" ]]; then
        podman rmi "$previous" >/dev/null 2>&1 || true
    fi
}
# extract unpacks the named packages and their dependencies without running maintainer scripts (and without
# mmdebstrap's customize hooks), so what those scripts would create (users, log and state directories, the CA
# bundle) is made here, in the unpacked tree, before it is packed for `podman import`.
base_image() {
    local image="$1" packages="$2"
    shift 2
    # Made anew on every run (a few seconds each), so a changed recipe can never leave a stale base in use.
    local previous
    previous="$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)"
    local rootfs="$WORK/rootfs"
    rm -rf "$rootfs"
    mkdir -p "$rootfs"
    mmdebstrap --quiet --variant=extract --format=directory --include="$packages" "$SUITE" "$rootfs"
    mkdir -p -m 1777 "$rootfs/tmp"
    mkdir -p "$rootfs/home/nonroot" "$rootfs/var/log/nginx" "$rootfs/var/lib/nginx"
    chown 65532:65532 "$rootfs/home/nonroot"
    # root, the distroless `nonroot` user, and the users Debian's memcached and nginx run as.
    printf '%s\n' "root:x:0:0:root:/root:/usr/sbin/nologin" \
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin" \
        "www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin" \
        "memcache:x:11211:11211:memcached:/nonexistent:/usr/sbin/nologin" \
        "nonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin" >"$rootfs/etc/passwd"
    printf '%s\n' root:x:0: nogroup:x:65534: www-data:x:33: memcache:x:11211: nonroot:x:65532: >"$rootfs/etc/group"
    printf '%s\n' "passwd: files" "group: files" "hosts: files dns" >"$rootfs/etc/nsswitch.conf"
    if [[ -d "$rootfs/usr/share/ca-certificates/mozilla" ]]; then
        mkdir -p "$rootfs/etc/ssl/certs"
        cat "$rootfs"/usr/share/ca-certificates/mozilla/*.crt >"$rootfs/etc/ssl/certs/ca-certificates.crt"
    fi
    # mmdebstrap's apt state is no part of an image.
    rm -rf "$rootfs/var/lib/apt/lists" "$rootfs/var/cache/apt" "$rootfs/etc/apt"
    tar -C "$rootfs" -c . | podman import --quiet "$@" - "$image" >/dev/null
    rm -rf "$rootfs"
    forget "$image" "$previous"
    echo "$image: made from Debian $SUITE ($packages)"
}
step "base images from Debian's packages"
base_image localhost/etagd-runtime-base:bookworm libc6,libgcc-s1,tzdata,netbase,ca-certificates
base_image localhost/etagd-memcached:bookworm memcached \
    --change 'USER 11211:11211' --change 'ENTRYPOINT ["/usr/bin/memcached"]'
# -e stderr: the compiled-in error log path is opened before nginx.conf is read.
base_image localhost/etagd-nginx:bookworm nginx-light \
    --change 'ENTRYPOINT ["/usr/sbin/nginx", "-e", "stderr", "-g", "daemon off;"]'

# --- 3. the etagd image ------------------------------------------------------------------------------------------
step "binaries (cargo build --release) and etagd:local from deploy/Dockerfile"
nice -n 10 cargo build --release --locked -p etagd -p etagctl -p etagd-demo-origin
CONTEXT="$WORK/context"
rm -rf "$CONTEXT"
mkdir -p "$CONTEXT/bin"
cp "$TARGET/release/etagd" "$TARGET/release/etagctl" "$TARGET/release/demo-origin" "$CONTEXT/bin/"
previous="$(podman image inspect --format '{{.Id}}' etagd:local 2>/dev/null || true)"
podman build --quiet -f deploy/Dockerfile --target runtime \
    --build-arg BINARIES=prebuilt --build-arg RUNTIME_IMAGE=localhost/etagd-runtime-base:bookworm \
    -t etagd:local "$CONTEXT" >/dev/null
forget etagd:local "$previous"
podman run --rm --network=none etagd:local --version
podman run --rm --network=none --entrypoint /usr/local/bin/etagctl etagd:local --version

# --- 4. the compose fleet ----------------------------------------------------------------------------------------
# The published host ports: free ones, so that a developer's own etagd on 8080 does not collide.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export ETAGD_DEMO_PORT ETAGD_DEMO_APP1_PORT ETAGD_DEMO_APP1_ADMIN_PORT ETAGD_DEMO_APP2_PORT ETAGD_DEMO_APP2_ADMIN_PORT
ETAGD_DEMO_PORT=$(free_port)
ETAGD_DEMO_APP1_PORT=$(free_port)
ETAGD_DEMO_APP1_ADMIN_PORT=$(free_port)
ETAGD_DEMO_APP2_PORT=$(free_port)
ETAGD_DEMO_APP2_ADMIN_PORT=$(free_port)
export MEMCACHED_IMAGE=localhost/etagd-memcached:bookworm NGINX_IMAGE=localhost/etagd-nginx:bookworm
# The demo view sleeps 1.5 s per origin request; the checks below only need it to be slower than a hit.
down() {
    step "podman-compose down"
    "${COMPOSE[@]}" down --volumes --timeout 5 >"$WORK/down.log" 2>&1 || cat "$WORK/down.log" >&2
    local left
    left="$(podman ps -a --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}}')"
    if [[ -n "$left" ]]; then
        echo "compose-fleet: containers left after down: $left" >&2
        return 1
    fi
    if podman network exists "${PROJECT}_default"; then
        podman network rm -f "${PROJECT}_default" >/dev/null
    fi
    echo "removed the fleet's containers and network"
}
step "podman-compose up (nginx on 127.0.0.1:$ETAGD_DEMO_PORT)"
"${COMPOSE[@]}" down --volumes --timeout 5 >/dev/null 2>&1 || true
trap 'status=$?; down || true; exit $status' EXIT
# Bounded: podman-compose waits for each dependency to be running, forever if one cannot start.
timeout 300 "${COMPOSE[@]}" up -d --no-build >"$WORK/up.log" 2>&1 || {
    cat "$WORK/up.log" >&2
    die "podman-compose up failed"
}
podman ps --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}}  {{.Image}}  {{.Status}}  {{.Ports}}'

NGINX_URL="http://127.0.0.1:$ETAGD_DEMO_PORT"
logs() {
    for container in $(podman ps -a --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}}'); do
        echo "--- $container" >&2
        podman logs --tail 20 "$container" >&2 2>&1 || true
    done
}
fail() {
    echo "compose-fleet: FAILED: $*" >&2
    logs
    exit 1
}
# Both sidecars ready (their admin ports, published on loopback), then nginx answering.
for port in "$ETAGD_DEMO_APP1_ADMIN_PORT" "$ETAGD_DEMO_APP2_ADMIN_PORT"; do
    for _ in $(seq 1 60); do
        curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null && break
        sleep 0.5
    done
    curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" || fail "etagd's /readyz on 127.0.0.1:$port"
done
for _ in $(seq 1 60); do
    curl -fsS -o /dev/null "$NGINX_URL/healthz" 2>/dev/null && break
    sleep 0.5
done

# One request through nginx: prints "status upstream etag cache-status" (headers dumped to a file).
request() {
    local method="$1" path="$2"
    shift 2
    local headers="$WORK/headers"
    local status
    status="$(curl -sS -o /dev/null -D "$headers" -w '%{http_code}' -X "$method" "$@" "$NGINX_URL$path")"
    header() { awk -v name="$1:" 'tolower($1) == name { sub(/\r$/, ""); $1 = ""; sub(/^ /, ""); print }' "$headers"; }
    printf '%s|%s|%s|%s\n' "$status" "$(header x-etagd-upstream)" "$(header etag)" "$(header cache-status)"
}
field() { cut -d'|' -f"$1" <<<"$2"; }

step "checks through nginx"
# nginx round-robins, so consecutive requests alternate between the replicas; keep going until both answered.
declare -A ETAG_BY_UPSTREAM=()
for _ in 1 2 3 4; do
    reply="$(request GET /api/servers)"
    echo "GET /api/servers: $reply"
    [[ "$(field 1 "$reply")" == 200 ]] || fail "GET /api/servers answered $(field 1 "$reply")"
    ETAG_BY_UPSTREAM["$(field 2 "$reply")"]="$(field 3 "$reply")"
done
((${#ETAG_BY_UPSTREAM[@]} == 2)) || fail "nginx reached ${#ETAG_BY_UPSTREAM[@]} replica(s), not 2: ${!ETAG_BY_UPSTREAM[*]}"
etags="$(printf '%s\n' "${ETAG_BY_UPSTREAM[@]}" | sort -u)"
[[ -n "$etags" && "$(wc -l <<<"$etags")" -eq 1 ]] || fail "the replicas answered different ETags: $etags"
ETAG="$etags"
echo "ok: both replicas (${!ETAG_BY_UPSTREAM[*]}) answer with ETag $ETAG"

for _ in 1 2; do
    reply="$(request GET /api/servers -H "If-None-Match: $ETAG")"
    echo "GET /api/servers If-None-Match: $reply"
    [[ "$(field 1 "$reply")" == 304 ]] || fail "revalidation through $(field 2 "$reply") answered $(field 1 "$reply"), not 304"
done
echo "ok: If-None-Match $ETAG earns a 304 from both replicas"

reply="$(request POST /api/servers -H 'content-type: application/json' --data '{"hostname": "compose-fleet.test"}')"
echo "POST /api/servers: $reply"
[[ "$(field 1 "$reply")" == 201 ]] || fail "POST /api/servers answered $(field 1 "$reply"), not 201"
POSTED_TO="$(field 2 "$reply")"
# The next request goes to the other replica (round-robin); look for its answer.
for _ in 1 2 3; do
    reply="$(request GET /api/servers -H "If-None-Match: $ETAG")"
    echo "GET /api/servers If-None-Match: $reply"
    [[ "$(field 2 "$reply")" != "$POSTED_TO" ]] && break
done
[[ "$(field 2 "$reply")" != "$POSTED_TO" ]] || fail "no request reached the replica the POST did not go through"
[[ "$(field 1 "$reply")" == 200 ]] ||
    fail "after the POST through $POSTED_TO, $(field 2 "$reply") still answered $(field 1 "$reply") to the old ETag"
[[ "$(field 3 "$reply")" != "$ETAG" ]] || fail "after the POST, $(field 2 "$reply") still serves ETag $ETAG"
[[ "$(field 4 "$reply")" != *hit* ]] || fail "after the POST, $(field 2 "$reply") answered from the cache: $(field 4 "$reply")"
echo "ok: a POST through $POSTED_TO invalidated the entry for $(field 2 "$reply") (new ETag $(field 3 "$reply"))"

trap - EXIT
down
echo
echo "compose-fleet: image built, fleet ran and passed its checks in $((SECONDS - START))s"
