#!/usr/bin/env bash
# Makes the format-3 fixture vault in this folder with a *format-3* build of gbg-vault
# (made with the debug build of commit d4e2cae). Kept for reference: the committed files
# are what the 3-to-4 upgrade tests use; re-running this needs that build.
#
# The vault has the owner, member alice (who added carol herself, as format 3 let any
# member do), member bob (added, then removed by the owner: a new key epoch), two
# profiles, a user environment and signed token records by the owner and by alice.
#
# usage: testvectors/v3/make-fixtures.sh BIN_DIR   (folder with vault and gbg-auth-stub)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$1"
work="$(mktemp -d)"
stub_pid=""
cleanup() { [ -n "$stub_pid" ] && kill "$stub_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# Fixture credentials: test data only, never valid anywhere.
cs1="fixture-cs-v3a-51c0"; cs2="fixture-cs-v3b-e2a7"; pw1="fixture-pw-v3 &=+%"; cc1="fixture-cc-v3-0d0d"
cat > "$work/accounts.json" <<JSON
{"clients": [{"client_id": "client-pw", "client_secret": "$cs2", "grants": ["password"]},
             {"client_id": "client-cc", "client_secret": "$cc1", "grants": ["client_credentials"], "scopes": ["gbg.token"]}],
 "users": [{"username": "api-user@example.com", "password": "$pw1"}]}
JSON
"$bin/gbg-auth-stub" --accounts "$work/accounts.json" --port 0 > "$work/stub.out" 2> "$work/stub.log" &
stub_pid=$!
for _ in $(seq 100); do grep -q '^PORT ' "$work/stub.out" 2>/dev/null && break; sleep 0.05; done
port="$(sed -n 's/^PORT //p' "$work/stub.out")"

export HOME="$work/home" XDG_STATE_HOME="$work/state" XDG_RUNTIME_DIR="$work/run" VAULT_NO_AGENT=1
mkdir -p "$HOME" "$XDG_RUNTIME_DIR"; chmod 700 "$XDG_RUNTIME_DIR"
export GBG_VAULT_TEST_ONLY_INSECURE_KDF=1
export VAULT_PATH="$work/vault.db" VAULT_PASSPHRASE="fixture passphrase v1 ✓"
v() { "$bin/vault" "$@"; }
for m in alice bob carol; do v identity new --no-passphrase --out "$work/$m.id" > /dev/null; done
v init --kdf interactive
v env add local --token-url "http://127.0.0.1:$port/as/token.oauth2" --api-base "http://127.0.0.1:$port/v2/captain/"
printf '{"client_secret": "%s", "password": "%s"}' "$cs1" "$pw1" | v add pw --client-id client-pw --username api-user@example.com --env local --secrets-stdin
printf '{"client_secret": "%s"}' "$cc1" | v add cc --client-id client-cc --grant client-credentials --scope gbg.token --env local --secrets-stdin
printf '{"client_secret": "%s"}' "$cs2" | v rotate pw --client-secret --secrets-stdin
v member add alice --recipient "$(v identity show --identity "$work/alice.id")"
v member add bob --recipient "$(v identity show --identity "$work/bob.id")"
v token pw > /dev/null
VAULT_PASSPHRASE= v member add carol --identity "$work/alice.id" --recipient "$(v identity show --identity "$work/carol.id")"
VAULT_PASSPHRASE= v token cc --identity "$work/alice.id" > /dev/null
v member remove bob
VAULT_PASSPHRASE= v token pw --identity "$work/carol.id" > /dev/null
v audit verify
v verify
sqlite3 "$VAULT_PATH" "PRAGMA wal_checkpoint(TRUNCATE);" > /dev/null
cp "$VAULT_PATH" "$here/v3-testkdf.db"
for m in alice bob carol; do cp "$work/$m.id" "$here/$m.id"; done
chmod 600 "$here"/*.db "$here"/*.id
cat > "$here/fixtures.json" <<JSON
{"passphrase": "fixture passphrase v1 ✓",
 "made_by": "gbg-vault, format 3 (commit d4e2cae)",
 "profiles": {
   "pw": {"client_secret": ["$cs1", "$cs2"], "password": ["$pw1"], "environment": "local"},
   "cc": {"client_secret": ["$cc1"], "environment": "local"}},
 "members": {"owner": "passphrase", "alice": "alice.id", "carol": "carol.id"},
 "removed_members": {"bob": "bob.id"},
 "environments": ["local"]}
JSON
