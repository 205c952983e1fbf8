#!/usr/bin/env bash
# Installs the external programs the test suites start, when they are missing. Idempotent: a program already
# on PATH (or in /usr/sbin, which a non-root PATH often lacks) is left alone, and apt-get runs (after one
# `apt-get update`) only when something is missing.
#
# To add a dependency, add a "command package" line to DEPS.
#
# Prometheus (prometheus, promtool) is not installed system-wide: Debian's package would start a server on
# 0.0.0.0:9090 where an init system runs. Its .deb is unpacked under ~/.cache/etagd/prometheus instead, where the
# Prometheus end-to-end test and scripts/check-prometheus.sh look for it (PROMETHEUS_DIR overrides the place).
set -euo pipefail

PROMETHEUS_DIR="${PROMETHEUS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/etagd/prometheus}"
if [ -x "$PROMETHEUS_DIR/usr/bin/prometheus" ] && [ -x "$PROMETHEUS_DIR/usr/bin/promtool" ]; then
  echo "test deps: prometheus found at $PROMETHEUS_DIR/usr/bin/prometheus"
else
  echo "test deps: unpacking Debian's prometheus package into $PROMETHEUS_DIR"
  rm -rf "$PROMETHEUS_DIR" "$PROMETHEUS_DIR-deb"
  mkdir -p "$PROMETHEUS_DIR-deb"
  # apt-get download needs package lists; a fresh machine may have none yet.
  if ! (cd "$PROMETHEUS_DIR-deb" && apt-get download -qq prometheus 2>/dev/null); then
    apt-get update -qq
    (cd "$PROMETHEUS_DIR-deb" && apt-get download -qq prometheus)
  fi
  dpkg-deb -x "$PROMETHEUS_DIR-deb"/prometheus_*.deb "$PROMETHEUS_DIR"
  rm -rf "$PROMETHEUS_DIR-deb"
  "$PROMETHEUS_DIR/usr/bin/prometheus" --version 2>&1 | head -1
fi

# command-on-PATH-or-in-/usr/sbin  Debian-package
DEPS=(
  "memcached memcached"
  "nginx nginx"
)

missing=()
for dep in "${DEPS[@]}"; do
  read -r command package <<<"$dep"
  if command -v "$command" >/dev/null 2>&1; then
    echo "test deps: $command found at $(command -v "$command")"
  elif test -x "/usr/sbin/$command"; then
    echo "test deps: $command found at /usr/sbin/$command"
  else
    missing+=("$package")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "test deps: missing ${missing[*]} and apt-get is not available; install them with your package manager" >&2
  exit 1
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
  else
    echo "test deps: missing ${missing[*]}; run this script as root or install sudo" >&2
    exit 1
  fi
fi

echo "test deps: installing ${missing[*]}"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
