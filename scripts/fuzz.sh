#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer, AddressSanitizer; the C code with UndefinedBehavior-
# Sanitizer in trap mode too) of every parser of untrusted bytes: the targets and their
# properties are listed in Fuzz/README.md.
#   bash scripts/fuzz.sh [--time SECONDS] [--jobs N] [--seed N] [TARGET...]
#   (default: 60 s each, every target, one at a time, a random seed; --jobs runs N targets side
#   by side, each libFuzzer process on one core; --seed fixes libFuzzer's seed, so that a run
#   repeats the same inputs: CI gives each target 20 s, two at a time, from a fixed seed, so
#   that a landing fails on a change and not on the luck of a draw; campaigns draw)
# Builds in .build-fuzz (the first build compiles the dependencies: minutes), runs each
# target from its committed seeds (Fuzz/corpus/TARGET) plus what earlier runs found
# (.build-fuzz/corpus/TARGET), and prints executions, coverage and crashes per target. A
# crash's input is kept in .build-fuzz/crashes/TARGET/; commit it to Fuzz/regressions/TARGET/
# with its fix (the suite runs every committed input through the Swift targets). Exits 1 when
# any target crashed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=60
jobs=1
seed=""
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --time) seconds="$2"; shift 2 ;;
    --time=*) seconds="${1#--time=}"; shift ;;
    --jobs) jobs="$2"; shift 2 ;;
    --jobs=*) jobs="${1#--jobs=}"; shift ;;
    --seed) seed="$2"; shift 2 ;;
    --seed=*) seed="${1#--seed=}"; shift ;;
    -h|--help) sed -n 2,16p "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
# The targets are the seed folders (the suite checks that every Swift target has one); the
# C ones are those with a source in Fuzz/C (config_file.c is `config-file`).
c_targets=()
for source in Fuzz/C/*.c; do name="$(basename "$source" .c)"; c_targets+=("${name//_/-}"); done
swift_targets=()
for folder in Fuzz/corpus/*/; do
  name="$(basename "$folder")"
  case " ${c_targets[*]} " in *" $name "*) ;; *) swift_targets+=("$name") ;; esac
done
[ ${#targets[@]} -eq 0 ] && targets=("${swift_targets[@]}" "${c_targets[@]}")
# GBG_VAULT_FUZZ_SCRATCH: another build directory (CI uses .build once its suite has run:
# only the project's own targets are then compiled again, in about a minute).
scratch="${GBG_VAULT_FUZZ_SCRATCH:-$PWD/.build-fuzz}"
mkdir -p "$scratch/c" "$scratch/logs"

needs_swift=0
for t in "${targets[@]}"; do
  case " ${swift_targets[*]} " in *" $t "*) needs_swift=1 ;; esac
  case " ${swift_targets[*]} ${c_targets[*]} " in *" $t "*) ;; *) echo "fuzz: unknown target '$t'" >&2; exit 64 ;; esac
done
if [ "$needs_swift" = 1 ]; then
  echo "== building vault-fuzz ($scratch)"
  if ! GBG_VAULT_FUZZ=1 swift build --scratch-path "$scratch" --product vault-fuzz > "$scratch/logs/build.log" 2>&1; then
    grep -E "error" "$scratch/logs/build.log" | head -20
    echo "fuzz: the build failed (log: $scratch/logs/build.log)" >&2
    exit 1
  fi
