#!/usr/bin/env bash
# Benchmark the REST API's reads under wrk (Debian's `wrk`), against a daemon serving a state
# store that scripts/bench-apply.sh filled:
#
#   scripts/bench-api.sh REPO CONFIG [SECONDS=15] [WRITES=20]   e.g. $BENCH_DIR/repo-10000 $BENCH_DIR/tenancy-10000.toml
#   SECONDS=0 skips the read benchmarks (writes only).
#
# It adds an admin token to a copy of CONFIG, starts `tenancy run`, waits for its first pass,
# then runs wrk (2 threads, 4 and 32 connections) on GET /tenants/{id}, a 50-item list page and
# GET /tenants/{id}/topology, and times 20 writes (suspend, activate, …) end to end: each is a
# judged commit to the repository (it moves the repository's branch).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$ROOT/scripts/lib/machine.sh"; machine
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
REPO=$1; CONFIG=$2; SECS=${3:-15}; WRITES=${4:-20}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 2; }
# TENANCY_BIN measures another build (e.g. a copy of the binary before a change).
if [ -n "${TENANCY_BIN:-}" ]; then BIN=$TENANCY_BIN; else
  cargo build --release --quiet -p tenancy
  BIN=$CARGO_TARGET_DIR/release/tenancy
fi
TOKEN="bench-$(date +%s%N)"
CFG=$(mktemp --suffix .toml)
{ cat "$CONFIG"; printf '[[api.tokens]]\nname = "bench"\nsha256 = "%s"\nrole = "admin"\n' "$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)"; } > "$CFG"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" run --repo "$REPO" --config "$CFG" --policies "$ROOT/policies/bundle.yaml" --listen "127.0.0.1:$PORT" --interval 60 2>/dev/null &
PID=$!
trap 'kill $PID 2>/dev/null; rm -f "$CFG"' EXIT
until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null; do sleep 0.5; done
ID=$(curl -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/api/tenancy/v1/tenants?limit=1&state=Active" | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["tenantId"])')
[ "$SECS" = 0 ] || for conns in 4 32; do
  echo "== GET /tenants/$ID, $conns connections, ${SECS}s"
  wrk -t2 -c"$conns" -d"${SECS}s" --latency -H "Authorization: Bearer $TOKEN" \
    "http://127.0.0.1:$PORT/api/tenancy/v1/tenants/$ID" | grep -E "Requests/sec|  50%|  99%|Non-2xx"
  echo "== GET /tenants?limit=50&state=Active, $conns connections, ${SECS}s"
  wrk -t2 -c"$conns" -d"${SECS}s" --latency -H "Authorization: Bearer $TOKEN" \
    "http://127.0.0.1:$PORT/api/tenancy/v1/tenants?limit=50&state=Active" | grep -E "Requests/sec|  50%|  99%|Non-2xx"
  echo "== GET /tenants/$ID/topology?env=prod, $conns connections, ${SECS}s"
  wrk -t2 -c"$conns" -d"${SECS}s" --latency -H "Authorization: Bearer $TOKEN" \
    "http://127.0.0.1:$PORT/api/tenancy/v1/tenants/$ID/topology" | grep -E "Requests/sec|  50%|  99%|Non-2xx"
done
echo "== $WRITES writes (POST /tenants/$ID:suspend, :activate, …), one at a time"
STATE=$(curl -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/api/tenancy/v1/tenants/$ID" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
for i in $(seq "$WRITES"); do
  if [ "$STATE" = Active ]; then ACTION=suspend; STATE=Suspended; else ACTION=activate; STATE=Active; fi
  curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -X POST -H "Authorization: Bearer $TOKEN" \
    "http://127.0.0.1:$PORT/api/tenancy/v1/tenants/$ID:$ACTION"
done | python3 -c '
import sys
rows = [l.split() for l in sys.stdin if l.strip()]
codes = sorted({r[0] for r in rows}); first = float(rows[0][1]) * 1000
t = sorted(float(r[1]) * 1000 for r in rows)
p99 = t[min(len(t) - 1, int(len(t) * 0.99))]
print(f"   status {codes}  p50 {t[len(t)//2]:.0f} ms  p99 {p99:.0f} ms  max {t[-1]:.0f} ms  first {first:.0f} ms  (of {len(t)})")'
