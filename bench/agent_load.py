#!/usr/bin/env python3
"""Load on one agent: C concurrent clients, each running `vault token PROFILE` N times
(cache hits through the agent). Prints failures, p50/p99 latency per call, audit records
written, and the agent's RSS after the first 100 requests and at the end.

usage: agent_load.py VAULT_BIN PROFILE CLIENTS TOKENS AGENT_PID
(the environment carries VAULT_PATH and XDG_RUNTIME_DIR; no passphrase source)
"""
import concurrent.futures, statistics, subprocess, sys, threading, time

vault, profile, clients, tokens, pid = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
latencies, failures, lock = [], 0, threading.Lock()
done = 0
rss_after_100 = None

def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None

def client(_):
    global failures, done, rss_after_100
    for _ in range(tokens):
        start = time.perf_counter()
        rc = subprocess.run([vault, "token", profile], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        elapsed = (time.perf_counter() - start) * 1000
        with lock:
            latencies.append(elapsed)
            done += 1
            if rc != 0:
                failures += 1
            if done == 100:
                rss_after_100 = rss_kib()

with concurrent.futures.ThreadPoolExecutor(max_workers=clients) as pool:
    list(pool.map(client, range(clients)))
latencies.sort()
p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
print(f"{clients} clients x {tokens} tokens = {len(latencies)} requests: {failures} failures, "
      f"p50 {statistics.median(latencies):.1f} ms, p99 {p99:.1f} ms per `vault token` (whole process); "
      f"agent RSS after 100 requests {rss_after_100} KiB, after {len(latencies)}: {rss_kib()} KiB")
