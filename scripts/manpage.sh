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
# What the generator cannot do: leave out hidden commands (agent-serve) and the --version
# line repeated under every command, and write the sections a manual page needs (EXIT
# STATUS, ENVIRONMENT, FILES, EXAMPLES, SEE ALSO: docs/man/sections.mdoc) in place of its
# one-line EXIT STATUS.
python3 - "$generated" docs/man/sections.mdoc <<'PY'
import sys
page, sections = sys.argv[1], sys.argv[2]
lines = open(page, encoding="utf-8").read().split("\n")
out, depth, skipping, seen_version, i = [], 0, None, False, 0
while i < len(lines):
    line = lines[i]
    if skipping is not None:
        if line.startswith(".Bl"): skipping += 1
        elif line.startswith(".El"):
            skipping -= 1
            if skipping == 0: skipping = None
        i += 1
        continue
    if line == ".It Em agent-serve":
        i += 2  # the entry and its abstract; then its option list
        skipping = 0
        if i < len(lines) and lines[i].startswith(".Bl"): skipping = 1; i += 1
        else: skipping = None
        continue
    if line == ".It Fl -version" and i + 1 < len(lines) and lines[i + 1] == "Show the version.":
        if seen_version: i += 2; continue
        seen_version = True
    if line == '.Sh "EXIT STATUS"' and i + 1 < len(lines) and lines[i + 1] == ".Ex -std":
        out.extend(open(sections, encoding="utf-8").read().rstrip("\n").split("\n"))
        i += 2
        continue
    # A blank line is a paragraph break in the generated text; mdoc wants `.Pp`.
    out.append(".Pp" if line == "" and i + 1 < len(lines) else line)
    i += 1
open(page, "w", encoding="utf-8").write("\n".join(out))
PY
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
