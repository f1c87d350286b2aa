#!/usr/bin/env bash
# Generates docs/man/vault.1 from the command tree with swift-argument-parser's
# generate-manual plugin. `--check` regenerates it into .build and fails if the committed
# page differs (CI runs this, so the page cannot fall behind the commands).
set -euo pipefail
cd "$(dirname "$0")/.."
# A fixed date keeps the page byte-for-byte reproducible; change it with each release.
date="2026-11-29"
swift package --allow-writing-to-package-directory generate-manual --configuration debug \
  --date "$date" --authors "the gbg-vault developers" > /dev/null
generated=".build/plugins/GenerateManual/outputs/vault/vault.1"
if [ "${1:-}" = "--check" ]; then
  if ! diff -u docs/man/vault.1 "$generated"; then
    echo "docs/man/vault.1 is out of date: run bash scripts/manpage.sh and commit the result" >&2
    exit 1
  fi
  echo "docs/man/vault.1 is current"
else
  cp "$generated" docs/man/vault.1
  echo "wrote docs/man/vault.1"
fi
