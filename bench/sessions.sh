#!/usr/bin/env bash
# Every spelling of a token request through the agent of `vault unlock`, against one curl
# POST to the same gbg-auth-stub, interleaved (bench/interleaved.py: each round runs every
# command once, in random order), with the process floors beside them: a file vault and a
# team vault (a PostgreSQL server this script starts in a temporary directory and stops).
# Usage: bash bench/sessions.sh [BIN_DIR] [ROUNDS]   (appends to bench/results/latest.md
# when run from bench/run.sh; alone it prints the tables)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-}"; rounds="${2:-200}"
work="$(mktemp -d)"; stub_pid=""; pgdir=""; as_pg=""; pgbin=""
cleanup() {
  for rt in "$work"/rt-*; do [ -d "$rt" ] && XDG_RUNTIME_DIR="$rt" "$BIN/vault" lock >/dev/null 2>&1 || true; done
  if [ -n "$pgdir" ]; then $as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -m immediate -w stop >/dev/null 2>&1 || true; rm -rf "$pgdir"; fi
  if [ -n "$stub_pid" ]; then kill "$stub_pid" 2>/dev/null || true; fi
  wait 2>/dev/null || true; rm -rf "$work"
}
trap cleanup EXIT
if [ -z "$BIN" ]; then
  built="$(bash scripts/build-release.sh vault gbg-auth-stub 2>/dev/null | tail -1)"
  BIN="$work/bin"; mkdir -p "$BIN"; install -m 0755 "$built/vault" "$built/gbg-auth-stub" "$BIN/"
fi
printf 'benchmark passphrase' > "$work/pass"; chmod 600 "$work/pass"
cat > "$work/accounts.json" <<JSON
{"clients": [{"client_id": "bench", "client_secret": "bench-client-secret"}], "users": [{"username": "u", "password": "bench-password"}]}
JSON
"$BIN/gbg-auth-stub" --accounts "$work/accounts.json" --port 0 > "$work/stub.out" 2>/dev/null & stub_pid=$!
for _ in $(seq 100); do grep -q '^PORT ' "$work/stub.out" 2>/dev/null && break; sleep 0.05; done
port=$(sed -n 's/^PORT //p' "$work/stub.out"); url="http://127.0.0.1:$port/as/token.oauth2"
printf 'client_id=bench&client_secret=bench-client-secret&username=u&password=bench-password&grant_type=password' > "$work/form"
tv="$work/token.db"
export VAULT_PASSPHRASE_FILE="$work/pass"
VAULT_PATH="$tv" "$BIN/vault" init --kdf interactive 2>/dev/null
VAULT_PATH="$tv" "$BIN/vault" env add local --token-url "$url" 2>/dev/null
GBG_CLIENT_SECRET=bench-client-secret GBG_PASSWORD=bench-password VAULT_PATH="$tv" \
  "$BIN/vault" add b --client-id bench --username u --env local --secrets-from-env 2>/dev/null

# A PostgreSQL team vault: the same vault copied there (SCRAM over TCP on 127.0.0.1).
pgurl=""
pgbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
if [ -n "$pgbin" ] && [ -x "$pgbin/initdb" ]; then
  pgdir="$(mktemp -d /tmp/gv-bench-pg-XXXXXX)"
  if [ "$(id -u)" = 0 ]; then chown postgres "$pgdir"; as_pg="setpriv --reuid=postgres --regid=postgres --init-groups --"; fi
  pgport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  pgpass="bench-pg-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  printf '%s' "$pgpass" > "$pgdir/pw"; [ -n "$as_pg" ] && chown postgres "$pgdir/pw"
  $as_pg "$pgbin/initdb" -D "$pgdir/data" -U bench --pwfile="$pgdir/pw" -A scram-sha-256 -E UTF8 --locale=C --no-sync >/dev/null
  printf "listen_addresses='127.0.0.1'\nport=$pgport\nunix_socket_directories='$pgdir'\n" >> "$pgdir/data/postgresql.conf"
  $as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w start >/dev/null
  export PGPASSWORD="$pgpass"
  psql -X -q -h 127.0.0.1 -p "$pgport" -U bench -d postgres -c 'CREATE DATABASE gbg' >/dev/null
  pgurl="postgres://bench@127.0.0.1:$pgport/gbg?sslmode=disable&schema=team"
  VAULT_PATH="$tv" "$BIN/vault" copy --to "$pgurl" 2>/dev/null
