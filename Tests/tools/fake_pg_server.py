#!/usr/bin/env python3
"""A fake PostgreSQL server for the sslmode=require test: it accepts the TLS request,
completes TLS with a self-signed certificate (any client that does not verify it gets
this far), then asks for the password the way MODE says, and records what the client
sends next. It never answers a query.

Usage: fake_pg_server.py CERT KEY MODE LOG   (MODE: cleartext, md5, or early: a
ReadyForQuery sent right after the handshake, before the client's startup message, then
the cleartext request)
Prints "PORT n" when listening on 127.0.0.1; appends one line per connection to LOG:
"startup", then "sent R<code>", then "received <type> <length>" for the client's next
message ("received p …" means a password message reached it), or "closed".
"""
import socket, ssl, struct, sys

cert, key, mode, log_path = sys.argv[1:5]
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(8)
print("PORT", listener.getsockname()[1], flush=True)


def read_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def log(line):
    with open(log_path, "a") as f:
        f.write(line + "\n")


while True:
    raw, _ = listener.accept()
    raw.settimeout(10)
    try:
        length, code = struct.unpack(">ii", read_exactly(raw, 8))
        if (length, code) != (8, 80877103):
            log("no TLS request")
            raw.close()
            continue
        raw.sendall(b"S")
        conn = context.wrap_socket(raw, server_side=True)
        if mode == "early":
            conn.sendall(b"Z" + struct.pack(">i", 5) + b"I")
            log("sent early Z")
        (length,) = struct.unpack(">i", read_exactly(conn, 4))
        read_exactly(conn, length - 4)
        log("startup")
        if mode == "cleartext":
            conn.sendall(b"R" + struct.pack(">ii", 8, 3))
            log("sent R3")
        else:
            conn.sendall(b"R" + struct.pack(">ii", 12, 5) + b"salt")
            log("sent R5")
        try:
            kind = read_exactly(conn, 1)
            (length,) = struct.unpack(">i", read_exactly(conn, 4))
            log("received %s %d" % (kind.decode("latin-1"), length))
        except (EOFError, OSError, ssl.SSLError):
            log("closed")
        conn.close()
    except (EOFError, OSError, ssl.SSLError) as error:
        log("error %s" % type(error).__name__)
        raw.close()
