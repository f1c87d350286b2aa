#!/usr/bin/env bash
# Makes the format-1 fixture vaults in this folder with a *format-1* build of gbg-vault
# (they were made with the landed commit 1e45126, debug build). Kept for reference: the
# committed .db files are what the upgrade tests use; re-running this needs that build.
#
# usage: testvectors/v1/make-fixtures.sh BIN_DIR   (folder with vault and gbg-auth-stub)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$1"
work="$(mktemp -d)"
stub_pid=""
cleanup() { [ -n "$stub_pid" ] && kill "$stub_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# Fixture credentials: test data only, never valid anywhere.
cs1="fixture-cs-v1-6f1d"; cs2="fixture-cs-v2-90ab"; cs3="fixture-cs-v3-77e2"
pw1="fixture-pw-v1 &=+%"; pw2="fixture-pw-v2-ß∂ƒ"
cc1="fixture-cc-v1-3c3c"
gone="fixture-gone-secret-1234"
cat > "$work/accounts.json" <<JSON
{"clients": [{"client_id": "client-pw", "client_secret": "$cs3", "grants": ["password"]},
             {"client_id": "client-cc", "client_secret": "$cc1", "grants": ["client_credentials"], "scopes": ["gbg.token"]}],
 "users": [{"username": "api-user@example.com", "password": "$pw2"}]}
JSON
"$bin/gbg-auth-stub" --accounts "$work/accounts.json" --port 0 > "$work/stub.out" 2> "$work/stub.log" &
stub_pid=$!
for _ in $(seq 100); do grep -q '^PORT ' "$work/stub.out" 2>/dev/null && break; sleep 0.05; done
port="$(sed -n 's/^PORT //p' "$work/stub.out")"

make_one() { # NAME KDF-ARGS... ; env GBG_VAULT_TEST_ONLY_INSECURE_KDF decides the test KDF
  local name="$1"
  export VAULT_PATH="$work/$name/vault.db" VAULT_PASSPHRASE="fixture passphrase v1 ✓"
  v() { "$bin/vault" "$@"; }
  v init --kdf interactive
  v env add local --token-url "http://127.0.0.1:$port/as/token.oauth2" --api-base "http://127.0.0.1:$port/v2/captain/"
  v env add spare --token-url "https://auth.example.com/as/token.oauth2"
  printf '{"client_secret": "%s", "password": "%s"}' "$cs1" "$pw1" | v add pw --client-id client-pw --username api-user@example.com --env local --secrets-stdin
  printf '{"client_secret": "%s"}' "$gone" | v add gone --client-id client-gone --grant client-credentials --env eu --secrets-stdin
  printf '{"client_secret": "%s"}' "$cc1" | v add cc --client-id client-cc --grant client-credentials --scope gbg.token --env local --secrets-stdin
  printf '{"client_secret": "%s"}' "$cs2" | v rotate pw --client-secret --secrets-stdin
  printf '{"client_secret": "%s", "password": "%s"}' "$cs3" "$pw2" | v rotate pw --client-secret --password --secrets-stdin
  v remove gone --yes
  v token pw > /dev/null
  v token pw > /dev/null
  v token cc > /dev/null
  v audit verify
  sqlite3 "$VAULT_PATH" "PRAGMA wal_checkpoint(TRUNCATE);" > /dev/null
  cp "$VAULT_PATH" "$here/$name.db"
  chmod 600 "$here/$name.db"
}
GBG_VAULT_TEST_ONLY_INSECURE_KDF= make_one v1-interactive
GBG_VAULT_TEST_ONLY_INSECURE_KDF=1 make_one v1-testkdf
cat > "$here/fixtures.json" <<JSON
{"passphrase": "fixture passphrase v1 ✓",
 "made_by": "gbg-vault 0.1.0, format 1 (commit 1e45126)",
 "profiles": {
   "pw": {"client_secret": ["$cs1", "$cs2", "$cs3"], "password": ["$pw1", "$pw2"], "environment": "local"},
   "cc": {"client_secret": ["$cc1"], "environment": "local"}},
 "removed_profiles": {"gone": {"client_secret": ["$gone"]}},
 "environments": ["local", "spare"],
 "cached_tokens": 2}
JSON
echo "fixtures written to $here"
