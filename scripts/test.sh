#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, runs every unit and end-to-end test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build --build-tests
swift test --skip-build 2>&1 | tee /tmp/gbg-vault-test.log
# The committed man page must match the command tree.
bash scripts/manpage.sh --check
