#!/usr/bin/env python3
"""Writes docs/benchmarks.md (to stdout) from a run of the backends benchmark.

Input, in the directory given (scripts/benchmarks.sh fills it): report.txt (the bench's
output), results.csv (its summary CSV), the charts (*.png), and `machine`, `command`,
`started`. The hand-written reading comes from docs/benchmarks-reading.md.
"""

import csv
import os
import re
import sys

OURS = "aio_fork_rs"
REFERENCE = "plain"
# Workloads of the headline table, in order, with a short name.
HEADLINE = [
    ("cold_read_8m", "cold get, 8 MiB requests"),
    ("cold_read_1m", "cold get, 1 MiB requests"),
    ("seq_read_8m", "cached get, 8 MiB requests"),
    ("seq_read_128k", "cached get, 128 KiB requests"),
    ("seq_write_8m", "put, 8 MiB requests"),
    ("seq_write_1m", "put, 1 MiB requests"),
    ("seq_write_128k", "put, 128 KiB requests"),
    ("rand_write_4k", "4 KiB random writes"),
    ("rand_read_4k", "4 KiB random reads (cached)"),
    ("mixed_4k", "4 KiB random reads and writes"),
    ("stream_read_8m", "8 MiB reads (cached), N clients"),
    ("fsync_write_4k", "4 KiB writes + fsync"),
    ("xfs_seq_write_8m", "XFS: put, 8 MiB requests"),
    ("xfs_cold_read_8m", "XFS: cold get, 8 MiB requests"),
    ("xfs_rand_write_4k", "XFS: 4 KiB random writes"),
    ("xfs_rand_read_4k", "XFS: 4 KiB random reads"),
]
CHARTS = [
    ("transfers.png", "Transfers and single-point workloads, ratio to plain"),
    ("rand_write_4k_throughput.png", "4 KiB random writes (ext4): throughput"),
    ("rand_write_4k_p99.png", "4 KiB random writes (ext4): p99 latency"),
    ("mixed_4k_throughput.png", "4 KiB random reads and writes: throughput"),
    ("rand_read_4k_throughput.png", "4 KiB random reads (cached): throughput"),
    ("stream_read_8m_throughput.png", "8 MiB reads (cached): throughput"),
    ("mem_get_memory.png", "Memory (libsmbclient clients): PSS peak"),
    ("mem_smbclient_memory.png", "Memory (smbclient sessions): PSS peak"),
]


def read(path, default=""):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return default


def rows(directory):
    """(workload, backend, clients, metric) -> CSV row."""
    table = {}
    with open(os.path.join(directory, "results.csv"), encoding="utf-8") as f:
        for row in csv.DictReader(f):
            key = (row["workload"], row["backend"], row["clients"], row["metric"])
            table[key] = row
    return table


def num(text):
    try:
        v = float(text)
    except (TypeError, ValueError):
        return "-"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def ratio(row):
    if not row or not row.get("ratio_to_plain"):
        return "-"
    return (
        f"{float(row['ratio_to_plain']):.2f} "
        f"[{float(row['ratio_ci95_lo']):.2f}, {float(row['ratio_ci95_hi']):.2f}]"
    )


def headline(table):
    clients = {}
    for (w, b, c, m) in table:
        if m == "value" and c:
            clients.setdefault(w, set()).add(int(c))
    out = [
        "| workload | clients | plain | aio_fork_rs | × plain [95%] | verdict | "
        "io_uring × plain | conn CPU × plain | p99 µs plain / ours |",
        "|---|---:|---:|---:|---|---|---|---|---|",
    ]
    for w, name in HEADLINE:
        for c in sorted(clients.get(w, [])):
            c = str(c)
            ours = table.get((w, OURS, c, "value"))
            plain = table.get((w, REFERENCE, c, "value"))
            if not ours or not plain:
                continue
            uring = table.get((w, "io_uring", c, "value"))
            conn = table.get((w, OURS, c, "cpu_conn"))
            p99p = table.get((w, REFERENCE, c, "p99_us"))
            p99o = table.get((w, OURS, c, "p99_us"))
            p99 = f"{num(p99p['median'])} / {num(p99o['median'])}" if p99p and p99o else "-"
            out.append(
                f"| {name} | {c} | {num(plain['median'])} {plain['unit']} | "
                f"{num(ours['median'])} | {ratio(ours)} | {ours['verdict'] or '-'} | "
                f"{ratio(uring).split(' ')[0] if uring else '-'} | "
                f"{ratio(conn).split(' ')[0] if conn else '-'} | {p99} |"
            )
    return "\n".join(out)