fi
for t in "${c_targets[@]}"; do
  case " ${targets[*]} " in *" $t "*) ;; *) continue ;; esac
  source="Fuzz/C/${t//-/_}.c"
  if [ ! -x "$scratch/c/$t" ] || [ "$source" -nt "$scratch/c/$t" ] || [ -n "$(find Sources/CAgent Sources/CTokenClient -newer "$scratch/c/$t" -name '*.[ch]')" ]; then
    echo "== building $t"
    clang -g -O1 -fsanitize=fuzzer,address,undefined -fsanitize-trap=undefined -I Sources/CAgent/include -I Sources/CTokenClient/include \
      "$source" Sources/CAgent/*.c $(pkg-config --libs libsodium) -o "$scratch/c/$t"
  fi
done

# One target: runs libFuzzer, writes its report row to $scratch/rows/TARGET and its crash
# lines (if any) to $scratch/rows/TARGET.crash.
fuzz_target() {
  local t="$1" corpus="$scratch/corpus/$1" crashes="$scratch/crashes/$1" binary="$scratch/debug/vault-fuzz"
  mkdir -p "$corpus" "$crashes"
  case " ${c_targets[*]} " in *" $t "*) binary="$scratch/c/$t" ;; esac
  local options=(-max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$crashes/" -timeout=10 -rss_limit_mb=4096)
  [ -n "$seed" ] && options+=(-seed="$seed")
  case "$t" in
    agent-frames|agent-request-writer|agent-answer) options+=(-dict=Fuzz/dict/agent.dict) ;;
    token-response) options+=(-dict=Fuzz/dict/token-response.dict) ;;
    postgres-url|postgres-url-parts) options+=(-dict=Fuzz/dict/postgres-url.dict) ;;
    recipient|identity-file) options+=(-dict=Fuzz/dict/identity.dict) ;;
    vault-file) options+=(-max_len=200000) ;;
    serve-request|proxy-path|request-log) options+=(-dict=Fuzz/dict/serve.dict) ;;
  esac
  local seeds=("Fuzz/corpus/$t")
  [ -d "Fuzz/regressions/$t" ] && seeds+=("Fuzz/regressions/$t")
  local log="$scratch/logs/$t.log" before
  before="$(ls "$crashes" | wc -l)"
  mkdir -p "$scratch/tmp/$t"
  TMPDIR="$scratch/tmp/$t" VAULT_FUZZ_TARGET="$t" SWIFT_BACKTRACE=enable=no ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1" \
    "$binary" "${options[@]}" "$corpus" "${seeds[@]}" > "$log" 2>&1 || true
  rm -rf "$scratch/tmp/$t"
  local executions rate last coverage features found
  executions="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
  last="$(grep -E '^#[0-9]+' "$log" | tail -1)"
  coverage="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<< "$last")"
  features="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<< "$last")"
  found="$(( $(ls "$crashes" | wc -l) - before ))"
  if grep -qE "ERROR: (libFuzzer|AddressSanitizer)|vault-fuzz: |SUMMARY: " "$log" && [ "$found" -eq 0 ]; then found=1; fi
  echo "| $t | $seconds | ${executions:-?} | ${rate:-?} | ${coverage:-?} | ${features:-?} | $(ls "$corpus" | wc -l) | $found |" > "$scratch/rows/$t"
  if [ "$found" -gt 0 ]; then
    { echo "   $t CRASH: $(grep -m1 -E "vault-fuzz: |ERROR: |Fatal error|SUMMARY" "$log" | cut -c1-200)"
      echo "   log: $log; inputs: $crashes"; } > "$scratch/rows/$t.crash"
  fi
}

rm -rf "$scratch/rows"; mkdir -p "$scratch/rows"
running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$jobs" ]; then wait -n || true; running=$((running - 1)); fi
  echo "== $t: ${seconds} s"
  fuzz_target "$t" &
  running=$((running + 1))
done
wait

status=0
report="$scratch/report.md"
{
  echo "| target | seconds | executions | exec/s | coverage (edges) | features | corpus | crashes |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  for t in "${targets[@]}"; do cat "$scratch/rows/$t" 2>/dev/null || echo "| $t | $seconds | ? | ? | ? | ? | ? | 1 |"; done
} > "$report"
for t in "${targets[@]}"; do
  if [ -f "$scratch/rows/$t.crash" ] || [ ! -f "$scratch/rows/$t" ]; then status=1; cat "$scratch/rows/$t.crash" 2>/dev/null || echo "   $t: no result"; fi
done
cat "$report"
exit $status