fi
sync

# One agent for the file vault and one for the team vault, each in its own runtime directory.
rt="$work/rt-file"; mkdir -m 700 "$rt"
XDG_RUNTIME_DIR="$rt" VAULT_PATH="$tv" "$BIN/vault" unlock --for 1h 2>/dev/null
if [ -n "$pgurl" ]; then
  rtpg="$work/rt-pg"; mkdir -m 700 "$rtpg"
  XDG_RUNTIME_DIR="$rtpg" VAULT_PATH="$pgurl" "$BIN/vault" unlock --for 1h 2>/dev/null
fi
unset VAULT_PASSPHRASE_FILE
# Warm each cache once (the first token of each environment is an exchange).
XDG_RUNTIME_DIR="$rt" VAULT_PATH="$tv" "$BIN/vault" token b >/dev/null
XDG_RUNTIME_DIR="$rt" VAULT_PATH="$tv" "$BIN/vault" token b --env local >/dev/null
[ -n "$pgurl" ] && XDG_RUNTIME_DIR="$rtpg" VAULT_PATH="$pgurl" "$BIN/vault" token b >/dev/null

F="XDG_RUNTIME_DIR=$rt"
specs=(
  "curl POST=curl -s -o /dev/null -H 'Accept: application/json' --data-binary @$work/form $url"
  "vault token b (VAULT_PATH)=$F VAULT_PATH=$tv $BIN/vault token b"
  "vault --vault PATH token b=$F $BIN/vault --vault $tv token b"
  "vault token b --vault PATH=$F $BIN/vault token b --vault $tv"
  "vault token --env local b=$F VAULT_PATH=$tv $BIN/vault token --env local b"
  "vault token b --env local=$F VAULT_PATH=$tv $BIN/vault token b --env local"
  "vault token b --format header=$F VAULT_PATH=$tv $BIN/vault token b --format header"
  "vault token b --format json=$F VAULT_PATH=$tv $BIN/vault token b --format json"
  "vault token b --format env=$F VAULT_PATH=$tv $BIN/vault token b --format env"
  "vault token b --min-ttl 600=$F VAULT_PATH=$tv $BIN/vault token b --min-ttl 600"
  "vault token b --fresh=$F VAULT_PATH=$tv $BIN/vault token b --fresh"
)
if [ -n "$pgurl" ]; then
  specs+=(
    "team: vault token b (VAULT_PATH)=XDG_RUNTIME_DIR=$rtpg VAULT_PATH=$pgurl $BIN/vault token b"
    "team: vault --vault URL token b=XDG_RUNTIME_DIR=$rtpg $BIN/vault --vault $pgurl token b"
    "team: vault token b --format header=XDG_RUNTIME_DIR=$rtpg VAULT_PATH=$pgurl $BIN/vault token b --format header"
  )
fi
specs+=(
  "process floor: vault --version=$BIN/vault --version"
  "process floor: sqlite3 'select 1'=sqlite3 :memory: 'select 1'"
)
echo "## Every spelling of a token request through the agent, interleaved ($rounds rounds), vs one curl POST"
python3 bench/interleaved.py "$rounds" 5 "$work/i.json" "${specs[@]}"
python3 bench/table.py "$work/i.json" | python3 -c '
import sys
# Add each row as a ratio to the curl row (the target is stated against curl).
lines = sys.stdin.read().splitlines()
rows = [l for l in lines[2:]]
curl = next(l for l in rows if "`curl POST`" in l)
curl_mean, curl_median = float(curl.split("|")[2].split()[0]), float(curl.split("|")[3])
print(lines[0][:-1] + "| vs curl (mean) | vs curl (median) |")
print(lines[1] + "---:|---:|")
for l in rows:
    cells = l.split("|")
    mean, median = float(cells[2].split()[0]), float(cells[3])
    print(l + f" {mean / curl_mean:.2f} | {median / curl_median:.2f} |")
'
echo
