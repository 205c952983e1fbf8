#!/usr/bin/env bash
# Installs the external programs the test suites start, when they are missing. Idempotent: a program already
# on PATH (or in /usr/sbin, which a non-root PATH often lacks) is left alone, and apt-get runs (after one
# `apt-get update`) only when something is missing.
#
# To add a dependency, add a "command package" line to DEPS.
set -euo pipefail

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
