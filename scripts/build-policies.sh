#!/usr/bin/env bash
# Build the policy components reproducibly and record their digests.
#
#   scripts/build-policies.sh           # rebuild policies/*/*.wasm, the hostile test modules,
#                                       # and rewrite the sha256 digests in policies/bundle.yaml
#   scripts/build-policies.sh --check   # rebuild into a temporary directory and fail if any
#                                       # committed .wasm or bundle digest differs (used by CI)
#
# Guests are compiled for wasm32-unknown-unknown and wrapped with `wasm-tools component new`, so
# a standard policy imports nothing at all. Paths are remapped so the bytes do not depend on
# where the repository is checked out.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WASM_TOOLS_VERSION=1.263.0
CHECK=0
[ "${1:-}" = "--check" ] && CHECK=1

log() { printf '[policies] %s\n' "$*" >&2; }

# Toolchain pieces (idempotent).
installed_targets=$(rustup target list --installed)
for t in wasm32-unknown-unknown wasm32-wasip2; do
  grep -qx "$t" <<<"$installed_targets" || rustup target add "$t"
done
if ! command -v wasm-tools >/dev/null || [ "$(wasm-tools --version | awk '{print $2}')" != "$WASM_TOOLS_VERSION" ]; then
  log "installing wasm-tools $WASM_TOOLS_VERSION"
  cargo install --locked --quiet wasm-tools --version "$WASM_TOOLS_VERSION"
fi

CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
export CARGO_TARGET_DIR=${POLICY_TARGET_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/policies}
# A 16 KiB shadow stack (the default is 1 MiB; it holds only the locals whose address is taken)
# keeps a standard policy's whole memory to one 64 KiB page, which the host resets by memset
# after every evaluation. A policy that overflows it traps (the stack sits below the data, at
# address 0, so it cannot overwrite anything) and fails closed.
export RUSTFLAGS="--remap-path-prefix=$ROOT=/tenancy --remap-path-prefix=$CARGO_HOME=/cargo -C link-arg=-zstack-size=16384"
export SOURCE_DATE_EPOCH=0

OUT=$ROOT
if [ $CHECK = 1 ]; then OUT=$(mktemp -d); fi
mkdir -p "$OUT/policies" "$OUT/tests/data/policies/hostile"
cd "$ROOT/policies"

component() { # target package features output
  local target=$1 pkg=$2 features=$3 out=$4 core
  cargo build --quiet --locked --release --target "$target" -p "$pkg" ${features:+--features "$features"}
  core=$CARGO_TARGET_DIR/$target/release/${pkg//-/_}.wasm
  mkdir -p "$(dirname "$out")"
  if [ "$target" = wasm32-wasip2 ]; then
    cp "$core" "$out" # the wasip2 linker already emits a component
  else
    wasm-tools component new "$core" -o "$out"
  fi
  wasm-tools validate --features all "$out"
}

STANDARD=(residency encryption quotas lifecycle)
for p in "${STANDARD[@]}"; do
  component wasm32-unknown-unknown "policy-$p" "" "$OUT/policies/$p/$p.wasm"
  log "built $p ($(wc -c <"$OUT/policies/$p/$p.wasm") bytes)"
done
for f in infinite-loop memory-bomb deep-recursion huge-output trap malformed-output missing-export mistyped-export \
  violation-flood output-at-limit forged-output forged-info bad-pointer lookup-flood lookup-loop; do
  component wasm32-unknown-unknown policy-hostile "$f" "$OUT/tests/data/policies/hostile/$f.wasm"
done
for f in wasi-filesystem wasi-sockets; do
  component wasm32-wasip2 policy-hostile "$f" "$OUT/tests/data/policies/hostile/$f.wasm"
done
# Hand-written modules for what a compiler would not emit (see policies/hostile/wat/gen.py),
# against contract 0.1.0, which the host still serves.
WAT=$(mktemp -d)
for c in two-memories function-flood liveness-bomb contract-future; do
  python3 "$ROOT/policies/hostile/wat/gen.py" core "$c" >"$WAT/$c.wat"
  wasm-tools parse "$WAT/$c.wat" -o "$WAT/$c.core.wasm"
  wasm-tools component embed "$ROOT/policies/wit-0.1" --world policy "$WAT/$c.core.wasm" -o "$WAT/$c.embedded.wasm"
  wasm-tools component new "$WAT/$c.embedded.wasm" -o "$WAT/$c.component.wasm"
  wasm-tools print "$WAT/$c.component.wasm" | python3 "$ROOT/policies/hostile/wat/gen.py" patch "$c" >"$WAT/$c.component.wat"
  wasm-tools parse "$WAT/$c.component.wat" -o "$OUT/tests/data/policies/hostile/$c.wasm"
  wasm-tools validate --features all "$OUT/tests/data/policies/hostile/$c.wasm"
done
rm -rf "$WAT"
# A module cut short: the first half of a valid one.
head -c 20000 "$OUT/policies/residency/residency.wasm" >"$OUT/tests/data/policies/hostile/truncated.wasm"
log "built hostile test modules"

sha() { sha256sum "$1" | awk '{print $1}'; }
if [ $CHECK = 1 ]; then
  status=0
  for f in $(cd "$OUT" && find policies tests/data/policies -name '*.wasm' | sort); do
    if ! cmp -s "$OUT/$f" "$ROOT/$f"; then
      log "MISMATCH: $f rebuilt to $(sha "$OUT/$f"), committed $(sha "$ROOT/$f" 2>/dev/null || echo missing)"
      status=1
    fi
  done
  for p in "${STANDARD[@]}"; do
    want=$(sha "$ROOT/policies/$p/$p.wasm")
    grep -q "sha256: \"$want\"" "$ROOT/policies/bundle.yaml" || { log "MISMATCH: bundle.yaml digest for $p is not $want"; status=1; }
  done
  rm -rf "$OUT"
  [ $status = 0 ] && log "committed modules and bundle digests match a fresh build"
  exit $status
fi

# Record the digests in the bundle (the line after each module's path).
python3 - "$ROOT/policies/bundle.yaml" "${STANDARD[@]}" <<'PY'
import hashlib, re, sys, pathlib
bundle = pathlib.Path(sys.argv[1])
text = bundle.read_text()
for name in sys.argv[2:]:
    module = f"{name}/{name}.wasm"
    digest = hashlib.sha256((bundle.parent / module).read_bytes()).hexdigest()
    # Quoted: an unquoted digest made only of digits (and an `e`) would read as a YAML number.
    text, n = re.subn(rf"(module: {re.escape(module)}\n\s+sha256: )\"?[0-9a-f]*\"?", rf'\g<1>"{digest}"', text)
    if n != 1:
        sys.exit(f"bundle.yaml has no `module: {module}` followed by `sha256:`")
bundle.write_text(text)
PY
log "digests written to policies/bundle.yaml"
