#!/usr/bin/env python3
"""Turns a scripts/bench.sh results file (JSON lines) into the Markdown tables of docs/benchmarks.md."""
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
tps = next((r["tps"] for r in rows if r["kind"] == "pgbench"), None)
print(f"pgbench (TPC-B-like, scale 10, 8 clients): **{tps:.0f} TPS**\n" if tps else "pgbench: not run\n")

loads = [r for r in rows if r["kind"] == "load"]
for broker in dict.fromkeys(r["broker"] for r in loads):
    print(f"### {broker}\n")
    print("| load | instances | completed | sagas/s | sagas/s ÷ pgbench TPS | p50 ms | p95 ms | p99 ms | max ms | errors | late arrivals |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in (r for r in loads if r["broker"] == broker):
        load = f"closed, {r['buyers']} buyers" if r["mode"] == "closed" else f"open, {r['mode'][5:]}"
        ratio = f"{r['sagas_per_sec'] / tps:.3f}" if tps else "-"
        l = r["latency_ms"]
        print(f"| {load} | {r['instances']} | {r['completed']} | {r['sagas_per_sec']} | {ratio} | {l['p50']} | {l['p95']} "
              f"| {l['p99']} | {l['max']} | {sum(r['errors'].values())} | {r['late_arrivals']} |")
    outcomes = {}
    for r in (r for r in loads if r["broker"] == broker):
        for k, v in r["outcomes"].items():
            outcomes[k] = outcomes.get(k, 0) + v
    print(f"\nOutcomes: {', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()))}\n")

engine = [r for r in rows if r["kind"] == "engine"]
if engine:
    print("### The saga engine alone (`api bench-engine`: no API, no MongoDB)\n")
    print("| broker | orchestrator + worker instances | sagas | sagas/s | sagas/s ÷ pgbench TPS | p50 ms | p95 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in engine:
        ratio = f"{r['sagas_per_sec'] / tps:.3f}" if tps else "-"
        print(f"| {r['broker']} | {r['instances']} | {r['sagas']} | {r['sagas_per_sec']} | {ratio} | {r['latency_ms_p50']} "
              f"| {r['latency_ms_p95']} | {r['latency_ms_p99']} | {r['latency_ms_max']} |")
    print()

mem = [r for r in rows if r["kind"] == "memory"]
if mem:
    print("### Memory (RSS after the loads, MB)\n")
    print("| broker | api | orchestrator | workers |")
    print("|---|---|---|---|")
    for r in mem:
        print(f"| {r['broker']} | {r['api_mb']} | {r.get('orchestrator_mb', '-')} | {r.get('workers_mb', '-')} |")
