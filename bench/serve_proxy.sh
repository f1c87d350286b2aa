#!/usr/bin/env bash
# `vault serve` and `vault proxy` against their floors, side by side, with the release
# binaries: gbg-auth-stub (token endpoint and API fake) on 127.0.0.1, wrk for keep-alive
# clients (p50/p99 latency, requests per second), curl and bench/interleaved.py for whole
# processes, /proc for the proxy's RSS. Usage: bash bench/serve_proxy.sh [BIN_DIR] [SECONDS]
# (appends to bench/results/latest.md when run from bench/run.sh; alone it prints).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-}"; seconds="${2:-10}"
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null 2>&1
work="$(mktemp -d)"; pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
if [ -z "$BIN" ]; then
  built="$(bash scripts/build-release.sh vault gbg-auth-stub 2>/dev/null | tail -1)"
  BIN="$work/bin"; mkdir -p "$BIN"; install -m 0755 "$built/vault" "$built/gbg-auth-stub" "$BIN/"
fi
export HOME="$work/home" VAULT_PATH="$work/vault.db" VAULT_PASSPHRASE_FILE="$work/pass" XDG_RUNTIME_DIR="$work/run"
mkdir -p "$HOME" "$XDG_RUNTIME_DIR"; chmod 700 "$XDG_RUNTIME_DIR"
printf 'benchmark passphrase' > "$work/pass"; chmod 600 "$work/pass"
cat > "$work/accounts.json" <<JSON
{"clients": [{"client_id": "bench", "client_secret": "bench-client-secret"}], "users": [{"username": "u", "password": "bench-password"}]}
JSON
"$BIN/gbg-auth-stub" --accounts "$work/accounts.json" --port 0 > "$work/stub.out" 2>/dev/null & pids+=($!)
for _ in $(seq 100); do grep -q '^PORT ' "$work/stub.out" 2>/dev/null && break; sleep 0.05; done
port=$(sed -n 's/^PORT //p' "$work/stub.out"); stub="http://127.0.0.1:$port"
"$BIN/vault" init --kdf interactive 2>/dev/null
"$BIN/vault" env add local --token-url "$stub/as/token.oauth2" --api-base "$stub/v2/captain/" 2>/dev/null
GBG_CLIENT_SECRET=bench-client-secret GBG_PASSWORD=bench-password "$BIN/vault" add b --client-id bench --username u --env local --secrets-from-env 2>/dev/null
"$BIN/vault" unlock >/dev/null 2>&1
wait_for() { for _ in $(seq 200); do grep -q "^$2=" "$1" 2>/dev/null && return 0; sleep 0.05; done; echo "serve_proxy: $1 never printed $2" >&2; exit 1; }
env -u VAULT_PASSPHRASE_FILE "$BIN/vault" serve b > "$work/serve.out" 2>/dev/null & pids+=($!)
wait_for "$work/serve.out" GBG_CLIENT_SECRET
. <(sed 's/^/export /' "$work/serve.out")
env -u VAULT_PASSPHRASE_FILE "$BIN/vault" proxy b > "$work/proxy.out" 2>/dev/null & proxy_pid=$!; pids+=($proxy_pid)
wait_for "$work/proxy.out" GBG_PROXY_KEY
. <(sed 's/^/export /' "$work/proxy.out")
token="$("$BIN/vault" token b --format raw 2>/dev/null)"
form="grant_type=password&client_id=$GBG_CLIENT_ID&client_secret=$GBG_CLIENT_SECRET&username=u&password=p"
printf 'client_id=bench&client_secret=bench-client-secret&username=u&password=bench-password&grant_type=password' > "$work/stubform"
cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = "$form"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
LUA
cat > "$work/stubpost.lua" <<LUA
wrk.method = "POST"
wrk.body = "$(cat "$work/stubform")"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
LUA
# wrk's latency: p50 and p99 in microseconds, requests per second, and failures.
measure() { # NAME CONNECTIONS THREADS ARGS...
  local name="$1" c="$2" t="$3"; shift 3
  wrk --latency -c "$c" -t "$t" -d "${seconds}s" "$@" > "$work/wrk.txt" 2>&1
  python3 - "$name" "$work/wrk.txt" <<'PY'
import re, sys
name, text = sys.argv[1], open(sys.argv[2]).read()
def micros(label):
    m = re.search(r"^\s*" + label + r"\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    return float(m.group(1)) * {"us": 1, "ms": 1000, "s": 1e6}[m.group(2)] if m else float("nan")
rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
total = int(re.search(r"(\d+) requests in", text).group(1))
errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
non2xx = int((re.search(r"Non-2xx or 3xx responses: (\d+)", text) or [0, 0])[1])
print(f"{name}\t{micros('50%'):.0f}\t{micros('99%'):.0f}\t{rate:.0f}\t{total}\t{errors + non2xx}")
PY
}
out="$work/table.tsv"
{
  measure "stub token endpoint, keep-alive (floor)" 1 1 -s "$work/stubpost.lua" "$stub/as/token.oauth2"
  measure "vault serve, cache hit, keep-alive" 1 1 -s "$work/post.lua" "$GBG_TOKEN_URL"
  measure "GET /ping directly with the token, keep-alive" 1 1 -H "Authorization: Bearer $token" "$stub/v2/captain/ping"
  measure "GET /ping through vault proxy, keep-alive" 1 1 -H "X-Vault-Proxy-Key: $GBG_PROXY_KEY" "${GBG_API_BASE}ping"
  measure "GET /ping directly, 64 connections" 64 2 -H "Authorization: Bearer $token" "$stub/v2/captain/ping"
  measure "GET /ping through vault proxy, 64 connections" 64 2 -H "X-Vault-Proxy-Key: $GBG_PROXY_KEY" "${GBG_API_BASE}ping"
} > "$out"
# A token refresh during load: over 30 s the stub revokes every token it issued at 5 s and
# at 18 s (a refused token is replaced at most every 10 s); the proxy's requests meet 401s,
# take one fresh token and retry. Failures must stay 0.
( sleep 5; curl -s -o /dev/null -X POST "$stub/_stub/revoke"; sleep 13; curl -s -o /dev/null -X POST "$stub/_stub/revoke" ) &
revoker=$!
seconds_saved=$seconds; seconds=30
measure "proxy, 64 connections, tokens revoked twice in 30 s" 64 2 -H "X-Vault-Proxy-Key: $GBG_PROXY_KEY" "${GBG_API_BASE}ping" >> "$out"
seconds=$seconds_saved
wait "$revoker"

# Whole processes, interleaved: one curl POST to the stub (the baseline of the targets) and
# the same curl POST to vault serve.
python3 bench/interleaved.py 100 5 "$work/procs.json" \
  "curl POST to the stub=curl -s -o /dev/null -d @$work/stubform $stub/as/token.oauth2" \
  "curl POST to vault serve=curl -s -o /dev/null -d $form $GBG_TOKEN_URL" \
  "curl GET direct with the token=curl -s -o /dev/null -H 'Authorization: Bearer $token' $stub/v2/captain/ping" \
  "curl GET through vault proxy=curl -s -o /dev/null -H 'X-Vault-Proxy-Key: $GBG_PROXY_KEY' ${GBG_API_BASE}ping"

# RSS while ten 100 MB bodies go up and ten come down, one after another.
head -c $((100 << 20)) /dev/urandom > "$work/100m"
rss() { awk '/VmRSS/ {print $2}' "/proc/$proxy_pid/status"; }
curl -s -o /dev/null -H "X-Vault-Proxy-Key: $GBG_PROXY_KEY" "${GBG_API_BASE}stream?bytes=1000000"
rss_start=$(rss); : > "$work/rss"
( while kill -0 "$proxy_pid" 2>/dev/null; do rss >> "$work/rss"; sleep 0.1; done ) & sampler=$!
stream_start=$(date +%s.%N)
for _ in $(seq 10); do
  curl -s -f -o /dev/null -H "X-Vault-Proxy-Key: $GBG_PROXY_KEY" --data-binary @"$work/100m" "${GBG_API_BASE}echo"
  curl -s -f -o /dev/null -H "X-Vault-Proxy-Key: $GBG_PROXY_KEY" "${GBG_API_BASE}stream?bytes=$((100 << 20))"
done
stream_end=$(date +%s.%N)
kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true

python3 - "$out" "$work/procs.json" "$work/rss" "$rss_start" "$stream_start" "$stream_end" <<'PY'
import json, sys
rows = [line.split("\t") for line in open(sys.argv[1]).read().splitlines()]
by = {r[0]: r for r in rows}
print("| keep-alive clients (wrk) | p50 µs | p99 µs | requests/s | requests | failures |")
print("|---|---|---|---|---|---|")
for r in rows: print("| " + " | ".join(r) + " |")
procs = {r["command"]: r for r in json.load(open(sys.argv[2]))["results"]}
print()
print("| whole processes (interleaved, 100 rounds) | median ms | mean ms |")
print("|---|---|---|")
for name, r in procs.items(): print(f"| {name} | {r['median']*1000:.2f} | {r['mean']*1000:.2f} |")
curl_post = procs["curl POST to the stub"]["median"] * 1e6
serve = float(by["vault serve, cache hit, keep-alive"][1]); serve99 = float(by["vault serve, cache hit, keep-alive"][2])
direct = float(by["GET /ping directly with the token, keep-alive"][1]); proxied = float(by["GET /ping through vault proxy, keep-alive"][1])
direct99 = float(by["GET /ping directly with the token, keep-alive"][2]); proxied99 = float(by["GET /ping through vault proxy, keep-alive"][2])
curl_direct = procs["curl GET direct with the token"]["median"]; curl_proxy = procs["curl GET through vault proxy"]["median"]
samples = [int(x) for x in open(sys.argv[3]).read().split()] or [0]
start = int(sys.argv[4])
seconds = float(sys.argv[6]) - float(sys.argv[5])
print()
print("| target | measured | met |")
print("|---|---|---|")
print(f"| serve: a token request answered ≤ 0.5× one curl POST to the stub | p50 {serve/curl_post:.2f}×, p99 {serve99/curl_post:.2f}× ({serve:.0f}/{serve99:.0f} µs vs {curl_post:.0f} µs) | {'yes' if serve99/curl_post <= 0.5 else 'no'} |")
print(f"| proxy: a small GET ≤ 1.3× the same GET sent directly, keep-alive | p50 {proxied/direct:.2f}×, p99 {proxied99/direct99:.2f}× (wrk); whole curl processes {curl_proxy/curl_direct:.2f}× | {'yes' if proxied/direct <= 1.3 else 'no (wrk)'} |")
rate = float(by["GET /ping through vault proxy, 64 connections"][3]); fails = int(by["GET /ping through vault proxy, 64 connections"][5])
print(f"| proxy: ≥ 2,000 requests/s, 64 keep-alive clients, 0 failures, request log on | {rate:.0f}/s, {fails} failures | {'yes' if rate >= 2000 and fails == 0 else 'no'} |")
revoked = by["proxy, 64 connections, tokens revoked twice in 30 s"]
print(f"| a token refresh during load loses no request | {revoked[4]} requests, {revoked[5]} failures | {'yes' if int(revoked[5]) == 0 else 'no'} |")
print(f"| RSS flat (within 5 MiB) while ten 100 MB bodies go each way | {start/1024:.1f} MiB at start, {min(samples)/1024:.1f}–{max(samples)/1024:.1f} MiB during ({2000/seconds:.0f} MB/s) | {'yes' if max(samples) - start <= 5 * 1024 else 'no'} |")
PY
