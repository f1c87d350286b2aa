#!/usr/bin/env bash
# Benchmarks of gbg-vault against the floor that does the same work, side by side in one
# run (hyperfine). Writes bench/results/latest.md. Needs: hyperfine, curl, sqlite3, gcc,
# GNU time, wrk. Usage: bash bench/run.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
# Release builds: scripts/build-release.sh (one self-contained PIE binary; static Swift
# runtime, libsodium, SQLite, zlib and libstdc++; lld with packed relative relocations;
# no exported dynamic symbols, no $ORIGIN run path; see docs/perf-history.md, "Fast start").
quick=0; [ "${1:-}" = "--quick" ] && quick=1
pg_only=0; [ "${1:-}" = "--postgres-only" ] && pg_only=1
# Only the sessions tables (every spelling of a token request through the agent).
if [ "${1:-}" = "--sessions" ]; then exec bash bench/sessions.sh "" "${2:-200}"; fi
# Only `vault serve` and `vault proxy` (keep-alive clients with wrk, 100 MB bodies).
if [ "${1:-}" = "--serve-proxy" ]; then exec bash bench/serve_proxy.sh "" "${2:-10}"; fi
apt-get install -y -qq hyperfine time gcc sqlite3 curl >/dev/null 2>&1 || true
# The binaries measured are first checked as built (the release tests and the demo).
bash scripts/release-check.sh >&2
built="$(bash scripts/build-release.sh vault gbg-auth-stub 2>/dev/null | tail -1)"
work="$(mktemp -d)"; stub_pid=""
# The binaries as README's "Install" puts them in place (`install`, a fresh sequential
# write), not the linker's output file: the same bytes start ~0.2 ms slower from lld's
# output (written through a memory map) than from a copy, because of how the file's pages
# sit in the page cache (measured side by side, 300 runs; docs/perf-history.md, "Fast start").
BIN="$work/bin"; mkdir -p "$BIN"
install -m 0755 "$built/vault" "$built/gbg-auth-stub" "$BIN/"
cleanup() { if [ -n "$stub_pid" ]; then kill "$stub_pid" 2>/dev/null || true; fi; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
gcc -O2 -o "$work/pwhash" bench/pwhash.c $(pkg-config --cflags --libs libsodium)
gcc -O2 -o "$work/box_open" bench/box_open.c $(pkg-config --cflags --libs libsodium)
out=bench/results/latest.md; mkdir -p bench/results
runs=10; [ $quick = 1 ] && runs=3
{
echo "# Benchmark run $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD), $(nproc) cores"
echo
} > "$out"
printf 'benchmark passphrase' > "$work/pass"; chmod 600 "$work/pass"
export VAULT_PASSPHRASE_FILE="$work/pass"

if [ $pg_only = 0 ]; then
# 1. Unlock vs crypto_pwhash alone, per preset.
echo "## Unlock (vault audit verify on a new vault) vs crypto_pwhash alone" >> "$out"
for preset in interactive moderate sensitive; do
  case $preset in interactive) ops=2; mem=67108864;; moderate) ops=3; mem=268435456;; sensitive) ops=4; mem=1073741824;; esac
  [ $quick = 1 ] && [ $preset = sensitive ] && continue
  v="$work/$preset.db"
  "$BIN/vault" --help >/dev/null
  VAULT_PATH="$v" "$BIN/vault" init --kdf $preset 2>/dev/null
  hyperfine -N -w 1 -r $runs --export-json "$work/h.json" \
    -n "pwhash $preset" "$work/pwhash $ops $mem" \
    -n "vault unlock $preset" "env VAULT_PATH=$v VAULT_PASSPHRASE_FILE=$work/pass $BIN/vault audit verify" >/dev/null
  python3 bench/table.py "$work/h.json" >> "$out"; echo >> "$out"
  rss=$( { VAULT_PATH="$v" /usr/bin/time -f '%M' "$BIN/vault" audit verify >/dev/null; } 2>&1 | tail -1)
  echo "peak RSS of one unlock at $preset: $((rss / 1024)) MiB (KDF memlimit $((mem / 1048576)) MiB; goal ≤ limit + 40 MiB)" >> "$out"; echo >> "$out"
