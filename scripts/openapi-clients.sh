#!/usr/bin/env bash
# The OpenAPI document serves SDK generation (seed 000): it must be a valid document, and the
# clients generated from it must have every operation and work.
#
#   1. openapi-spec-validator accepts docs/openapi.json;
#   2. openapi-python-client generates a client with every operation of the document, and that
#      client replays seed 000's examples, as written, against a running daemon
#      (scripts/seed-client.py);
#   3. openapi-typescript generates the TypeScript types with no error, every operation is
#      there, and code written against them type-checks (tsc).
#
# Usage: scripts/openapi-clients.sh [path/to/tenancy]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-${CARGO_TARGET_DIR:-$root/target}/debug/tenancy}
doc=$root/docs/openapi.json
pip_quiet() { python3 -m pip install -q "$@" 2>&1 | grep -v "as the 'root' user" || true; }
python3 -c 'import openapi_spec_validator' 2>/dev/null \
  && python3 -m pip show openapi-spec-validator 2>/dev/null | grep -qx 'Version: 0.7.2' \
  || pip_quiet "openapi-spec-validator==0.7.2"
openapi-python-client --version 2>/dev/null | grep -q '0.29.1' || pip_quiet "openapi-python-client==0.29.1"
# Node tools outside the clone, installed once.
ts_dir=${TENANCY_NODE_TOOLS:-$HOME/.cache/tenancy-node-tools}
if [ ! -x "$ts_dir/node_modules/.bin/openapi-typescript" ] || [ ! -x "$ts_dir/node_modules/.bin/tsc" ]; then
  mkdir -p "$ts_dir"
  (cd "$ts_dir" && npm install --no-audit --no-fund --loglevel=error --no-package-lock \
    openapi-typescript@7.13.0 typescript@5.9.3 >&2)
fi

echo "== openapi-spec-validator" >&2
python3 -m openapi_spec_validator "$doc"

# shellcheck source=lib/api-daemon.sh
. "$root/scripts/lib/api-daemon.sh"
API_DAEMON_NO_TENANTS=1 start_api_daemon "$bin"
operations=$(python3 -c '
import json, sys
doc = json.load(open(sys.argv[1]))
print(" ".join(sorted(op["operationId"] for path in doc["paths"].values() for op in path.values())))
' "$doc")

echo "== openapi-python-client" >&2
(cd "$work" && openapi-python-client generate --path "$doc" --meta none --output-path tenancy_client >&2)
for op in $operations; do
  ls "$work"/tenancy_client/api/*/"$op".py >/dev/null 2>&1 \
    || { echo "the Python client has no operation $op" >&2; exit 1; }
done
PYTHONPATH=$work python3 "$root/scripts/seed-client.py" "$base" "$token"

echo "== openapi-typescript" >&2
"$ts_dir/node_modules/.bin/openapi-typescript" "$doc" -o "$work/api.d.ts" >&2
for op in $operations; do
  grep -q "    $op: {" "$work/api.d.ts" || { echo "the TypeScript types have no operation $op" >&2; exit 1; }
done
cat >"$work/use.ts" <<'TS'
import type { paths, components } from "./api";
type Create = paths["/api/tenancy/v1/tenants"]["post"]["requestBody"]["content"]["application/json"];
type Patch = paths["/api/tenancy/v1/tenants/{id}"]["patch"]["requestBody"]["content"]["application/json"];
type Hook = paths["/api/tenancy/v1/webhooks"]["post"]["requestBody"]["content"]["application/json"];
// Seed 000 §1, §5 and §7, as written.
export const create: Create = {
  tenantId: "t_5001", organizationId: "org_acme", profile: "mt-standard", environments: ["dev", "prod"],
  quotas: { storageGiB: 200, concurrentJobs: 10 },
  policies: { dataResidency: "in-region-only", encryption: "kms-per-tenant" }, billing: { plan: "starter" },
};
export const patch: Patch = { profile: "st-dedicated", quotas: { storageGiB: 500 } };
export const hook: Hook = {
  url: "https://ops.example.com/hooks/tenancy", events: ["TENANCY_ACTIVATED", "TENANCY_SUSPENDED"], secret: "whsec_demo",
};
export const problem: components["schemas"]["Problem"] = { type: "x", title: "y", status: 404, detail: "z" };
TS
"$ts_dir/node_modules/.bin/tsc" --noEmit --strict --target es2020 --moduleResolution node "$work/use.ts"
echo "openapi-clients: the document is valid; the Python client replayed seed 000; the TypeScript types check" >&2
