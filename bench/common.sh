# Shared set-up for the single-purpose bench scripts (memory.sh, tagged.sh): peers installed, release binaries
# built, a temp dir, and every started process stopped on exit. Source it; it sets REPO, BIN_DIR (the release
# binaries, under CARGO_TARGET_DIR when that is set), TMP, PIDS and as_root.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN_DIR="${CARGO_TARGET_DIR:-$REPO/target}/release"
"$REPO/bench/install-deps.sh" >/dev/null
cargo build --release -q -p etagd -p etagd-demo-origin --manifest-path "$REPO/Cargo.toml"
TMP=$(mktemp -d /tmp/etagd-bench-script.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
as_root=()
[ "$(id -u)" -eq 0 ] && as_root=(-u root)

# free_ports N: N free loopback ports on one line.
free_ports() { python3 "$REPO/bench/harness.py" free-ports "$1" | tr '\n' ' '; }
