#!/usr/bin/env bash
# Benchmark: `tenancy validate` end to end (whole process, reading the Git objects) on a
# generated repository of N tenants, against check-jsonschema (PyPI) validating the same tenant
# files against the same schema. Prints wall time (hyperfine) and peak RSS (GNU time).
#
#   scripts/bench-validate.sh [N=10000]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${1:-10000}
WORK=${BENCH_DIR:-$(mktemp -d)}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

need() { command -v "$1" >/dev/null || { echo "installing $2" >&2; eval "$3"; }; }
need hyperfine hyperfine "apt-get install -y -qq hyperfine >/dev/null"
[ -x /usr/bin/time ] || apt-get install -y -qq time >/dev/null
need check-jsonschema check-jsonschema "python3 -m pip install -q check-jsonschema"

cargo build --release --locked -q -p tenancy
BIN=$CARGO_TARGET_DIR/release/tenancy
REPO=$WORK/repo
"$ROOT/scripts/gen-tenants.py" "$N" "$REPO"
find "$REPO" -name 't_*.yaml' | sort >"$WORK/files"
SCHEMA=$ROOT/schemas/tenant.schema.json
cat >"$WORK/cjs.sh" <<CJS
#!/usr/bin/env bash
xargs -a "$WORK/files" -x -s 2000000 check-jsonschema --schemafile "$SCHEMA" --base-uri "file://$SCHEMA" >/dev/null
CJS
chmod +x "$WORK/cjs.sh"

echo "== correctness: both accept all $(wc -l <"$WORK/files") tenant files"
"$BIN" validate --no-policies --repo "$REPO" | tail -1
"$WORK/cjs.sh" && echo "check-jsonschema: ok"

echo "== wall time"
hyperfine --warmup 2 --runs 10 --export-json "$WORK/tenancy.json" "$BIN validate --no-policies --repo $REPO"
hyperfine --warmup 1 --runs 3 --export-json "$WORK/cjs.json" "$WORK/cjs.sh"

echo "== peak memory (max RSS)"
/usr/bin/time -f "tenancy validate: %M KiB max RSS, %e s" "$BIN" validate --no-policies --repo "$REPO" >/dev/null
/usr/bin/time -f "check-jsonschema: %M KiB max RSS, %e s" "$WORK/cjs.sh"

python3 - "$WORK/tenancy.json" "$WORK/cjs.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))["results"][0]
c = json.load(open(sys.argv[2]))["results"][0]
print(f"== summary: tenancy validate mean {t['mean']:.3f} s (min {t['min']:.3f}), "
      f"check-jsonschema mean {c['mean']:.3f} s -> {c['mean'] / t['mean']:.1f}x faster")
PY
