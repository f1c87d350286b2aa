#!/usr/bin/env bash
# The release binaries, checked as built: the release build (scripts/build-release.sh), the
# arguments suite and the client before main (Sources/CTokenClient) against the stripped
# `vault` that README installs (its link differs from the debug one: static runtime and
# archives, lld flags; its fault points are compiled out, which a test checks), and the quick
# start's main job on it. CI does not run this (a release build on 2 cores is ~15 minutes beside
# the suite); bench/run.sh runs it before it measures, and it is run before a release.
# Usage: bash scripts/release-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
release="$(bash scripts/build-release.sh vault gbg-auth-stub | tail -1)"
tested="$(mktemp -d)"
trap 'rm -rf "$tested"' EXIT
cp "$release/vault.stripped" "$tested/vault"
cp "$release/gbg-auth-stub" "$tested/gbg-auth-stub"
swift build --build-tests
VAULT_TEST_BIN_DIR="$tested" swift test --skip-build --filter "ArgumentTests|TokenClientTests"
GBG_VAULT_DEMO_BIN="$tested" bash scripts/demo.sh
echo "release-check: $release passed"
