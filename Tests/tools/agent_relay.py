#!/usr/bin/env python3
"""Test helper: a recording relay between vault clients and the agent.

Listens on LISTEN (a Unix socket path), forwards every connection to TARGET, and
appends every byte that crosses, in both directions, to CAPTURE. The end-to-end suite
uses it to scan a whole session's socket traffic for keys and secrets.

usage: agent_relay.py LISTEN TARGET CAPTURE   (prints "READY" when listening)
"""
import os, socket, sys, threading

listen_path, target_path, capture_path = sys.argv[1], sys.argv[2], sys.argv[3]
lock = threading.Lock()

def pump(src, dst, tag):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            with lock, open(capture_path, "ab") as f:
                f.write(data)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

def serve(client):
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(target_path)
    except OSError:
        client.close()
        return
    a = threading.Thread(target=pump, args=(client, upstream, "c"), daemon=True)
    b = threading.Thread(target=pump, args=(upstream, client, "a"), daemon=True)
    a.start(); b.start(); a.join(); b.join()
    client.close(); upstream.close()

server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
if os.path.exists(listen_path):
    os.unlink(listen_path)
old = os.umask(0o177)
server.bind(listen_path)
os.umask(old)
server.listen(64)
print("READY", flush=True)
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
