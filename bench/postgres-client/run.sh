#!/usr/bin/env bash
# Builds pgc-bench (outside the work tree), starts a throwaway PostgreSQL (Debian's newest
# installed, SCRAM over TCP on 127.0.0.1, as bench/sessions.sh does), runs the benchmark
# against it and stops it. Usage: bash bench/postgres-client/run.sh [ITERATIONS] [WARMUP]
# (PGC_SYNCHRONOUS_COMMIT=off takes the WAL flush out of COMMIT, to see the client's part
# with less noise; the vault's own benchmarks run with the server's defaults. PGC_WAIT_QUIET=1
# first waits, up to 30 minutes, for a 5 s stretch with under 5 % of the CPUs busy.
# PGC_PHASES=1 adds where each way's time goes; PGC_NO_DIGEST=1 leaves the schema digest out.
# The last line says how much CPU everything else on the machine used during the run.)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
iterations="${1:-2000}"; warmup="${2:-200}"
scratch="${PGC_SCRATCH:-/tmp/pgc-build}"
(cd "$here" && swift build -c release --scratch-path "$scratch" >/dev/null)
pgbin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
pgdir="$(mktemp -d /tmp/pgc-pg-XXXXXX)"; as_pg=""
cleanup() { $as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -m fast -w stop >/dev/null 2>&1 || true; rm -rf "$pgdir"; }
trap cleanup EXIT
if [ "$(id -u)" = 0 ]; then chown postgres "$pgdir"; as_pg="setpriv --reuid=postgres --regid=postgres --init-groups --"; fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pass="pgc-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s' "$pass" > "$pgdir/pw"; [ -n "$as_pg" ] && chown postgres "$pgdir/pw"
$as_pg "$pgbin/initdb" -D "$pgdir/data" -U bench --pwfile="$pgdir/pw" -A scram-sha-256 -E UTF8 --locale=C --no-sync >/dev/null
printf "listen_addresses='127.0.0.1'\nport=$port\nunix_socket_directories='$pgdir'\n" >> "$pgdir/data/postgresql.conf"
[ -n "${PGC_SYNCHRONOUS_COMMIT:-}" ] && printf "synchronous_commit=%s\n" "$PGC_SYNCHRONOUS_COMMIT" >> "$pgdir/data/postgresql.conf"
$as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w start >/dev/null
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }   # jiffies not idle or iowait
if [ -n "${PGC_WAIT_QUIET:-}" ]; then
  for _ in $(seq 360); do
    b0=$(busy); sleep 5; b1=$(busy)
    [ $(( (b1 - b0) * 100 / (5 * $(getconf CLK_TCK) * $(nproc)) )) -lt 5 ] && break
  done
fi
echo "machine: $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg); PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}'); synchronous_commit=${PGC_SYNCHRONOUS_COMMIT:-on (default)}"
postmaster_cpu() { awk '{print $14+$15+$16+$17}' "/proc/$(head -1 "$pgdir/data/postmaster.pid")/stat"; }
b0=$(busy); p0=$(postmaster_cpu); t0=$(date +%s.%N)
PGPASSWORD="$pass" /usr/bin/time -f "%U %S" -o "$pgdir/time" "$scratch/release/pgc-bench" --host 127.0.0.1 --port "$port" \
  --user bench --db postgres --iterations "$iterations" --warmup "$warmup" ${PGC_PHASES:+--phases 1} ${PGC_NO_DIGEST:+--digest 0}
sleep 0.5; b1=$(busy); p1=$(postmaster_cpu); t1=$(date +%s.%N)
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$b0" "$b1" "$p0" "$p1" "$t0" "$t1" "$(cat "$pgdir/time")" "$(getconf CLK_TCK)" "$(nproc)" <<'PY'
import sys
b0, b1, p0, p1, t0, t1 = map(float, sys.argv[1:7]); u, s = map(float, sys.argv[7].split()); hz, n = float(sys.argv[8]), int(sys.argv[9])
wall, busy, pg, bench = t1 - t0, (b1 - b0) / hz, (p1 - p0) / hz, u + s
print(f"CPU during the run: {wall:.1f} s wall x {n} cores; busy {busy:.1f} s: pgc-bench {bench:.1f} s, PostgreSQL {pg:.1f} s, "
      f"everything else {max(0.0, busy - bench - pg):.1f} s")
PY
