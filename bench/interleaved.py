#!/usr/bin/env python3
"""Runs commands interleaved and writes a hyperfine-style JSON result for table.py.

hyperfine runs all the runs of one command, then all of the next: on a shared machine
whose speed drifts over minutes, two commands measured a minute apart can differ by 20 %
for reasons of their own (curl's time moved from 7.0 to 5.7 ms between two tables of one
run). Here each round runs every command once, in a fresh random order, so a drift
touches all of them alike; the ratios are the figure this is for.

Usage: interleaved.py RUNS WARMUP OUT.json NAME=COMMAND [NAME=COMMAND ...]
COMMAND is split like a shell would split it (shlex), run without a shell, with stdout
and stderr sent to /dev/null and the caller's environment; a failing run is an error.
Leading words of the form VARIABLE=VALUE are set in that command's environment (as a
shell would), so a command needs no `env` wrapper, which would be a second exec.
"""
import json, os, random, shlex, statistics, sys, time

runs, warmup, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
commands = []
for spec in sys.argv[4:]:
    name, command = spec.split("=", 1)
    words = shlex.split(command)
    environment = dict(os.environ)
    while words and "=" in words[0] and words[0].split("=", 1)[0].replace("_", "").isalnum() and words[0][0].isupper():
        variable, value = words.pop(0).split("=", 1)
        environment[variable] = value
    commands.append((name, words, environment))
devnull = os.open(os.devnull, os.O_WRONLY)
times = {name: [] for name, _, _ in commands}
for round_number in range(warmup + runs):
    order = list(commands)
    random.shuffle(order)
    for name, argv, environment in order:
        start = time.perf_counter()
        pid = os.posix_spawnp(argv[0], argv, environment,
                              file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)])
        _, status = os.waitpid(pid, 0)
        elapsed = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"interleaved.py: {name} failed (status {status})")
        if round_number >= warmup:
            times[name].append(elapsed)
results = []
for name, _, _ in commands:
    values = times[name]
    results.append({"command": name, "mean": statistics.mean(values), "stddev": statistics.stdev(values),
                    "median": statistics.median(values), "min": min(values), "max": max(values)})
json.dump({"results": results}, open(out, "w"))
