#!/usr/bin/env bash
# Makes the committed seed corpus (Fuzz/corpus/TARGET/): real requests, answers, token
# responses, recipients, identity files, URLs, password files and vault files, made with
# the debug `vault` (test-only KDF settings) and the local token endpoint.
# Usage: bash Fuzz/make-seeds.sh   (after `swift build`; replaces the seeds it makes)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(swift build --show-bin-path)"
corpus="$PWD/Fuzz/corpus"
work="$(mktemp -d)"
stub_pid=""
cleanup() { [ -n "$stub_pid" ] && kill "$stub_pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
export GBG_VAULT_TEST_ONLY_INSECURE_KDF=1 HOME="$work/home" XDG_RUNTIME_DIR="$work/run" XDG_STATE_HOME="$work/state"
mkdir -p "$HOME" "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
for target in agent-frames agent-request-writer agent-answer token-response recipient identity-file postgres-url postgres-url-parts pgpass vault-file config-file token-arguments serve-request proxy-path request-log; do
  mkdir -p "$corpus/$target"
done

# Identities and recipients.
"$bin/vault" identity new --no-passphrase --out "$work/plain.id" > "$work/plain.recipient"
VAULT_IDENTITY_PASSPHRASE="fixture passphrase v1 ✓" "$bin/vault" identity new --out "$work/sealed.id" > "$work/sealed.recipient"
cp "$work/plain.id" "$corpus/identity-file/unsealed"
cp "$work/sealed.id" "$corpus/identity-file/sealed"
tr -d '\n' < "$work/plain.recipient" > "$corpus/recipient/plain"
tr -d '\n' < "$work/sealed.recipient" > "$corpus/recipient/sealed"

# A format-4 vault with profiles of both grants, a user environment, tokens and a member.
cat > "$work/accounts.json" <<JSON
{"clients": [{"client_id": "client-pw", "client_secret": "seed-secret-pw", "grants": ["password"]},
             {"client_id": "client-cc", "client_secret": "seed-secret-cc", "grants": ["client_credentials"], "scopes": ["gbg.token"]}],
 "users": [{"username": "api-user@example.com", "password": "seed-password"}]}
JSON
"$bin/gbg-auth-stub" --accounts "$work/accounts.json" --port 0 > "$work/stub.out" 2> "$work/stub.log" &
stub_pid=$!
for _ in $(seq 100); do grep -q '^PORT ' "$work/stub.out" 2>/dev/null && break; sleep 0.05; done
port="$(sed -n 's/^PORT //p' "$work/stub.out")"
export VAULT_PATH="$work/vault.db" VAULT_PASSPHRASE="fixture passphrase v1 ✓"
"$bin/vault" init --allow-short-passphrase > /dev/null
"$bin/vault" env add local --token-url "http://127.0.0.1:$port/as/token.oauth2" --api-base "http://127.0.0.1:$port/api/" > /dev/null
GBG_CLIENT_SECRET=seed-secret-pw GBG_PASSWORD=seed-password \
  "$bin/vault" add pw --client-id client-pw --username api-user@example.com --env local --secrets-from-env > /dev/null
GBG_CLIENT_SECRET=seed-secret-cc "$bin/vault" add cc --client-id client-cc --grant client-credentials --scope gbg.token --env local --secrets-from-env > /dev/null
"$bin/vault" token pw > /dev/null
"$bin/vault" token cc > /dev/null
GBG_CLIENT_SECRET=seed-secret-cc "$bin/vault" rotate cc --secrets-from-env > /dev/null
"$bin/vault" member add robot --recipient "$(cat "$work/plain.recipient")" > /dev/null
sqlite3 "$VAULT_PATH" "PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE;" > /dev/null
cp "$VAULT_PATH" "$corpus/vault-file/format-4"
cp testvectors/v3/v3-testkdf.db "$corpus/vault-file/format-3"
cp testvectors/v1/v1-testkdf.db "$corpus/vault-file/format-1"
# Token responses as the endpoint sends them (made-up tokens), behind the target's status, grant and
# Retry-After prefix (FuzzTargets' TokenResponses).
python3 - "$corpus" <<'PY'
import json, struct, sys
corpus = sys.argv[1]
def save(target, name, data):
    with open(f"{corpus}/{target}/{name}", "wb") as f: f.write(data)
def response(status, grant, retry, body):
    return struct.pack(">H", status - 100) + bytes([grant, len(retry)]) + retry + body
ok = json.dumps({"access_token": "seed-token.not-a-real-one_0123456789", "token_type": "Bearer", "expires_in": 3600, "scope": "gbg.token"}).encode()
save("token-response", "ok", response(200, 1, b"", ok))
save("token-response", "ok-quoted-expiry", response(200, 0, b"", b'{"access_token":"abc.def-_~+/==","token_type":"bearer","expires_in":"60"}'))
save("token-response", "invalid-grant", response(400, 1, b"", b'{"error":"invalid_grant","error_description":"Password expired"}'))
save("token-response", "invalid-client", response(401, 0, b"", b'{"error":"invalid_client"}'))
save("token-response", "busy", response(429, 0, b"Sun, 06 Dec 2026 10:00:00 GMT", b"slow down"))
save("token-response", "redirect", response(302, 0, b"5", b""))
def frame(obj):
    data = json.dumps(obj, separators=(",", ":")).encode()
    return struct.pack(">I", len(data)) + data
network = {"ca_bundle": "/etc/ssl/ca.pem", "proxy": {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "localhost"}}
token_request = {"version": 2, "op": "token", "token": {"profile": "pw", "environment": "eu", "print": True, "format": "json",
                 "action": "exec", "fresh": False, "min_ttl": 300, "timeout_ms": 30000, "connect_timeout_ms": 10000}, "network": network}
save("agent-frames", "token", frame(token_request))
save("agent-frames", "status-then-lock", frame({"version": 2, "op": "status"}) + frame({"version": 2, "op": "lock"}))
save("agent-frames", "verify", frame({"version": 2, "op": "verify"}) + frame({"version": 2, "op": "audit-verify"}))
save("agent-frames", "old-version", frame({"version": 1, "op": "token", "profile": "pw"}))
save("agent-frames", "unknown-op", frame({"version": 2, "op": "env-add", "token": {"profile": "x"}}))
# The writer's target: flags, op, then length-prefixed strings and numbers (TokenRequestWriter).
def chunk(b): return bytes([len(b)]) + b
save("agent-request-writer", "token", bytes([0x3f, 5]) + chunk(b"pw") + chunk(b"eu") + chunk(b"json") + struct.pack(">qqq", 300, 30000, 10000)
     + bytes([0b101, 0b10000001]) + chunk(b"http://user:pass@proxy:3128") + chunk(b"localhost,127.0.0.1"))
save("agent-request-writer", "status", bytes([0, 1]))
save("agent-request-writer", "not-utf8", bytes([0x01, 5]) + chunk(b"p\xc3(") + bytes([0, 0]))
status = {"pid": 42, "vault": "/home/u/.local/share/gbg-vault/vault.db", "unlocked_at": 1, "expires_at": 2, "idle_seconds": 900,
          "idle_expires_at": 3, "requests": 4, "network": network,
          "keep_fresh": [{"profile": "pw", "environment": "eu", "expires_at": 5, "next_refresh_at": 6, "refreshes": 1, "failures": 0}]}
answer = lambda obj: b"J" + json.dumps(obj, separators=(",", ":")).encode()
save("agent-answer", "status", answer({"version": 2, "ok": True, "status": status}))
save("agent-answer", "token", answer({"version": 2, "ok": True, "token": {"access_token": "abc", "token_type": "Bearer", "expires_at": 9,
     "expires_in": 3600, "environment": "eu", "api_base": "https://eu.platform.go.gbgplc.com/v2/captain/", "from_cache": True}}))
save("agent-answer", "failure", answer({"version": 2, "ok": False, "error": {"exit_code": 7, "message": "integrity failure: x", "hint": "h", "ending": True}}))
save("agent-answer", "audit", answer({"version": 2, "ok": True, "audit": {"records_checked": 12, "failure_seq": 4, "failure_reason": "mac"}}))
save("agent-answer", "output", b"Oexport GBG_ACCESS_TOKEN='abc'\n")
for i, url in enumerate(["postgres://vault_admin:pw@db.example.com:5433/vault?sslmode=verify-full&schema=team_a",
                         "postgresql://u@localhost/db?host=/var/run/postgresql&sslmode=disable",
                         "postgres://u%40x:p%3Aw@[::1]:5432/d?sslmode=verify-ca&sslrootcert=/etc/ca.pem",
                         "postgres://u@h/d?sslmode=require&schema=s_1&application_name=x"]):
    save("postgres-url", f"url-{i}", url.encode())
save("pgpass", "simple", bytes([2]) + b"db" + bytes([5]) + b"vault" + bytes([5]) + b"admin" + bytes([6]) + b"s3:c\\r" + bytes([0x31])
     + b"# a comment\n*:*:*:*:other\n")
# vault serve's endpoint (FuzzTargets' ServeRequests): a method byte (0 POST, 1 GET), then
# length-prefixed request target, Content-Type and Authorization, then the body; the
# placeholder credentials are the target's fixed ones.
import base64
pid, psecret = b"gbgvault-0123456789ab", b"fuzz-placeholder-secret-0123456789abcdefghi"
form_type = b"application/x-www-form-urlencoded"
def serve(method, uri, ctype, auth, body): return bytes([method]) + chunk(uri) + chunk(ctype) + chunk(auth) + body
save("serve-request", "form-password", serve(0, b"/as/token.oauth2", form_type, b"",
     b"grant_type=password&client_id=" + pid + b"&client_secret=" + psecret + b"&username=api%40example.com&password=p+w"))
save("serve-request", "basic-client-credentials", serve(0, b"/captain/api/as/token.oauth2?x=1", form_type + b"; charset=UTF-8",
     b"Basic " + base64.b64encode(pid + b":" + psecret), b"grant_type=client_credentials&scope=gbg"))
save("serve-request", "wrong-secret", serve(0, b"/as/token.oauth2", form_type, b"", b"grant_type=password&client_id=" + pid + b"&client_secret=nope"))
save("serve-request", "both-methods", serve(0, b"/as/token.oauth2", form_type, b"Basic " + base64.b64encode(pid + b":" + psecret),
     b"grant_type=password&client_secret=" + psecret))
save("serve-request", "get", serve(1, b"/as/token.oauth2", b"", b"", b""))
save("serve-request", "repeated", serve(0, b"/as/token.oauth2", form_type, b"", b"grant_type=password&grant_type=password&client_id=" + pid))
# vault proxy's request targets (ProxyPaths): a byte choosing the API base, then the target.
for i, uri in enumerate([b"/ping", b"/v2/captain/journey/start?x=1&y=%20", b"/%2e%2e/admin", b"/a;b/c#frag", b"/..;/x", b"//evil.example/x", b"/caf%C3%A9/%ff"]):
    save("proxy-path", f"target-{i}", bytes([i % 4]) + uri)
# The request log (RequestLogs): a proxy-requests record's detail, and a log's lines.
save("request-log", "summary", b"log=pw-20261207T091500Z-4242.jsonl lines=1-3 requests=3 2xx=2 3xx=0 4xx=1 5xx=0 bytes_in=10 bytes_out=2048 digest=" + b"0123456789abcdef" * 4)
save("request-log", "lines", b'{"seq":1,"at":1796631300000,"profile":"pw","method":"GET","path":"/ping","status":200,"bytes_in":0,"bytes_out":17,"ms":3,"request_id":"r-1","caller":"tcp:127.0.0.1:50000"}\n'
     + b'{"seq":2,"at":1796631300100,"profile":"pw","method":"POST","path":"/echo","status":0,"bytes_in":9,"bytes_out":0,"ms":1,"caller":"unix:uid=0,pid=7","aborted":true}\n'
     + b'not json\n{"seq":3')
PY
# The URL-parts target: user, password, database and host label as length-prefixed text
# (FuzzTargets' PostgresURLParts), the rest zeros.
printf 'user\x08password\x05vault\x03abc' > "$corpus/postgres-url-parts/simple"
# The C targets: config files and `vault token` argument lists (NUL-separated).
printf '# gbg-vault config\nvault = /home/u/team.db\nformat=json\n  env = eu  \nbroken line\n' > "$corpus/config-file/basic"
printf 'vault = postgres://u@h/d?sslmode=require\n' > "$corpus/config-file/postgres"
printf 'token\0pw\0--env\0eu\0--format\0json\0--min-ttl\0300\0' > "$corpus/token-arguments/full"
printf -- '--vault\0/tmp/v.db\0token\0cc\0--fresh\0--exec\0' > "$corpus/token-arguments/global-first"
printf 'token\0--format=env\0pw\0--\0x\0' > "$corpus/token-arguments/equals"
echo "seeds: $(find "$corpus" -type f | wc -l) files in $(ls "$corpus" | wc -l) targets"
