#!/usr/bin/python3
"""A client of the kernel's SMB client for the hung-disk test.

Usage: disk_ops.py DIR READ_AT WRITE_AT

Opens DIR/read.bin (read-only) and DIR/write.bin (read-write), writes the first 64 KiB of
write.bin and fsyncs it (so smbd's first-write work is done before the disk hangs), then
prints "ready" and waits for a line on stdin. Then, at once in two threads, reads 1 MiB of
read.bin at READ_AT, and writes 1 MiB of write.bin at WRITE_AT followed by an fsync; once
both threads are done, closes both files. Each step prints one line:
    op=<read|write|fsync|close_read|close_write> status=<ok|errno name> secs=<since its start> end=<since go>
and "done" at the end. The bytes written are pattern(WRITE_AT, ...) below, which the test
knows too.
"""
import errno
import os
import sys
import threading
import time

MIB = 1 << 20


def pattern(tag, size):
    """Bytes the test can recognise: each 8-byte word holds tag and its own offset."""
    return b"".join(((tag << 40) | i).to_bytes(8, "little") for i in range(0, size, 8))


def main():
    d, read_at, write_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    r = os.open(os.path.join(d, "read.bin"), os.O_RDONLY)
    w = os.open(os.path.join(d, "write.bin"), os.O_RDWR)
    os.pwrite(w, pattern(1, 64 * 1024), 0)
    os.fsync(w)
    print("ready", flush=True)
    sys.stdin.readline()
    go = time.monotonic()
    lock = threading.Lock()

    def step(name, f):
        start = time.monotonic()
        try:
            f()
            status = "ok"
        except OSError as e:
            status = errno.errorcode.get(e.errno, str(e.errno))
        now = time.monotonic()
        with lock:
            print(f"op={name} status={status} secs={now - start:.3f} end={now - go:.3f}", flush=True)

    def read():
        step("read", lambda: os.pread(r, MIB, read_at))

    def write():
        step("write", lambda: os.pwrite(w, pattern(2, MIB), write_at))
        step("fsync", lambda: os.fsync(w))

    threads = [threading.Thread(target=read), threading.Thread(target=write)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    step("close_read", lambda: os.close(r))
    step("close_write", lambda: os.close(w))
    print("done", flush=True)


main()