done

# 1b. Unlock as a member (an unsealed identity: crypto_box_seal_open of its key slot) vs the
# passphrase (Argon2id at the default preset) vs one crypto_box_seal_open alone, each a whole
# process; and with 20 members, since every slot is tried.
v="$work/members.db"
VAULT_PATH="$v" "$BIN/vault" init --kdf moderate 2>/dev/null
env -u VAULT_PASSPHRASE_FILE "$BIN/vault" identity new --no-passphrase --out "$work/member.identity" > "$work/member.recipient" 2>/dev/null
VAULT_PATH="$v" "$BIN/vault" member add bench --recipient "$(cat "$work/member.recipient")" 2>/dev/null
echo "## Unlock as a member (identity) vs the passphrase (moderate) vs crypto_box_seal_open alone" >> "$out"
hyperfine -N -w 2 -r $runs --export-json "$work/h.json" \
  -n "crypto_box_seal_open alone (process)" "$work/box_open 1" \
  -n "vault audit verify, identity, 2 slots" "env -u VAULT_PASSPHRASE_FILE VAULT_PATH=$v VAULT_IDENTITY_FILE=$work/member.identity $BIN/vault audit verify" \
  -n "vault audit verify, passphrase (moderate)" "env VAULT_PATH=$v $BIN/vault audit verify" >/dev/null
python3 bench/table.py "$work/h.json" >> "$out"; echo >> "$out"
for i in $(seq 18); do
  env -u VAULT_PASSPHRASE_FILE "$BIN/vault" identity new --no-passphrase --out "$work/extra-$i.identity" > "$work/extra.recipient" 2>/dev/null
  VAULT_PATH="$v" VAULT_IDENTITY_FILE="$work/member.identity" "$BIN/vault" member add "extra-$i" --recipient "$(cat "$work/extra.recipient")" 2>/dev/null
done
hyperfine -N -w 2 -r $runs --export-json "$work/h.json" \
  -n "crypto_box_seal_open x20 (process)" "$work/box_open 20" \
  -n "vault audit verify, identity, 20 slots" "env -u VAULT_PASSPHRASE_FILE VAULT_PATH=$v VAULT_IDENTITY_FILE=$work/member.identity $BIN/vault audit verify" >/dev/null
python3 bench/table.py "$work/h.json" >> "$out"; echo >> "$out"

# 2. list --json on 10,000 profiles vs sqlite3 selecting the same columns.
v="$work/list.db"; VAULT_PATH="$v" "$BIN/vault" init --kdf interactive 2>/dev/null
sqlite3 "$v" "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 10000)
  INSERT INTO profile(uid, name, client_id, username, grant_type, scope, environment, client_secret_version, password_version,
                      created_at, updated_at, mac)
  SELECT randomblob(16), 'profile-' || i, 'client-' || i, 'user' || i || '@example.com', 'password', NULL, 'eu', 1, 1,
         '2026-11-29T00:00:00Z', '2026-11-29T00:00:00Z', zeroblob(32) FROM n;"
echo "## list --json, 10,000 profiles, vs sqlite3 -json selecting the same columns" >> "$out"
hyperfine -N -w 2 -r $((runs * 2)) --export-json "$work/h.json" \
  -n "process floor: vault --version" "$BIN/vault --version" \
  -n "process floor: sqlite3 'select 1'" "sqlite3 :memory: 'select 1'" \
  -n "sqlite3 -json" "sqlite3 -json $v 'SELECT name, client_id, username, grant_type, scope, environment, created_at, updated_at FROM profile ORDER BY name'" \
  -n "vault list --json" "$BIN/vault list --json --vault $v" >/dev/null
