#!/usr/bin/env bash
# The full test suite, as CI runs it: install and start the real services (PostgreSQL, S3,
# two Kafka-protocol brokers) on 127.0.0.1, build the JavaScript example policy, run every
# test (and the policy SDK's), fuzz the REST API with schemathesis, generate clients from its
# OpenAPI document and run seed 000 through them, stop the services.
#
#   scripts/test.sh               # everything
#   scripts/test.sh validate      # extra arguments go to `cargo test` (here: a name filter)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 2; }

export TENANCY_SERVICES_DIR=${TENANCY_SERVICES_DIR:-$ROOT/.services}
export TENANCY_SERVICES_ENV=$TENANCY_SERVICES_DIR/env
trap 'scripts/services.sh stop >/dev/null 2>&1 || true' EXIT
scripts/services.sh start

# The JavaScript example policy (componentize-js from npm) for the cross-language test.
TENANCY_JS_POLICY_BUNDLE=$(scripts/build-js-policy.sh)
export TENANCY_JS_POLICY_BUNDLE

cargo test --workspace --locked "$@"

# The REST API against its own OpenAPI document, and the clients generated from that document
# (the whole suite only, not a filtered run); the policy SDK's own tests (its JSON reader held
# to serde_json, its pointers), built for the host in the guest workspace.
if [ $# -eq 0 ]; then
  (cd policies && CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/policies-native" \
    cargo test --locked --quiet -p tenancy-policy-sdk)
  scripts/schemathesis.sh "${CARGO_TARGET_DIR:-$ROOT/target}/debug/tenancy"
  scripts/openapi-clients.sh "${CARGO_TARGET_DIR:-$ROOT/target}/debug/tenancy"
fi
