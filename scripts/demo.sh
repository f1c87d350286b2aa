#!/usr/bin/env bash
# The main job end to end, offline: build, start gbg-auth-stub on a free loopback port,
# create a throwaway vault, add a profile, print a token, run a child with `vault exec`,
# show the audit trail, unlock a session, add and remove a member, copy the vault into a
# throwaway PostgreSQL server and use it there (team vault), stop the endpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The release binary, as bench/run.sh and the README's install build it (one self-contained
# file; see scripts/build-release.sh); or, with GBG_VAULT_DEMO_BIN, the `vault` and
# `gbg-auth-stub` already built in that directory (CI runs the demo on its debug build).
if [ -n "${GBG_VAULT_DEMO_BIN:-}" ]; then BIN="$GBG_VAULT_DEMO_BIN"; else BIN="$(bash scripts/build-release.sh vault gbg-auth-stub | tail -1)"; fi
work="$(mktemp -d)"
stub_pid=""
pg_stop=""
cleanup() { [ -n "$stub_pid" ] && kill "$stub_pid" 2>/dev/null; [ -n "$pg_stop" ] && $pg_stop; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# Demo credentials, generated fresh; they exist only in this temporary folder.
client_secret="demo-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
api_password="demo-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cat > "$work/accounts.json" <<JSON
{"clients": [{"client_id": "demo-client", "client_secret": "$client_secret"}],
 "users": [{"username": "api-user@example.com", "password": "$api_password"}]}
JSON

"$BIN/gbg-auth-stub" --accounts "$work/accounts.json" --port 0 > "$work/stub.out" 2> "$work/stub.log" &
stub_pid=$!
for _ in $(seq 100); do grep -q '^PORT ' "$work/stub.out" 2>/dev/null && break; sleep 0.05; done
port="$(sed -n 's/^PORT //p' "$work/stub.out")"
echo "== gbg-auth-stub listening on 127.0.0.1:$port"

export VAULT_PATH="$work/vault/vault.db"
printf '%s\n' "demo passphrase $(date +%s%N)" > "$work/passphrase"
chmod 600 "$work/passphrase"
export VAULT_PASSPHRASE_FILE="$work/passphrase"

echo "== vault init --kdf interactive"
"$BIN/vault" init --kdf interactive
echo "== vault env add local"
"$BIN/vault" env add local --token-url "http://127.0.0.1:$port/as/token.oauth2" --api-base "http://127.0.0.1:$port/v2/captain/"
echo "== vault add demo (secrets from the environment, never argv)"
GBG_CLIENT_SECRET="$client_secret" GBG_PASSWORD="$api_password" \
  "$BIN/vault" add demo --client-id demo-client --username api-user@example.com --env local --secrets-from-env
"$BIN/vault" list
echo "== vault token demo --format json (token shortened here)"
"$BIN/vault" token demo --format json | sed -E 's/("access_token": ?"stub-[0-9a-f]{8})[0-9a-f]*/\1…/'
echo "== vault exec demo -- sh -c '…'"
"$BIN/vault" exec demo -- sh -c 'echo "child got a token of ${#GBG_ACCESS_TOKEN} characters for $GBG_API_BASE, expiring $GBG_TOKEN_EXPIRES_AT"'
echo "== vault audit"
"$BIN/vault" audit
echo "== vault audit verify"
"$BIN/vault" audit verify
echo "== vault unlock: an agent holds the keys; token without any passphrase source; lock"
export XDG_RUNTIME_DIR="$work/run"; mkdir -m 700 "$XDG_RUNTIME_DIR"
"$BIN/vault" unlock --for 10m
env -u VAULT_PASSPHRASE_FILE "$BIN/vault" token demo --format header | sed -E 's/(Bearer stub-[0-9a-f]{8})[0-9a-f]*/\1…/'
"$BIN/vault" status
"$BIN/vault" lock
echo "== members: a CI runner with its own identity (no shared passphrase), then removed"
env -u VAULT_PASSPHRASE_FILE "$BIN/vault" identity new --no-passphrase --out "$work/ci.identity" > "$work/ci.recipient"
"$BIN/vault" member add ci-runner --recipient "$(cat "$work/ci.recipient")"
env -u VAULT_PASSPHRASE_FILE VAULT_IDENTITY_FILE="$work/ci.identity" "$BIN/vault" token demo --fresh | sed -E 's/(stub-[0-9a-f]{8})[0-9a-f]*/\1…/'
"$BIN/vault" member list
"$BIN/vault" audit --limit 3
"$BIN/vault" member remove ci-runner
env -u VAULT_PASSPHRASE_FILE VAULT_IDENTITY_FILE="$work/ci.identity" "$BIN/vault" token demo && exit 1 || echo "(the removed identity exits $?)"
"$BIN/vault" audit verify
pgbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
if [ -n "$pgbin" ] && [ -x "$pgbin/initdb" ]; then
  echo "== team vault: a throwaway PostgreSQL server; the vault copied into it, still sealed; a token from it"
  pgdir="$(mktemp -d /tmp/gbg-vault-demo-pg-XXXXXX)"
  as_pg=""; if [ "$(id -u)" = 0 ]; then chown postgres "$pgdir"; as_pg="setpriv --reuid=postgres --regid=postgres --init-groups --"; fi
  pgport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  export PGPASSWORD="demo-db-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  printf '%s' "$PGPASSWORD" > "$pgdir/pw"; [ -n "$as_pg" ] && chown postgres "$pgdir/pw"
  $as_pg "$pgbin/initdb" -D "$pgdir/data" -U gbg --pwfile="$pgdir/pw" -A scram-sha-256 -E UTF8 --locale=C --no-sync >/dev/null
  printf "listen_addresses='127.0.0.1'\nport=$pgport\nunix_socket_directories='$pgdir'\n" >> "$pgdir/data/postgresql.conf"
  $as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w start >/dev/null
  pg_stop="eval $as_pg $pgbin/pg_ctl -D $pgdir/data -m immediate -w stop >/dev/null 2>&1; rm -rf $pgdir"
  psql -X -q -h 127.0.0.1 -p "$pgport" -U gbg -d postgres -c 'CREATE DATABASE gbg' >/dev/null
  team="postgres://gbg@127.0.0.1:$pgport/gbg?sslmode=disable&schema=acme"
  "$BIN/vault" copy --to "$team"
  VAULT_PATH="$team" "$BIN/vault" doctor || true
  VAULT_PATH="$team" "$BIN/vault" token demo --fresh | sed -E 's/(stub-[0-9a-f]{8})[0-9a-f]*/\1…/'
  VAULT_PATH="$team" "$BIN/vault" audit --limit 2
  VAULT_PATH="$team" "$BIN/vault" audit verify
else
  echo "== (team vault part skipped: PostgreSQL is not installed; bash scripts/setup.sh installs it)"
fi
echo "== done; stopping the endpoint"
