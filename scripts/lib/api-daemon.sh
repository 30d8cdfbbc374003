# Sourced by scripts that talk to a running API: start `tenancy run` (embedded planes, the
# example tenants in a scratch repository, one admin token, generous rate limits) and stop it
# when the script exits. After `start_api_daemon BIN`: $work, $port, $token, $base.
# (Webhooks registered by a client go nowhere: their targets are public, and none resolves
# from a machine without internet.)
start_api_daemon() {
  local bin=$1 root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  work=$(mktemp -d)
  daemon=
  trap 'stop_api_daemon' EXIT
  mkdir -p "$work/repo"
  cp -r "$root/tenants/." "$work/repo/"
  # API_DAEMON_NO_TENANTS=1: the platform and organizations only (a client creates tenants).
  if [ "${API_DAEMON_NO_TENANTS:-}" = 1 ]; then
    find "$work/repo" -name 't_*.yaml' -delete
  fi
  git -C "$work/repo" init -q -b main
  git -C "$work/repo" -c user.name=api -c user.email=api@example.invalid add -A
  git -C "$work/repo" -c user.name=api -c user.email=api@example.invalid commit -qm examples
  token=api-admin-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
  local digest
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
name = "api-client"
sha256 = "$digest"
role = "admin"
TOML
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$bin" run --repo "$work/repo" --config "$work/tenancy.toml" --policies "$root/policies/bundle.yaml" \
    --listen "127.0.0.1:$port" --interval 1 >"$work/daemon.log" 2>&1 &
  daemon=$!
  base="http://127.0.0.1:$port"
  for _ in $(seq 100); do
    curl -fs "$base/readyz" >/dev/null && return 0
    sleep 0.2
  done
  cat "$work/daemon.log" >&2
  return 1
}

stop_api_daemon() {
  [ -n "${daemon:-}" ] && kill "$daemon" 2>/dev/null
  wait 2>/dev/null
  [ -n "${work:-}" ] && rm -rf "$work"
  return 0
}
