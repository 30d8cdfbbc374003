#!/usr/bin/env bash
# Benchmark: cold `tenancy apply` of N Active mt-standard tenants x 2 environments into the
# real PostgreSQL, S3 (moto) and Kafka (noida-db) of scripts/services.sh, then a no-op
# `tenancy plan` over the same tenants; wall time and peak RSS from GNU time, and the SQL
# round trips of the plan counted by PostgreSQL itself (pg_stat_database.xact_commit of the
# benchmark database: one per autocommit statement).
#
#   scripts/bench-apply.sh [N=1000] [N2 ...]     e.g. scripts/bench-apply.sh 1000 10000
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SIZES=("${@:-1000}")
WORK=${BENCH_DIR:-$(mktemp -d)}

[ -f "$ROOT/.services/env" ] || "$ROOT/scripts/services.sh" start
set -a; . "$ROOT/.services/env"; set +a
cargo build --release --quiet -p tenancy
. "$ROOT/scripts/lib/machine.sh"; machine
BIN=$CARGO_TARGET_DIR/release/tenancy

for N in "${SIZES[@]}"; do
  tag="b$(date +%s)n$N"
  db="bench_$tag"
  psql -X -q "$TENANCY_TEST_PG_URL" -c "CREATE DATABASE $db" >/dev/null
  pg_db=${TENANCY_TEST_PG_URL%/*}/$db
  "$ROOT/scripts/gen-tenants.py" "$N" "$WORK/repo-$N" --uniform 2>/dev/null
  cfg=$WORK/tenancy-$N.toml
  {
    echo "[state]"; echo "url = \"sqlite://$WORK/state-$N.db\""
    for region in ap-south-1 eu-west-1 eu-central-1 us-east-1; do
      printf '[postgres.targets.pg-%s-shared]\nurl = "%s"\n' "$region" "$pg_db"
      printf '[object-store.targets.s3-%s]\nendpoint = "%s"\nregion = "%s"\npath-style = true\naccess-key-id = "bench"\nsecret-access-key = "bench"\nbucket-prefix = "%s-%s"\n' \
        "$region" "$TENANCY_TEST_S3_URL" "$region" "$tag" "${region//-/}"
      printf '[kafka.targets.kafka-%s]\nbootstrap-servers = "%s"\ntopic-prefix = "%s%s"\n' \
        "$region" "$TENANCY_TEST_KAFKA_NOIDA" "$tag" "${region//-/}"
    done
  } > "$cfg"
  echo "== N=$N tenants x 2 environments (mt-standard, Active): cold apply"
  /usr/bin/time -f "cold apply: %e s wall, %M KiB max RSS" \
    "$BIN" apply --yes --repo "$WORK/repo-$N" --config "$cfg" --policies "$ROOT/policies/bundle.yaml" 2>&1 \
    | grep -E "^Apply|cold apply" || true
  xact() { psql -X -At "$TENANCY_TEST_PG_URL" -c "SELECT xact_commit FROM pg_stat_database WHERE datname = '$db'"; }
  echo "== N=$N: SQL round trips of one no-op plan (transactions PostgreSQL counted in the benchmark database)"
  for run in 1 2 3; do
    sleep 1; before=$(xact)
    "$BIN" plan --repo "$WORK/repo-$N" --config "$cfg" --policies "$ROOT/policies/bundle.yaml" >/dev/null
    sleep 1; after=$(xact)
    echo "plan $run: $((after - before)) SQL transactions"
  done
  echo "== N=$N: no-op plan, whole process"
  if command -v hyperfine >/dev/null; then
    hyperfine -w 1 -r 10 "$BIN plan --repo $WORK/repo-$N --config $cfg --policies $ROOT/policies/bundle.yaml" | grep -E "Time|Range"
  fi
  /usr/bin/time -f "no-op plan: %e s wall, %M KiB max RSS" \
    "$BIN" plan --repo "$WORK/repo-$N" --config "$cfg" --policies "$ROOT/policies/bundle.yaml" 2>&1 | grep -E "^Plan|no-op plan"
done
