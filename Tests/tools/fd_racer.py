#!/usr/bin/env python3
"""Test helper: plays a process of the same user that tries to read the key handed to a
starting agent (`vault agent-serve`) by opening its descriptors 3 and 4 through
/proc/PID/fd while they exist. Watches the kernel's last pid and probes the next few, as
fast as it can, until SIGTERM; then prints a JSON summary: agents seen, descriptors
opened (an attack that worked) and refused (by errno name).

usage: fd_racer.py
"""
import errno, json, os, signal, sys

seen, opened, refused, stop = set(), 0, {}, False

def finish(*_):
    global stop
    stop = True

signal.signal(signal.SIGTERM, finish)
checked = {}
while not stop:
    try:
        last = int(open("/proc/sys/kernel/ns_last_pid").read())
    except OSError:
        break
    for pid in range(last - 3, last + 4):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if b"agent-serve" not in cmdline:
            continue
        seen.add(pid)
        for fd in (3, 4):
            if checked.get((pid, fd)) == "opened":
                continue
            try:
                handle = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK)
            except OSError as error:
                name = errno.errorcode.get(error.errno, str(error.errno))
                refused[name] = refused.get(name, 0) + 1
                continue
            opened += 1
            checked[(pid, fd)] = "opened"
            try:
                os.read(handle, 64)
            except OSError:
                pass
            os.close(handle)
print(json.dumps({"agents_seen": len(seen), "opened": opened, "refused": refused}))
sys.exit(0)
