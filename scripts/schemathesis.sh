#!/usr/bin/env bash
# Fuzz the REST API with schemathesis against a running `tenancy run` (embedded planes, the
# example tenants in a scratch repository), driven by the OpenAPI document the daemon serves.
# Every check must pass. Usage: scripts/schemathesis.sh [path/to/tenancy] [max-examples]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-${CARGO_TARGET_DIR:-$root/target}/debug/tenancy}
examples=${2:-${SCHEMATHESIS_MAX_EXAMPLES:-100}}
version=4.32.5
if ! st --version 2>/dev/null | grep -q "$version"; then
  python3 -m pip install -q "schemathesis==$version" 2>&1 | grep -v "as the 'root' user" || true
fi
work=$(mktemp -d)
daemon=
cleanup() { [ -n "$daemon" ] && kill "$daemon" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/repo"
cp -r "$root/tenants/." "$work/repo/"
git -C "$work/repo" init -q -b main
git -C "$work/repo" -c user.name=fuzz -c user.email=fuzz@example.invalid add -A
git -C "$work/repo" -c user.name=fuzz -c user.email=fuzz@example.invalid commit -qm examples
token=fuzz-admin-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
digest=$(printf %s "$token" | sha256sum | cut -d' ' -f1)
cat >"$work/tenancy.toml" <<TOML
[embedded]
root = "$work/data"

[api]
requests-per-second = 100000.0
burst = 100000.0
tenant-requests-per-second = 100000.0
tenant-burst = 100000.0

[[api.tokens]]
name = "fuzz"
sha256 = "$digest"
role = "admin"
TOML
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" run --repo "$work/repo" --config "$work/tenancy.toml" --policies "$root/policies/bundle.yaml" \
  --listen "127.0.0.1:$port" --interval 2 >"$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break
  sleep 0.2
done
curl -fs "http://127.0.0.1:$port/readyz" >/dev/null || { cat "$work/daemon.log"; exit 1; }
# The event stream never ends: its responses are checked by the integration tests instead.
# One worker: CPython 3.11's ast.parse is not thread-safe, and hypothesis calls it.
# Every check but use_after_free: DELETE /tenants/{id} is asynchronous (202 and a job), and a
# deleted tenant stays readable as `state: Deleted` for audit — as Kubernetes serves an object
# being deleted — so a GET after the DELETE answering 200 is the design, not a leak.
st --config-file "$root/scripts/schemathesis.toml" run "http://127.0.0.1:$port/api/tenancy/v1/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks all \
  --exclude-checks use_after_free \
  --max-examples "$examples" \
  --exclude-path /api/tenancy/v1/events \
  --request-timeout 30 \
  --workers 1 \
  --suppress-health-check all \
  --warnings off
