#!/usr/bin/env bash
# Makes sure PostgreSQL and RabbitMQ answer on 127.0.0.1: starts them, or installs them
# from Debian's packages when they are missing. Used by `make test` and .ci/run.
set -euo pipefail

answers() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

wait_for() {
  local name=$1 port=$2
  for _ in $(seq 1 60); do answers "$port" && { echo "$name answers on $port"; return 0; }; sleep 1; done
  echo "ERROR: $name does not answer on 127.0.0.1:$port" >&2; return 1
}

apt_install() {
  command -v apt-get >/dev/null || { echo "ERROR: no apt-get to install $*" >&2; exit 1; }
  [ "$(id -u)" = 0 ] || { echo "ERROR: installing $* needs root" >&2; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
  answers 5432 && { echo "PostgreSQL answers on 5432"; return; }
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then apt_install postgresql; fi
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for PostgreSQL 5432
}

ensure_rabbitmq() {
  answers 5672 && { echo "RabbitMQ answers on 5672"; return; }
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  rabbitmq-server -detached || true
  wait_for RabbitMQ 5672
}

ensure_libpq() {
  # psycopg's pure-Python build (the one that cooperates with eventlet) needs libpq.
  ldconfig -p 2>/dev/null | grep -q 'libpq\.so' || apt_install libpq5
}

ensure_postgres
ensure_rabbitmq
ensure_libpq
