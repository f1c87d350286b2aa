#!/usr/bin/env bash
# Sanitizer runs (RELIABILITY.md, "Sanitizers"):
#   asan  the whole package built with AddressSanitizer (Swift and C) and the C code with
#         UndefinedBehaviorSanitizer in trap mode (Swift on Linux has no -sanitize=undefined;
#         its own arithmetic and bounds are checked anyway; a trap is a crash, SIGILL, that
#         fails its test) in .build-asan, then the unit tests and the end-to-end
#         suites that drive the C code (the client before main, the agent protocol, process
#         hygiene, arguments) and the agent;
#   tsan  the package built with ThreadSanitizer in .build-tsan, then the agent's
#         concurrency and load tests;
#   ci    what CI runs, in minutes rather than a quarter of an hour: the build that fuzzing
#         uses (GBG_VAULT_FUZZ=1: only the project's own targets instrumented, ASan, and UBSan
#         in trap mode for C; the dependencies are the debug build's, so nothing of theirs is
#         compiled again), in .build or GBG_VAULT_SANITIZE_SCRATCH, then the suites that drive
#         the C code (the client before main, the agent protocol's writer and reader, the
#         config reader, process hygiene, arguments) and the multi-threaded listeners (the
#         agent guard, serve and proxy). It leaves that directory's project targets
#         instrumented: scripts/fuzz.sh then has nothing to build, and the next plain build
#         compiles them again.
# Every process the tests start (each `vault`, the agents, the stub) writes its sanitizer
# reports to one directory; the run fails when a test fails or any report is there.
# Usage: bash scripts/sanitize.sh [asan|tsan|all|ci]   (asan, tsan: about 15 minutes each on 2
# cores; ci: about 4)
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-all}"
case "$mode" in asan|tsan|all|ci) ;; *) echo "usage: bash scripts/sanitize.sh [asan|tsan|all|ci]" >&2; exit 64 ;; esac
reports="$(mktemp -d /tmp/gbg-vault-sanitizers-XXXXXX)"
status=0

# Leak detection is off: the Swift runtime's and libraries' allocations that live until
# exit would be reported by every process; what the run looks for is memory errors,
# undefined behaviour and data races.
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:log_path=$reports/asan"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:log_path=$reports/tsan"

run() {
  local name="$1" scratch="$2" filter="$3"; shift 3
  echo "== $name: build ($scratch)"
  swift build --build-tests --scratch-path "$scratch" "$@" 2>&1 | tail -3
  echo "== $name: tests ($filter)"
  if ! swift test --skip-build --scratch-path "$scratch" "$@" --filter "$filter" > "/tmp/gbg-vault-$name.log" 2>&1; then
    echo "$name: tests failed (log: /tmp/gbg-vault-$name.log)"; status=1
    grep -E "^✘|error:|Issue recorded|Expectation failed" "/tmp/gbg-vault-$name.log" | head -40 || true
  fi
  grep -E "^(✔|✘) Test run" "/tmp/gbg-vault-$name.log" || true
}

if [ "$mode" = asan ] || [ "$mode" = all ]; then
  run asan .build-asan \
    "VaultCoreTests|TokenClientTests|SessionTests|AgentGuardTests|ArgumentTests|ExchangeTests|InputHygieneTests|ProfileCommandTests|KeyEpochAndHygieneTests|DefaultsTests" \
    --sanitize=address -Xcc -fsanitize=undefined -Xcc -fsanitize-trap=undefined
fi
if [ "$mode" = ci ]; then
  export GBG_VAULT_FUZZ=1
  run asan-ci "${GBG_VAULT_SANITIZE_SCRATCH:-$PWD/.build}" \
    "TokenClientTests|AgentGuardTests|ArgumentTests|InputHygieneTests|AgentProtocolTests|DefaultsTests|TerminalTests"
fi
if [ "$mode" = tsan ] || [ "$mode" = all ]; then
  run tsan .build-tsan "SessionTests|AgentGuardTests|LoadTests|PostgresStoreTests" --sanitize=thread
fi

if compgen -G "$reports/*" > /dev/null; then
  echo "sanitizer reports:"; for f in "$reports"/*; do echo "--- $f"; head -40 "$f"; done
  status=1
else
  echo "no sanitizer report"
fi
rm -rf "$reports"
exit $status
