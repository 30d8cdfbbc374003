#!/usr/bin/env bash
# Benchmark: the standard policies over a generated N-tenant repository, end to end
# (fresh sandbox per evaluation), with the per-evaluation breakdown, side by side with regorus
# evaluating the equivalent Rego rules (bench/rego) on the same inputs, and the same policies as
# built for contract 0.1.0 (tests/data/policies/contract-0.1).
#
#   scripts/bench-policies.sh [N=10000]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${1:-10000}
WORK=${BENCH_DIR:-$(mktemp -d)}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
"$ROOT/scripts/gen-tenants.py" "$N" "$WORK/repo"
. "$ROOT/scripts/lib/machine.sh"; machine
cargo build --release --quiet --manifest-path "$ROOT/bench/Cargo.toml"
# The standard policies as built for contract 0.1.0 run in the same rounds, for comparison.
"$CARGO_TARGET_DIR/release/tenancy-bench" policies --repo "$WORK/repo" --bundle "$ROOT/policies/bundle.yaml" --rego "$ROOT/bench/rego" --runs 5 \
  --also "$ROOT/tests/data/policies/contract-0.1/bundle.yaml"
cargo build --release --quiet -p tenancy
echo "== tenancy validate (schema + policies), whole process"
/usr/bin/time -f "tenancy validate: %e s, %M KiB max RSS" "$CARGO_TARGET_DIR/release/tenancy" validate --repo "$WORK/repo" --policies "$ROOT/policies/bundle.yaml" | tail -1
