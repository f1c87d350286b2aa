#!/usr/bin/env python3
"""Cache hits sent straight to an agent's socket, without starting a process: the agent's own
cost of a `vault token PROFILE` (what the C client before `main` sends), p50 and mean.

usage: agent_direct.py RUNTIME_DIR PROFILE COUNT
(RUNTIME_DIR is the XDG_RUNTIME_DIR of the `vault unlock` that started the agent; the
runtime directory must hold that one agent. The answers are counted, never printed.)
"""
import glob, socket, statistics, struct, sys, time

runtime, profile, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
sockets = glob.glob(runtime + "/gbg-vault/agent-*.sock")
if len(sockets) != 1:
    sys.exit(f"expected one agent socket in {runtime}/gbg-vault, found {len(sockets)}")
request = ('{"version":2,"op":"token","token":{"profile":"%s","print":true},"network":{"proxy":{}}}' % profile).encode()
frame = struct.pack(">I", len(request)) + request
times, failed = [], 0
for _ in range(count):
    start = time.perf_counter()
    s = socket.socket(socket.AF_UNIX)
    s.connect(sockets[0])
    s.sendall(frame)
    answer = b""
    while chunk := s.recv(65536):
        answer += chunk
    s.close()
    times.append((time.perf_counter() - start) * 1e6)
    # An output answer is the frame's 'O' kind; an error answer is JSON with "ok":false.
    if len(answer) < 5 or answer[4:5] != b"O":
        failed += 1
print(f"p50 {statistics.median(times):.0f} µs, mean {statistics.mean(times):.0f} µs, {count} requests, {failed} failed")
