#!/usr/bin/env python3
"""Reads `smbstatus -P --json` (Samba 4.23+) on stdin and prints the async counters, one
line per field: `<scope> <counter> <field> <value>`. Scope `global` is the whole profile;
`share:<name>` a share's own profile (`smbd profiling share = yes`), summed over the
connection processes that keep one ("Extended Profile" keys are `<share>:<pid>.<snum>[<client>]`)."""
import json
import sys

COUNTERS = ("syscall_asys_pread", "syscall_asys_pwrite", "syscall_asys_fsync")


def main():
    doc = json.load(sys.stdin)
    totals = {}

    def add(scope, calls):
        for counter in COUNTERS:
            for field, value in calls.get(counter, {}).items():
                key = (scope, counter, field)
                totals[key] = totals.get(key, 0) + value

    add("global", doc.get("System Calls", {}))
    for key, profile in doc.get("Extended Profile", {}).items():
        add("share:" + key.split(":", 1)[0], profile.get("System Calls", {}))
    for (scope, counter, field), value in sorted(totals.items()):
        print(scope, counter, field, value)


if __name__ == "__main__":
    main()