def memory(table):
    out = [
        "| scenario | clients | plain peak / idle MiB | aio_fork_rs peak / idle MiB | "
        "peak × plain | idle per connection above plain |",
        "|---|---:|---|---|---|---:|",
    ]
    for w, name in [("mem_get", "libsmbclient reads"), ("mem_smbclient", "smbclient gets")]:
        for c in sorted({int(k[2]) for k in table if k[0] == w and k[2]}):
            c = str(c)
            get = lambda b, m: table.get((w, b, c, m))
            pp, pi = get(REFERENCE, "pss_peak_mib"), get(REFERENCE, "pss_after_mib")
            op, oi = get(OURS, "pss_peak_mib"), get(OURS, "pss_after_mib")
            if not (pp and pi and op and oi):
                continue
            per_conn = (float(oi["median"]) - float(pi["median"])) / int(c)
            out.append(
                f"| {name} | {c} | {num(pp['median'])} / {num(pi['median'])} | "
                f"{num(op['median'])} / {num(oi['median'])} | {ratio(op)} | {per_conn:+.2f} |"
            )
    return "\n".join(out)


def sections(report):
    """The tables of the report (everything from the first `== ` title), without the
    progress lines the bench prints while it runs."""
    lines = [l for l in report.splitlines() if not l.startswith("    |")]
    start = next((i for i, l in enumerate(lines) if l.startswith("== ")), len(lines))
    return "\n".join(lines[start:]).strip()


def main():
    directory = sys.argv[1]
    table = rows(directory)
    machine = read(os.path.join(directory, "machine")).strip()
    command = read(os.path.join(directory, "command")).strip()
    started = read(os.path.join(directory, "started")).strip()
    report = read(os.path.join(directory, "report.txt"))
    runtime = re.search(r"benchmark runtime: ([^\n]+)", report)
    reading = read(os.path.join(os.path.dirname(directory), "benchmarks-reading.md")).strip()
    rel = os.path.basename(directory)
    print("# Benchmarks: smbd's async I/O backends side by side\n")
    print(
        "What `scripts/benchmarks.sh` measured with `cargo bench --bench backends` (see the "
        "README's \"Benchmark\" section for what each phase does and how the figures are "
        "made trustworthy). Regenerate this page with `scripts/benchmarks.sh` (a full run, "
        "about an hour) or, from the last run's files in `docs/benchmarks/`, "
        "`scripts/benchmarks.sh --from-report`.\n"
    )
    print(f"- date: {started}")
    print(f"- command: `{command}`")
    if runtime:
        print(f"- run time: {runtime.group(1)}")
    for line in machine.splitlines():
        key, _, value = line.partition(": ")
        print(f"- {key}: {value}")
    print()
    if reading:
        print(reading)
        print()
    print("## This module against a plain share\n")
    print(
        "Median of the runs, paired ratio to plain (median and bootstrap 95% interval of the "
        "per-repeat ratios), and the bench's verdict: *faster*/*slower* only when the "
        "intervals say so, else *same (within noise)*; `-` with fewer than three repeats. "
        "conn CPU: CPU time of the connection processes per GiB or request (a plain share's "
        "I/O threads included), against plain's.\n"
    )
    print(headline(table))
    print()
    print("### Memory\n")
    print(memory(table))
    print()
    print("## Charts\n")
    for name, title in CHARTS:
        if os.path.exists(os.path.join(directory, name)):
            print(f"### {title}\n\n![{title}]({rel}/{name})\n")
    print("## Every table of the run\n")
    print("```text")
    print(sections(report))
    print("```")


if __name__ == "__main__":
    main()
