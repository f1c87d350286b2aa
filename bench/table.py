#!/usr/bin/env python3
"""One hyperfine --export-json result as a markdown table: mean ± σ, median, min, max, and
each command relative to the fastest by mean and by median (the median is the steadier
figure on a shared machine, where a few runs are slowed by neighbours)."""
import json, sys

results = json.load(open(sys.argv[1]))["results"]
best_mean = min(r["mean"] for r in results)
best_median = min(r["median"] for r in results)
print("| Command | Mean [ms] | Median [ms] | Min [ms] | Max [ms] | Relative (mean) | Relative (median) |")
print("|:---|---:|---:|---:|---:|---:|---:|")
for r in results:
    ms = lambda v: f"{v * 1000:.1f}"
    print(f"| `{r['command']}` | {ms(r['mean'])} ± {ms(r['stddev'] or 0)} | {ms(r['median'])} | {ms(r['min'])} | {ms(r['max'])} "
          f"| {r['mean'] / best_mean:.2f} | {r['median'] / best_median:.2f} |")
