#!/usr/bin/env bash
# Builds the release binaries: `vault` as one self-contained file (Swift runtime, Foundation,
# SwiftNIO and BoringSSL linked statically by --static-swift-stdlib; libsodium, SQLite, zlib
# and libstdc++ linked statically from the system's own packages, libgcc's unwinder too), PIE
# with full RELRO,
# linked by lld with packed relative relocations, no exported dynamic symbol table and no
# $ORIGIN run path.
# Every one of these was measured on start-up (docs/perf-history.md, "Fast start").
# Usage: bash scripts/build-release.sh [PRODUCT...]   (default: vault gbg-auth-stub)
# Builds in .build, or in GBG_VAULT_RELEASE_SCRATCH when set (CI builds in a directory of its
# own while the debug build's tests run), and prints the directory of the binaries on its
# last line. Beside each product
# it writes PRODUCT.stripped (what to install: no debug information, 2x smaller) and
# PRODUCT.debug (the debug information, which gdb and perf find through the stripped
# file's .gnu_debuglink).
set -euo pipefail
cd "$(dirname "$0")/.."
products=("$@"); [ ${#products[@]} -eq 0 ] && products=(vault gbg-auth-stub)
multiarch="$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)"
static="$PWD/.build/static-link"
mkdir -p "$static/pkgconfig"
for lib in libsodium libsqlite3 libz; do
  archive="/usr/lib/$multiarch/$lib.a"
  [ -f "$archive" ] || { echo "build-release: $archive is missing (libsodium-dev, libsqlite3-dev, zlib1g-dev)" >&2; exit 1; }
  ln -sf "$archive" "$static/$lib.a"
done
cxx="$(clang -print-file-name=libstdc++.a 2>/dev/null || true)"
[ -f "$cxx" ] || cxx="$(ls /usr/lib/gcc/"$multiarch"/*/libstdc++.a 2>/dev/null | tail -1)"
[ -f "$cxx" ] || { echo "build-release: libstdc++.a is missing (libstdc++-12-dev)" >&2; exit 1; }
ln -sf "$cxx" "$static/libstdc++.a"
# The libsodium system-library target finds its flags through pkg-config: this .pc puts the
# directory of the archives first on the library path, so -lsodium, -lsqlite3, -lz and
# -lstdc++ all resolve to them (a linker takes the first directory that has the library).
cat > "$static/pkgconfig/libsodium.pc" <<PC
Name: libsodium
Version: $(pkg-config --modversion libsodium)
Description: libsodium, linked statically into the release binary
Libs: -L$static -lsodium
Cflags:
PC
# -z now: every symbol bound at start and the GOT read-only afterwards (full RELRO);
# measured at +0.19 ms of start-up (perf stat, 300 runs), kept for the hardening.
# -static-libgcc: libgcc's unwinder from libgcc_eh.a instead of loading libgcc_s.so.1
# (one shared library fewer to map, relocate and search for every symbol, and no cpuid
# probing in its constructor): vault --version 2.58 -> 2.40 ms, 400 runs side by side.
# (glibc's libm.a cannot be linked into a dynamically linked program: libm stays shared.)
# --symbol-ordering-file: the fast shapes' functions first and together in .text, in the
# order they run (scripts/startup.order, made by scripts/startup-order.sh): a start then
# touches fewer pages of code (vault token through the agent: 645 -> 616 page faults,
# 0.09 ms less, 500 runs side by side). Names it does not find are skipped silently.
flags=(-c release --scratch-path "${GBG_VAULT_RELEASE_SCRATCH:-$PWD/.build}" --disable-local-rpath --static-swift-stdlib -Xswiftc -use-ld=lld
       -Xswiftc -Xclang-linker -Xswiftc -static-libgcc
       -Xlinker -z -Xlinker pack-relative-relocs -Xlinker -z -Xlinker now -Xlinker --no-export-dynamic)
# (Passed as a copy named by its hash: SwiftPM relinks when the flags change, not when a
# file they name does.)
if [ -f scripts/startup.order ]; then
  order="$static/startup-$(sha256sum scripts/startup.order | cut -c1-16).order"
  [ -f "$order" ] || cp scripts/startup.order "$order"
  flags+=(-Xlinker "--symbol-ordering-file=$order" -Xlinker --no-warn-symbol-ordering)
fi
for product in "${products[@]}"; do
  PKG_CONFIG_PATH="$static/pkgconfig" swift build "${flags[@]}" --product "$product" >&2
done
bin="$(PKG_CONFIG_PATH="$static/pkgconfig" swift build "${flags[@]}" --show-bin-path)"
for product in "${products[@]}"; do
  if [ "$bin/$product" -nt "$bin/$product.stripped" ]; then
    objcopy --only-keep-debug "$bin/$product" "$bin/$product.debug"
    objcopy --strip-debug --strip-unneeded --add-gnu-debuglink="$bin/$product.debug" "$bin/$product" "$bin/$product.stripped"
  fi
done
echo "$bin"
