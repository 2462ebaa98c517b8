#!/usr/bin/env bash
# A throwaway PostgreSQL for the tests and benchmarks:
#   tests/pg.sh start DIR [PORT]   initdb into DIR (fresh), start it on 127.0.0.1:PORT (default: a
#                                  free one) and a socket in DIR; prints the admin URL
#   tests/pg.sh restart DIR [MODE [SECS]]  stop it (MODE: fast, or immediate = a crash), stay
#                                  down SECS seconds (default 0), start it on the same port
#   tests/pg.sh tls DIR            make a CA and a server certificate for 127.0.0.1, turn TLS on;
#                                  prints the CA file
#   tests/pg.sh stop DIR           stop it and remove DIR
# PostgreSQL 15 comes from Debian's packages (installed when missing). The server runs as an
# unprivileged user: the caller, or `postgres` when the caller is root.
set -euo pipefail
cmd=${1:?start|restart|tls|stop}
dir=${2:?data directory}

bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/pg_ctl" ] && { echo "$d"; return; }
  done
}
bin=$(bindir || true)
if [ -z "$bin" ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing PostgreSQL from Debian's packages" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null
  bin=$(bindir)
fi

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

run() {
  # fsync stays on: the benchmarks measure real commits; the tests' crash checks need it too.
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
    -o "-p $1 -k $dir -c listen_addresses=127.0.0.1 -c max_connections=400" start >/dev/null
}

case "$cmd" in
  start)
    port=${3:-$(free_port)}
    rm -rf "$dir"
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
    as_owner "$bin/initdb" -D "$dir/data" -U groundwork -A trust -E UTF8 --no-locale >/dev/null
    run "$port"
    echo "$port" >"$dir/port"
    echo "postgres://groundwork@127.0.0.1:$port/postgres"
    ;;
  restart)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m "${3:-fast}" -w stop >/dev/null
    sleep "${4:-0}"
    run "$(cat "$dir/port")"
    ;;
  tls)
    tls="$dir/tls"
    mkdir -p "$tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=groundwork test CA" \
      -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
      -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$tls/ext"
    openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
      -CAcreateserial -days 2 -extfile "$tls/ext" -out "$tls/server.pem" 2>/dev/null
    chmod 600 "$tls/server.key"
    [ "$(id -u)" -eq 0 ] && chown -R postgres "$tls"
    chmod 644 "$tls/ca.pem"
    as_owner "$bin/psql" -q -h "$dir" -p "$(cat "$dir/port")" -U groundwork -d postgres \
      -c "ALTER SYSTEM SET ssl_cert_file = '$tls/server.pem'" \
      -c "ALTER SYSTEM SET ssl_key_file = '$tls/server.key'" \
      -c "ALTER SYSTEM SET ssl = on" -c "SELECT pg_reload_conf()" >/dev/null
    echo "$tls/ca.pem"
    ;;
  stop)
    [ -d "$dir/data" ] && as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    rm -rf "$dir"
    ;;
  *)
    echo "usage: tests/pg.sh start DIR [PORT] | restart DIR [MODE [SECS]] | tls DIR | stop DIR" >&2
    exit 2
    ;;
esac
