#!/usr/bin/env bash
# Build the JavaScript example policy (policies/examples/contacts-js) with componentize-js from
# npm, and write its bundle next to it.
#
#   scripts/build-js-policy.sh [OUT_DIR]   # default: $CARGO_TARGET_DIR/policies/contacts-js
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-${CARGO_TARGET_DIR:-$ROOT/target}/policies/contacts-js}
command -v node >/dev/null && command -v npm >/dev/null || {
  echo "node and npm are required (apt-get install nodejs npm)" >&2
  exit 2
}
cd "$ROOT/policies/examples/contacts-js"
# node_modules is kept between runs. The one dependency is pinned exactly in package.json; no
# lock file is kept (npm writes lock files that `npm ci` then refuses on this platform).
if [ ! -d node_modules/@bytecodealliance/componentize-js ] || [ package.json -nt node_modules/.package-lock.json ]; then
  npm install --no-package-lock --no-audit --no-fund --loglevel=error >&2
fi
node build.mjs "$OUT" >&2
echo "$OUT/bundle.yaml"
