#!/usr/bin/env bash
# Benchmark: every hostile policy module of tests/data/policies/hostile (and a named pipe and
# /dev/zero as a module), each added to the standard bundle and run through `tenancy validate`
# on the example tenants, with the defaults a bundle entry gets. Prints, per case, the exit
# code, the wall time and the peak RSS of the whole run (the compiler child included), and
# the reason the sandbox gave. Target on a 2-core machine: each refused in < 5 s, < 300 MiB.
#
#   scripts/bench-hostile.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$ROOT/scripts/lib/machine.sh"; machine
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
cargo build --release --quiet --locked -p tenancy
TENANCY=$CARGO_TARGET_DIR/release/tenancy
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# The example tenants as a repository.
mkdir -p "$WORK/repo"
cp -r "$ROOT/tenants/." "$WORK/repo/"
git -C "$WORK/repo" init --quiet
git -C "$WORK/repo" add -A
git -C "$WORK/repo" -c user.name=bench -c user.email=bench@tenancy.invalid commit --quiet -m tenants

# One compile cache for the whole run, warmed with the standard policies: what is measured is
# the hostile module. (Nothing hostile is ever cached: a refused module leaves no artifact.)
export TENANCY_CACHE_DIR=$WORK/cache
"$TENANCY" validate --repo "$WORK/repo" --policies "$ROOT/policies/bundle.yaml" >/dev/null

bundle() { # case -> a bundle directory with the standard policies and `hostile`
  local case=$1 dir=$WORK/bundles/$1 digest
  mkdir -p "$dir"
  for p in residency encryption quotas lifecycle; do
    mkdir -p "$dir/$p"
    cp "$ROOT/policies/$p/$p.wasm" "$dir/$p/"
  done
  case $case in
    pipe) mkfifo "$dir/hostile.wasm"; digest=$(printf '0%.0s' {1..64}) ;;
    dev-zero) ln -s /dev/zero "$dir/hostile.wasm"; digest=$(printf '0%.0s' {1..64}) ;;
    *) cp "$ROOT/tests/data/policies/hostile/$case.wasm" "$dir/hostile.wasm"
       digest=$(sha256sum "$dir/hostile.wasm" | awk '{print $1}') ;;
  esac
  { cat "$ROOT/policies/bundle.yaml"
    printf '  - name: hostile\n    module: hostile.wasm\n    sha256: "%s"\n' "$digest"; } >"$dir/bundle.yaml"
  echo "$dir"
}

cases=(pipe dev-zero)
for f in "$ROOT"/tests/data/policies/hostile/*.wasm; do cases+=("$(basename "$f" .wasm)"); done

printf '%-18s %4s %8s %9s  %s\n' CASE EXIT TIME PEAK REASON
worst_time=0 worst_rss=0
for c in "${cases[@]}"; do
  dir=$(bundle "$c")
  set +e
  /usr/bin/time -f '%e %M' -o "$WORK/time" timeout 300 "$TENANCY" validate --repo "$WORK/repo" \
    --policies "$dir/bundle.yaml" --output json >"$WORK/out.json" 2>"$WORK/err"
  code=$?
  set -e
  read -r secs kib < <(tail -1 "$WORK/time") || { secs=NA; kib=0; }
  reason=$(python3 - "$WORK/out.json" <<'PY'
import json, sys
try:
    report = json.load(open(sys.argv[1]))
except Exception as e:
    print(f"(no report: {e})"); sys.exit()
fails = [f["message"] for f in report["findings"] if f["rule"] == "policy.failed"]
denies = [f for f in report["findings"] if f.get("policy", {}) and f["policy"]["name"] == "hostile"]
if fails:
    print(fails[0].split("could not decide: ", 1)[-1][:110])
else:
    print(f"allowed to decide: {len(denies)} finding(s)")
PY
)
  printf '%-18s %4s %7ss %6d MiB  %s\n' "$c" "$code" "$secs" $((kib / 1024)) "$reason"
  worst_time=$(python3 -c "print(max($worst_time, ${secs/NA/999}))")
  worst_rss=$((kib > worst_rss ? kib : worst_rss))
done
echo "worst: ${worst_time} s, $((worst_rss / 1024)) MiB (target: < 5 s and < 300 MiB each)"
