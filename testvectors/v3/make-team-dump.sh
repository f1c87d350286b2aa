#!/usr/bin/env bash
# Makes team-v3.sql: the format-3 fixture vault (v3-testkdf.db) copied by a *format-3*
# build (`vault copy`, commit d4e2cae) into schema `teamv3` of a throwaway PostgreSQL
# cluster, then dumped with `pg_dump --schema teamv3 --no-owner --no-privileges`.
# Kept for reference: the committed dump is what the team 3-to-4 upgrade test restores.
#
# usage (as root, with Debian's postgresql): testvectors/v3/make-team-dump.sh BIN_DIR
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$1"
pgbin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
work="$(mktemp -d /tmp/gv-v3dump-XXXXXX)"
chown postgres "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pg() { runuser -u postgres -- "$@"; }
cleanup() { pg "$pgbin/pg_ctl" -D "$work/data" -m immediate -w stop >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
pg "$pgbin/initdb" -D "$work/data" -U admin -A trust -E UTF8 --locale=C --no-sync > /dev/null
printf "listen_addresses='127.0.0.1'\nport=$port\nunix_socket_directories='$work'\nfsync=off\n" >> "$work/data/postgresql.conf"
pg "$pgbin/pg_ctl" -D "$work/data" -l "$work/log" -w start > /dev/null
psql -X -q -h 127.0.0.1 -p "$port" -U admin -d postgres -c "CREATE DATABASE vault"
cp "$here/v3-testkdf.db" "$work/v.db"
HOME="$work" XDG_STATE_HOME="$work/state" VAULT_NO_AGENT=1 GBG_VAULT_TEST_ONLY_INSECURE_KDF=1 \
  "$bin/vault" copy --vault "$work/v.db" --to "postgres://admin@127.0.0.1:$port/vault?sslmode=disable&schema=teamv3"
pg_dump -h 127.0.0.1 -p "$port" -U admin -d vault --schema teamv3 --no-owner --no-privileges > "$here/team-v3.sql"
