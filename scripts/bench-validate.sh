#!/usr/bin/env bash
# Benchmark: `tenancy validate --no-policies` end to end (whole process, reading the Git
# objects) on a generated repository of N tenants, against two peers validating the same tenant
# files against the same schemas: ajv-cli 5 (Node, ajv 8, draft 2020-12, YAML through js-yaml;
# installed from npm into $TENANCY_NPM_CACHE) and check-jsonschema (PyPI). The runs are
# interleaved (tenancy, ajv, check-jsonschema, tenancy, …) so a slow minute of the machine hits
# every tool alike; each run's wall time, CPU time (user + system) and peak RSS come from GNU
# time. Prints the machine, the medians and the ratios.
#
#   scripts/bench-validate.sh [N=10000]       ROUNDS=10 (all tools) CJS_ROUNDS=3 (the slow one;
#                                             0 leaves it out)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${1:-10000}
ROUNDS=${ROUNDS:-10}
CJS_ROUNDS=${CJS_ROUNDS:-3}
WORK=${BENCH_DIR:-$(mktemp -d)}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
NPM_CACHE=${TENANCY_NPM_CACHE:-$HOME/.cache/tenancy-npm}

[ -x /usr/bin/time ] || apt-get install -y -qq time >/dev/null
command -v check-jsonschema >/dev/null || python3 -m pip install -q check-jsonschema
AJV=$NPM_CACHE/node_modules/.bin/ajv
if [ ! -x "$AJV" ]; then
  echo "installing ajv-cli 5 into $NPM_CACHE" >&2
  mkdir -p "$NPM_CACHE"
  npm install --prefix "$NPM_CACHE" --silent --no-audit --no-fund ajv-cli@5 >/dev/null
fi

cargo build --release --locked -q -p tenancy
BIN=$CARGO_TARGET_DIR/release/tenancy
REPO=$WORK/repo
"$ROOT/scripts/gen-tenants.py" "$N" "$REPO" >/dev/null
find "$REPO" -name 't_*.yaml' | sort >"$WORK/files"
SCHEMAS=$ROOT/schemas
cat >"$WORK/tenancy.sh" <<EOF
#!/usr/bin/env bash
exec "$BIN" validate --no-policies --repo "$REPO"
EOF
cat >"$WORK/ajv.sh" <<EOF
#!/usr/bin/env bash
cd "$REPO" && exec "$AJV" validate --spec=draft2020 --strict=false -s "$SCHEMAS/tenant.schema.json" -r "$SCHEMAS/common.schema.json" -d "org_*/t_*.yaml"
EOF
cat >"$WORK/cjs.sh" <<EOF
#!/usr/bin/env bash
xargs -a "$WORK/files" -x -s 2000000 check-jsonschema --schemafile "$SCHEMAS/tenant.schema.json" --base-uri "file://$SCHEMAS/tenant.schema.json"
EOF
chmod +x "$WORK"/{tenancy,ajv,cjs}.sh

. "$ROOT/scripts/lib/machine.sh"; machine
echo "== correctness: every tool accepts all $(wc -l <"$WORK/files") tenant files"
"$WORK/tenancy.sh" | tail -1
"$WORK/ajv.sh" >/dev/null 2>&1 && echo "ajv-cli: ok"
if [ "$CJS_ROUNDS" -gt 0 ]; then "$WORK/cjs.sh" >/dev/null && echo "check-jsonschema: ok"; fi

echo "== $ROUNDS interleaved rounds (check-jsonschema in the first $CJS_ROUNDS); warm-up first"
"$WORK/tenancy.sh" >/dev/null 2>&1; "$WORK/ajv.sh" >/dev/null 2>&1
: >"$WORK/runs"
run() { # tool script: one run, "tool wall user system maxrss_kib" appended to runs
  /usr/bin/time -f "$1 %e %U %S %M" -a -o "$WORK/runs" "$2" >/dev/null 2>&1
}
for i in $(seq 1 "$ROUNDS"); do
  run tenancy "$WORK/tenancy.sh"
  run ajv "$WORK/ajv.sh"
  [ "$i" -le "$CJS_ROUNDS" ] && run check-jsonschema "$WORK/cjs.sh"
  printf '.' >&2
done
echo >&2

python3 - "$WORK/runs" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    tool, wall, user, sys_, rss = line.split()
    runs.setdefault(tool, []).append((float(wall), float(user) + float(sys_), int(rss) / 1024))
med = {t: tuple(statistics.median(r[k] for r in rs) for k in range(3)) for t, rs in runs.items()}
for t, rs in runs.items():
    w, c, m = med[t]
    walls = [r[0] for r in rs]
    print(f"{t:17} wall {w:7.3f} s (min {min(walls):.3f}, max {max(walls):.3f}), "
          f"CPU {c:7.3f} s, peak RSS {m:5.0f} MiB  ({len(rs)} runs, medians)")
tw, tc, tm = med["tenancy"]
for peer in (p for p in ("ajv", "check-jsonschema") if p in med):
    pw, pc, pm = med[peer]
    print(f"== {peer} / tenancy (above 1: tenancy is ahead): wall {pw / tw:.2f}x, "
          f"CPU {pc / tc:.2f}x, peak RSS {pm / tm:.2f}x")
PY
