#!/usr/bin/env bash
# Builds the landed release's etagd (the one a rolling upgrade starts from) for the side-by-side upgrade test
# (tests/e2e/upgrade.rs), once: the binary is kept under ~/.cache/etagd/landed-<commit>/ and reused.
#
# The release is pinned by commit. Its source comes from this repository's history; a shallow clone fetches
# the commit first. A debug build: the test needs its behaviour, not its speed.
set -euo pipefail
cd "$(dirname "$0")/.."

LANDED_RELEASE=43b85aa688ac4c4658953cad91d150dec4c86b23
DIR="${XDG_CACHE_HOME:-$HOME/.cache}/etagd/landed-$LANDED_RELEASE"
BIN="$DIR/target/debug/etagd"

if [ -x "$BIN" ]; then
  echo "landed release: $BIN"
  exit 0
fi
if ! git cat-file -e "$LANDED_RELEASE^{commit}" 2>/dev/null; then
  echo "landed release: $LANDED_RELEASE not in this clone; fetching it"
  git fetch --quiet origin "$LANDED_RELEASE" || {
    echo "landed release: cannot get commit $LANDED_RELEASE (the upgrade test runs it beside this build);" \
      "clone the repository with its history" >&2
    exit 1
  }
fi
rm -rf "$DIR/src"
mkdir -p "$DIR/src"
git archive "$LANDED_RELEASE" | tar -x -C "$DIR/src"
echo "landed release: building etagd at ${LANDED_RELEASE:0:7} into $DIR"
(cd "$DIR/src" && CARGO_TARGET_DIR="$DIR/target" cargo build --quiet --locked -p etagd --bin etagd)
echo "landed release: $BIN"