python3 bench/table.py "$work/h.json" >> "$out"; echo >> "$out"
# Interleaved too (a few-millisecond floor moves with the machine between hyperfine's tables).
echo "The same, interleaved (bench/interleaved.py; $((runs * 20)) rounds):" >> "$out"
python3 bench/interleaved.py $((runs * 20)) 5 "$work/i.json" \
  "process floor: vault --version=$BIN/vault --version" \
  "process floor: sqlite3 'select 1'=sqlite3 :memory: 'select 1'" \
  "sqlite3 -json=sqlite3 -json $v 'SELECT name, client_id, username, grant_type, scope, environment, created_at, updated_at FROM profile ORDER BY name'" \
  "vault list --json=$BIN/vault list --json --vault $v"
python3 bench/table.py "$work/i.json" >> "$out"; echo >> "$out"

fi
# 3. Token exchange vs curl, and a cache hit vs curl, against gbg-auth-stub.
cat > "$work/accounts.json" <<JSON
{"clients": [{"client_id": "bench", "client_secret": "bench-client-secret"}], "users": [{"username": "u", "password": "bench-password"}]}
JSON
"$BIN/gbg-auth-stub" --accounts "$work/accounts.json" --port 0 > "$work/stub.out" 2>/dev/null & stub_pid=$!
for _ in $(seq 100); do grep -q '^PORT ' "$work/stub.out" 2>/dev/null && break; sleep 0.05; done
port=$(sed -n 's/^PORT //p' "$work/stub.out"); url="http://127.0.0.1:$port/as/token.oauth2"
tv="$work/token.db"; export VAULT_PATH="$tv"
"$BIN/vault" init --kdf interactive 2>/dev/null
"$BIN/vault" env add local --token-url "$url" 2>/dev/null
GBG_CLIENT_SECRET=bench-client-secret GBG_PASSWORD=bench-password "$BIN/vault" add b --client-id bench --username u --env local --secrets-from-env 2>/dev/null
printf 'client_id=bench&client_secret=bench-client-secret&username=u&password=bench-password&grant_type=password' > "$work/form"
if [ $pg_only = 0 ]; then
echo "## token --fresh (KDF interactive) and cache hit vs curl doing the same POST" >> "$out"
hyperfine -N -w 2 -r $((runs * 2)) --export-json "$work/h.json" \
  -n "curl POST" "curl -s -o /dev/null -H 'Accept: application/json' --data-binary @$work/form $url" \
  -n "pwhash interactive (KDF share)" "$work/pwhash 2 67108864" \
  -n "vault token --fresh" "$BIN/vault token b --fresh" \
  -n "vault token (cache hit)" "$BIN/vault token b" >/dev/null
python3 bench/table.py "$work/h.json" >> "$out"; echo >> "$out"

