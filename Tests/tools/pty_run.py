#!/usr/bin/env python3
"""Runs one command on a pseudo-terminal and answers its prompts, for the end-to-end tests
of behaviour that only happens at a terminal (passphrase prompts and retries, the pager,
the "waiting for" line, the subshell of `vault exec`).

The whole job comes as JSON on this script's stdin, so that nothing a test types (a
passphrase) is in any process's arguments:

    {"argv": ["/path/vault", "token", "p"], "env": {"NAME": "value"},
     "steps": [["expect", "Vault passphrase: "], ["send", "wrong"], ["expect", "try again"], ...],
     "rows": 24, "cols": 80, "timeout": 30}

`expect` waits until the text appears in what the terminal showed after the previous
match; `send` types a line (a newline is added); `sendraw` types exactly the text;
`sleep` waits that many seconds. After the steps, the terminal is read until the command
ends. The transcript (everything the terminal showed) is printed on stdout, and this
script exits with the command's status (128 + N after signal N). A step that times out
prints `pty_run: timed out waiting for …` on stderr, kills the command and exits 124.
"""
import fcntl
import json
import os
import pty
import select
import signal
import struct
import sys
import termios
import time


def main():
    job = json.load(sys.stdin)
    deadline = time.monotonic() + float(job.get("timeout", 30))
    size = struct.pack("HHHH", job.get("rows", 24), job.get("cols", 80), 0, 0)
    pid, fd = pty.fork()
    if pid == 0:
        # The size is set on the terminal before the command starts: set by the parent after
        # the fork, a command that asks at once (on a loaded machine) could see 0 rows.
        fcntl.ioctl(0, termios.TIOCSWINSZ, size)
        os.execve(job["argv"][0], job["argv"], job.get("env", {}))
    fcntl.ioctl(fd, termios.TIOCSWINSZ, size)
    transcript = bytearray()
    matched = 0  # how much of the transcript earlier expects consumed

    def read_some(wait):
        try:
            ready, _, _ = select.select([fd], [], [], wait)
        except InterruptedError:
            return True
        if not ready:
            return True
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the command closed the terminal (it ended)
            return False
        if not chunk:
            return False
        transcript.extend(chunk)
        return True

    def fail(why):
        sys.stdout.write(transcript.decode("utf-8", "replace"))
        sys.stderr.write("pty_run: %s\n" % why)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        sys.exit(124)

    for step in job.get("steps", []):
        kind, value = step[0], step[1]
        if kind == "expect":
            needle = value.encode()
            while True:
                found = transcript.find(needle, matched)
                if found >= 0:
                    matched = found + len(needle)
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    fail("timed out waiting for %r" % value)
                if not read_some(min(left, 0.5)):
                    if transcript.find(needle, matched) < 0:
                        fail("the command ended before %r appeared" % value)
        elif kind == "send":
            os.write(fd, value.encode() + b"\n")
        elif kind == "sendraw":
            os.write(fd, value.encode())
        elif kind == "sleep":
            end = time.monotonic() + float(value)
            while time.monotonic() < end:
                read_some(max(0.0, min(0.2, end - time.monotonic())))
        else:
            fail("unknown step %r" % kind)

    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            fail("timed out waiting for the command to end")
        if not read_some(min(left, 0.5)):
            break
    _, status = os.waitpid(pid, 0)
    sys.stdout.write(transcript.decode("utf-8", "replace"))
    sys.stdout.flush()
    if os.WIFSIGNALED(status):
        sys.exit(128 + os.WTERMSIG(status))
    sys.exit(os.WEXITSTATUS(status))


if __name__ == "__main__":
    main()
