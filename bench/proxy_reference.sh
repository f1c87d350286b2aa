#!/usr/bin/env bash
# A reference for the proxy's keep-alive target: HAProxy (a C reverse proxy made for this)
# in front of the same gbg-auth-stub, setting the Authorization header as `vault proxy`
# does, against the same GET sent directly; wrk with one keep-alive connection, p50/p99.
# Usage: bash bench/proxy_reference.sh BIN_DIR [SECONDS] [ROUNDS]   (BIN_DIR holds gbg-auth-stub)
set -euo pipefail
BIN="$1"; seconds="${2:-5}"; rounds="${3:-3}"
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null 2>&1
command -v haproxy >/dev/null || apt-get install -y -qq haproxy >/dev/null 2>&1
work="$(mktemp -d)"; pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cat > "$work/accounts.json" <<JSON
{"clients": [{"client_id": "c", "client_secret": "reference-secret"}], "users": [{"username": "u", "password": "reference-password"}]}
JSON
"$BIN/gbg-auth-stub" --accounts "$work/accounts.json" --port 0 > "$work/stub.out" 2>/dev/null & pids+=($!)
for _ in $(seq 100); do grep -q '^PORT ' "$work/stub.out" 2>/dev/null && break; sleep 0.05; done
sp=$(sed -n 's/^PORT //p' "$work/stub.out")
token=$(curl -s -d 'client_id=c&client_secret=reference-secret&username=u&password=reference-password&grant_type=password' \
  "http://127.0.0.1:$sp/as/token.oauth2" | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
hp=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/haproxy.cfg" <<CFG
global
  maxconn 1000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend local
  bind 127.0.0.1:$hp
  http-request set-header Authorization "Bearer $token"
  default_backend api
backend api
  http-reuse always
  server stub 127.0.0.1:$sp
CFG
haproxy -f "$work/haproxy.cfg" -db > "$work/haproxy.log" 2>&1 & pids+=($!)
sleep 0.5
echo "| round | direct p50 µs | direct p99 µs | HAProxy p50 µs | HAProxy p99 µs | p50 ratio |"
echo "|---|---|---|---|---|---|"
us() { python3 -c 'import sys; v=sys.argv[1]; print(round(float(v[:-2])*1000) if v.endswith("ms") else round(float(v[:-2])) if v.endswith("us") else round(float(v[:-1])*1e6))' "$1"; }
for r in $(seq "$rounds"); do
  d=$(wrk --latency -c1 -t1 -d"${seconds}s" -H "Authorization: Bearer $token" "http://127.0.0.1:$sp/v2/captain/ping")
  h=$(wrk --latency -c1 -t1 -d"${seconds}s" "http://127.0.0.1:$hp/v2/captain/ping")
  d50=$(us "$(awk '$1=="50%"{print $2}' <<<"$d")"); d99=$(us "$(awk '$1=="99%"{print $2}' <<<"$d")")
  h50=$(us "$(awk '$1=="50%"{print $2}' <<<"$h")"); h99=$(us "$(awk '$1=="99%"{print $2}' <<<"$h")")
  echo "| $r | $d50 | $d99 | $h50 | $h99 | $(python3 -c "print(f'{$h50/$d50:.2f}')") |"
done
