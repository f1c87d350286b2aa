#!/usr/bin/env bash
# Installs the system packages gbg-vault needs on Debian/Ubuntu (run as root or with sudo);
# postgresql is for the team-vault tests, which start their own server (never the system one).
set -euo pipefail
need=()
for pkg in libsodium-dev libsqlite3-dev pkg-config zlib1g-dev binutils sqlite3 curl openssl python3 util-linux strace postgresql man-db groff-base; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