# 3b. Many concurrent clients through the agent of `vault unlock`.
agent_runtime="$(mktemp -d /tmp/gv-bench-XXXXXX)"; chmod 700 "$agent_runtime"
export XDG_RUNTIME_DIR="$agent_runtime"
"$BIN/vault" unlock --for 1h 2>/dev/null
agent_pid=$("$BIN/vault" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
sync  # the 10,000-profile vault's writeback, before timing commits that fsync (as in section 6)
# No passphrase source while the agent serves.
unset VAULT_PASSPHRASE_FILE
clients=50; per_client=20; [ $quick = 1 ] && clients=10 && per_client=10
records_before=$(sqlite3 "$tv" 'SELECT count(*) FROM audit_record')
echo "## concurrent clients against one agent" >> "$out"
env -u VAULT_PASSPHRASE_FILE python3 bench/agent_load.py "$BIN/vault" b $clients $per_client "$agent_pid" >> "$out"
records_after=$(sqlite3 "$tv" 'SELECT count(*) FROM audit_record')
echo "audit records written: $((records_after - records_before)); $(env -u VAULT_PASSPHRASE_FILE "$BIN/vault" audit verify)" >> "$out"
if [ $quick = 0 ]; then
  env -u VAULT_PASSPHRASE_FILE python3 bench/agent_load.py "$BIN/vault" b 50 180 "$agent_pid" | sed 's/^/long run (10,000 requests in all): /' >> "$out"
fi
echo >> "$out"
"$BIN/vault" lock 2>/dev/null || true
unset XDG_RUNTIME_DIR; rm -rf "$agent_runtime"
export VAULT_PASSPHRASE_FILE="$work/pass"

# 3c. Every spelling of a token request through the agent (file and team vault), vs curl
# and the process floors, interleaved (bench/sessions.sh).
bash bench/sessions.sh "$BIN" $((runs * 20)) >> "$out"

# 3d. `vault serve` and `vault proxy` against the stub and direct requests (bench/serve_proxy.sh).
echo "## vault serve and vault proxy" >> "$out"
bash bench/serve_proxy.sh "$BIN" 10 >> "$out"

# 4. audit --profile X --limit 50 --json on 1,000,000 records vs sqlite3.
v="$work/audit.db"; VAULT_PATH="$v" "$BIN/vault" init --kdf interactive 2>/dev/null
n=1000000; [ $quick = 1 ] && n=100000
sqlite3 "$v" "WITH RECURSIVE s(i) AS (SELECT 2 UNION ALL SELECT i+1 FROM s WHERE i < $n + 1)
  INSERT INTO audit_record(seq, at, action, profile, environment, token_url, grant_type, outcome, http_status, attempts,
    duration_ms, token_type, expires_in, expires_at, request_id, token_fingerprint, mac, key_epoch)
  SELECT i, 1764374400000 + i, 'token', 'profile-' || (i % 100), 'eu', 'https://api.auth.gbgplc.com/as/token.oauth2',
    'password', 'ok', 200, 1, 80, 'Bearer', 3600, 1764378000 + i, 'req-' || i, hex(randomblob(16)), zeroblob(32), 1 FROM s;"
echo "## audit --profile X --limit 50 --json on $n records vs sqlite3 -json" >> "$out"
hyperfine -N -w 5 -r $((runs * 10)) --export-json "$work/h.json" \
  -n "sqlite3 -json" "sqlite3 -json $v 'SELECT * FROM audit_record WHERE profile = \"profile-7\" ORDER BY seq DESC LIMIT 50'" \
  -n "vault audit" "$BIN/vault audit --vault $v --profile profile-7 --limit 50 --json" \
  -n "process floor: vault --version" "$BIN/vault --version" >/dev/null
python3 bench/table.py "$work/h.json" >> "$out"; echo >> "$out"
echo "The same, interleaved (bench/interleaved.py; $((runs * 20)) rounds):" >> "$out"
python3 bench/interleaved.py $((runs * 20)) 5 "$work/i.json" \
  "sqlite3 -json=sqlite3 -json $v 'SELECT * FROM audit_record WHERE profile = \"profile-7\" ORDER BY seq DESC LIMIT 50'" \
  "vault audit=$BIN/vault audit --vault $v --profile profile-7 --limit 50 --json" \
  "process floor: vault --version=$BIN/vault --version"
python3 bench/table.py "$work/i.json" >> "$out"; echo >> "$out"

# 5. Audit records written per second under 4 parallel writers (cache hits: unlock + one audit write each).
per=50; [ $quick = 1 ] && per=10
start=$(date +%s.%N)
pids=""
for w in 1 2 3 4; do ( for i in $(seq $per); do VAULT_PATH="$tv" "$BIN/vault" token b >/dev/null; done ) & pids="$pids $!"; done
for p in $pids; do wait "$p"; done
end=$(date +%s.%N)
echo "## audit writes under 4 parallel writers" >> "$out"
python3 -c "import sys; t=$end-$start; n=4*$per; print(f'{n} records in {t:.2f} s = {n/t:.1f} records/s (each includes an Argon2id unlock at interactive)')" >> "$out"
VAULT_PATH="$tv" "$BIN/vault" audit verify >> "$out"
echo >> "$out"
fi

# 6. The PostgreSQL team store, against a server this script starts (initdb in
# a temporary directory, as the postgres user when run as root; SCRAM password auth over
# TCP on 127.0.0.1), stopped at exit.
pgbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
if [ -n "$pgbin" ] && [ -x "$pgbin/initdb" ]; then
  pgdir="$(mktemp -d /tmp/gv-bench-pg-XXXXXX)"
  as_pg=""; if [ "$(id -u)" = 0 ]; then chown postgres "$pgdir"; as_pg="setpriv --reuid=postgres --regid=postgres --init-groups --"; fi
  pgport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  pgpass="bench-pg-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  printf '%s' "$pgpass" > "$pgdir/pw"; [ -n "$as_pg" ] && chown postgres "$pgdir/pw"
  $as_pg "$pgbin/initdb" -D "$pgdir/data" -U bench --pwfile="$pgdir/pw" -A scram-sha-256 -E UTF8 --locale=C --no-sync >/dev/null
  printf "listen_addresses='127.0.0.1'\nport=$pgport\nunix_socket_directories='$pgdir'\n" >> "$pgdir/data/postgresql.conf"
  $as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w start >/dev/null
  pg_stop() { $as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -m immediate -w stop >/dev/null 2>&1 || true; rm -rf "$pgdir"; }
  trap 'pg_stop; cleanup' EXIT
  export PGPASSWORD="$pgpass"
  psql -X -q -h 127.0.0.1 -p "$pgport" -U bench -d postgres -c 'CREATE DATABASE gbg' >/dev/null
  pgurl="postgres://bench@127.0.0.1:$pgport/gbg?sslmode=disable&schema=team"
  VAULT_PATH="$tv" "$BIN/vault" copy --to "$pgurl" 2>/dev/null
  # The sections before wrote gigabytes (the million-record vault, the write loops): let
  # their writeback finish first, so it does not land in these commits' fsyncs (in one
  # full run without this the PostgreSQL cache hit measured 6.6 ms against 5.4 ms alone).
  sync
  echo "## PostgreSQL: token cache hit through the agent, PostgreSQL vs SQLite (the same vault, copied)" >> "$out"
  rt_sqlite="$(mktemp -d /tmp/gv-bench-XXXXXX)"; rt_pg="$(mktemp -d /tmp/gv-bench-XXXXXX)"; chmod 700 "$rt_sqlite" "$rt_pg"
  XDG_RUNTIME_DIR="$rt_sqlite" VAULT_PATH="$tv" "$BIN/vault" unlock --for 1h 2>/dev/null
  XDG_RUNTIME_DIR="$rt_pg" VAULT_PATH="$pgurl" "$BIN/vault" unlock --for 1h 2>/dev/null
  XDG_RUNTIME_DIR="$rt_pg" VAULT_PATH="$pgurl" "$BIN/vault" token b >/dev/null
  hyperfine -N -w 5 -r $((runs * 10)) --export-json "$work/h.json" \
    -n "SQLite: vault token, agent, cache hit" "env -u VAULT_PASSPHRASE_FILE XDG_RUNTIME_DIR=$rt_sqlite VAULT_PATH=$tv $BIN/vault token b" \
    -n "PostgreSQL: vault token, agent, cache hit" "env -u VAULT_PASSPHRASE_FILE XDG_RUNTIME_DIR=$rt_pg VAULT_PATH=$pgurl $BIN/vault token b" >/dev/null
  python3 bench/table.py "$work/h.json" >> "$out"; echo >> "$out"
  # Interleaved too: hyperfine measures the two stores a few seconds apart, and on this
  # shared machine that alone moved the ratio by 0.2 between runs of the same code.
  echo "The same, interleaved (bench/interleaved.py; $((runs * 20)) rounds):" >> "$out"
  python3 bench/interleaved.py $((runs * 20)) 5 "$work/i.json" \
    "SQLite: vault token, agent, cache hit=env -u VAULT_PASSPHRASE_FILE XDG_RUNTIME_DIR=$rt_sqlite VAULT_PATH=$tv $BIN/vault token b" \
    "PostgreSQL: vault token, agent, cache hit=env -u VAULT_PASSPHRASE_FILE XDG_RUNTIME_DIR=$rt_pg VAULT_PATH=$pgurl $BIN/vault token b"
  python3 bench/table.py "$work/i.json" >> "$out"; echo >> "$out"
  XDG_RUNTIME_DIR="$rt_sqlite" VAULT_PATH="$tv" "$BIN/vault" lock 2>/dev/null || true
  XDG_RUNTIME_DIR="$rt_pg" VAULT_PATH="$pgurl" "$BIN/vault" lock 2>/dev/null || true
  rm -rf "$rt_sqlite" "$rt_pg"

  # Audit appends from 8 concurrent writers (each a whole `vault token` process: an
  # Argon2id unlock at interactive, a connection, one signed record).
  per=25; [ $quick = 1 ] && per=5
  before=$(psql -X -A -t -h 127.0.0.1 -p "$pgport" -U bench -d gbg -c 'SELECT count(*) FROM team.audit_record')
  start=$(date +%s.%N); pids=""
  for w in 1 2 3 4 5 6 7 8; do ( for i in $(seq $per); do VAULT_PATH="$pgurl" "$BIN/vault" token b >/dev/null || echo FAILED; done ) & pids="$pids $!"; done
  for p in $pids; do wait "$p"; done
  end=$(date +%s.%N)
  after=$(psql -X -A -t -h 127.0.0.1 -p "$pgport" -U bench -d gbg -c 'SELECT count(*) FROM team.audit_record')
  echo "## PostgreSQL: audit appends from 8 concurrent writers" >> "$out"
  python3 -c "t=$end-$start; n=8*$per; got=$after-$before; print(f'{n} tokens in {t:.2f} s = {n/t:.1f} records/s (whole processes, each with an Argon2id unlock at interactive); records written: {got}, lost: {n-got}')" >> "$out"
  VAULT_PATH="$pgurl" "$BIN/vault" audit verify >> "$out"
  echo >> "$out"

  # audit --member M --limit 50 on 1,000,000 records vs psql running the same query.
  pgv="postgres://bench@127.0.0.1:$pgport/gbg?sslmode=disable&schema=big"
  VAULT_PATH="$pgv" "$BIN/vault" init --kdf interactive 2>/dev/null
  n=1000000; [ $quick = 1 ] && n=100000
  psql -X -q -h 127.0.0.1 -p "$pgport" -U bench -d gbg -c "INSERT INTO big.audit_record(seq, at, action, profile, environment, token_url, grant_type,
      outcome, http_status, attempts, duration_ms, token_type, expires_in, expires_at, request_id, token_fingerprint, mac, key_epoch, member)
    SELECT i, 1764374400000 + i, 'token', 'profile-' || (i % 100), 'eu', 'https://api.auth.gbgplc.com/as/token.oauth2', 'password', 'ok',
      200, 1, 80, 'Bearer', 3600, 1764378000 + i, 'req-' || i, md5(i::text), decode(repeat('00', 32), 'hex'), 1,
      CASE WHEN i % 10 = 0 THEN 'ci-runner' ELSE 'owner' END FROM generate_series(2, $n + 1) AS i; ANALYZE big.audit_record" >/dev/null
  q="SELECT json_build_object('seq', seq, 'at', at, 'action', action, 'profile', profile, 'environment', environment, 'token_url', token_url, 'grant_type', grant_type, 'outcome', outcome, 'http_status', http_status, 'oauth_error', oauth_error, 'attempts', attempts, 'duration_ms', duration_ms, 'token_type', token_type, 'expires_in', expires_in, 'expires_at', expires_at, 'request_id', request_id, 'token_fingerprint', token_fingerprint, 'detail', detail, 'member', member) FROM big.audit_record WHERE member = 'ci-runner' ORDER BY seq DESC LIMIT 50"
  echo "## PostgreSQL: audit --member M --limit 50 --json on $n records vs psql running the same query" >> "$out"
  hyperfine -N -w 2 -r $((runs * 2)) --export-json "$work/h.json" \
    -n "psql" "psql -X -A -t -h 127.0.0.1 -p $pgport -U bench -d gbg -c \"$q\"" \
    -n "vault audit (PostgreSQL)" "env VAULT_PATH=$pgv $BIN/vault audit --member ci-runner --limit 50 --json" >/dev/null
  python3 bench/table.py "$work/h.json" >> "$out"; echo >> "$out"
else
  echo "## PostgreSQL: skipped (no PostgreSQL server programs: apt-get install postgresql)" >> "$out"
fi
cat "$out"
