#!/usr/bin/env python3
"""Test helper: bounded protocol fuzzing of a running agent (PROTOCOL.md).

Sends mutated and truncated frames, huge and zero lengths, garbage, valid frames with
broken JSON or unknown operations, frames at and past the size limit, and slow writers; after each case it checks that the
agent still answers a well-formed status request. Prints a JSON summary; exit 1 if the
agent ever stops answering.

usage: agent_fuzz.py SOCKET ITERATIONS SEED
"""
import json, random, socket, struct, sys, time

path, iterations, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)

def frame(obj_bytes):
    return struct.pack(">I", len(obj_bytes)) + obj_bytes

STATUS = frame(json.dumps({"version": 2, "op": "status"}).encode())

def exchange(payload, timeout=3.0, slow=False):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    try:
        if slow:
            for i in range(0, len(payload), 1):
                s.send(payload[i:i + 1])
                time.sleep(0.01)
        else:
            s.sendall(payload)
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out
    except (socket.timeout, OSError):
        return None
    finally:
        s.close()

def alive():
    answer = exchange(STATUS, timeout=5)
    if not answer or len(answer) < 4:
        return False
    n = struct.unpack(">I", answer[:4])[0]
    return answer[4:5] == b"J" and json.loads(answer[5:4 + n]).get("ok") is True

def case(i):
    op = rng.choice(["status", "token", "lock-not", "x", "env-add", "add", "member-add"])
    body = {"version": 2, "op": op}
    if op == "token":
        body["token"] = {"profile": "p" * rng.randint(0, 50), "print": rng.choice([True, False])}
        body["network"] = {"proxy": {"HTTPS_PROXY": "http://127.0.0.1:9"} if rng.random() < 0.5 else {}}
    base = json.dumps(body).encode()
    kind = rng.randrange(9)
    if kind == 0:   # bit flips in a valid frame (never the lock operation)
        data = bytearray(frame(base))
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data), "flip"
    if kind == 1:   # truncated
        data = frame(base)
        return data[:rng.randrange(len(data))], "truncated"
    if kind == 2:   # huge declared length, little data
        return struct.pack(">I", rng.choice([0xFFFFFFFF, 1 << 24, 65537])) + b"{" * rng.randint(0, 100), "huge-length"
    if kind == 3:   # zero length
        return struct.pack(">I", 0), "zero-length"
    if kind == 4:   # garbage
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))), "garbage"
    if kind == 5:   # valid frame, broken JSON
        return frame(b'{"version": 2, "op": ' + bytes(rng.randrange(256) for _ in range(20))), "bad-json"
    if kind == 6:   # wrong version
        return frame(json.dumps({"version": rng.choice([0, 1, 3, 99]), "op": "status"}).encode()), "version"
    if kind == 7:   # oversized body
        body = b'{"version":2,"op":"status","profile":"' + b"a" * 70000 + b'"}'
        return frame(body), "oversized"
    return frame(base) + frame(base), "two-frames"

counts = {}
for i in range(iterations):
    payload, kind = case(i)
    if b'"lock"' in payload:
        continue
    exchange(payload, timeout=2)
    counts[kind] = counts.get(kind, 0) + 1
    if i % 25 == 0 and not alive():
        print(json.dumps({"alive": False, "after": i, "kind": kind}))
        sys.exit(1)
# A slow writer: one byte every 10 ms, a whole valid frame; then one that stalls.
slow = exchange(STATUS, timeout=10, slow=True)
# A stalled writer: part of a frame, then nothing (the socket stays open): the agent
# must close it after its read timeout (5 s) instead of waiting for ever.
staller = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
staller.settimeout(15)
staller.connect(path)
staller.send(struct.pack(">I", 100) + b"{")
stall_started = time.time()
try:
    closed_by_agent = staller.recv(10) == b""
except socket.timeout:
    closed_by_agent = False
stall_seconds = round(time.time() - stall_started, 1)
staller.close()
# A trickling writer: one byte of a valid frame every second, so the connection is never
# idle for long; the request must arrive whole within 5 s of the accept, or it is closed.
trickler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
trickler.settimeout(1.0)
trickler.connect(path)
trickle_started = time.time()
trickle_closed = False
for byte in STATUS[:-1]:
    try:
        trickler.send(bytes([byte]))
        if trickler.recv(10) == b"":
            trickle_closed = True
            break
    except socket.timeout:
        pass
    except OSError:
        trickle_closed = True
        break
    if time.time() - trickle_started > 12:
        break
trickle_seconds = round(time.time() - trickle_started, 1)
trickler.close()
# The frame limit, exactly: a request of 65,536 bytes is answered (an error, as the profile
# name is too long), one byte more is not: the connection closes without an answer.
def sized_request(size):
    head, tail = b'{"version":2,"op":"status","x":"', b'"}'
    return frame(head + b"a" * (size - len(head) - len(tail)) + tail)
limit_answers = {size: bool(exchange(sized_request(size), timeout=5)) for size in (65536, 65537, 100000, 129020)}
limit_held = limit_answers == {65536: True, 65537: False, 100000: False, 129020: False}
ok = alive()
print(json.dumps({"alive": ok, "cases": counts, "slow_writer_answered": bool(slow), "frame_limit_answers": limit_answers,
                  "stall_closed_by_agent": closed_by_agent, "stall_closed_after_s": stall_seconds,
                  "trickle_closed_by_agent": trickle_closed, "trickle_closed_after_s": trickle_seconds}))
sys.exit(0 if ok and closed_by_agent and trickle_closed and trickle_seconds <= 7 and limit_held else 1)
