#!/usr/bin/env bash
# Installs what bench/run.sh needs, from Debian's packages, only when something is missing:
#   varnishd (varnish), nginx (nginx, with its built-in memcached and gzip modules), wrk, memcached, python3, curl,
#   and strace for `SYSCALLS=1 bench/profile.sh`.
# Idempotent: with everything present it changes nothing and runs no apt-get at all.
set -euo pipefail

# command -> Debian package that provides it
declare -A wanted=(
  [varnishd]=varnish
  [nginx]=nginx
  [wrk]=wrk
  [memcached]=memcached
  [python3]=python3
  [curl]=curl
  [strace]=strace
)

missing=()
for cmd in "${!wanted[@]}"; do
  # varnishd and nginx live in /usr/sbin, which a non-login shell may not have on PATH.
  if ! command -v "$cmd" >/dev/null 2>&1 && [[ ! -x /usr/sbin/$cmd ]]; then
    missing+=("${wanted[$cmd]}")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: varnishd, nginx, wrk, memcached, python3, curl and strace are already installed"
  exit 0
fi

sudo=()
if ((EUID != 0)); then
  sudo=(sudo)
fi

echo "install-deps: installing ${missing[*]}"
"${sudo[@]}" apt-get update
# policy-rc.d is not touched: the packages may try to start their system services, which the harness never uses
# (it runs its own instances on free loopback ports); a failure to start them does not fail the install.
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
