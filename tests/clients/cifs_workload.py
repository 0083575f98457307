#!/usr/bin/python3
"""Data-verifying workloads on a share mounted by the kernel's SMB client.

Usage: cifs_workload.py DIR SEED CACHE   (CACHE: the mount's cache= mode, none or strict)

Every workload writes with a seeded generator and checks what it reads back against its
own model of the file, byte for byte. The same seed writes the same files on every share,
so the test can compare shares' files too. Prints "ok NAME" per workload, "FAIL NAME: why"
on a mismatch (and exits 1).
"""
import mmap
import os
import random
import shutil
import sys
import threading

KIB = 1024
MIB = 1024 * KIB


def data(rng, n):
    return rng.randbytes(n)


def read_all(path, flags=0):
    fd = os.open(path, os.O_RDONLY | flags)
    try:
        out = bytearray()
        while True:
            chunk = os.read(fd, 4 * MIB)
            if not chunk:
                return bytes(out)
            out += chunk
    finally:
        os.close(fd)


def sequential(d, rng, cache):
    path = os.path.join(d, "sequential.bin")
    want = bytearray()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for _ in range(16):
        chunk = data(rng, MIB)
        os.write(fd, chunk)
        want += chunk
    os.fsync(fd)
    os.close(fd)
    return read_all(path) == want, "read back differs"


def random_writes(d, rng, cache):
    path = os.path.join(d, "random.bin")
    model = bytearray(data(rng, 8 * MIB))
    with open(path, "wb") as f:
        f.write(model)
    fd = os.open(path, os.O_RDWR)
    for _ in range(150):
        size = rng.randint(1, 256 * KIB)
        off = rng.randint(0, 9 * MIB)
        chunk = data(rng, size)
        os.pwrite(fd, chunk, off)
        if off > len(model):
            model += bytes(off - len(model))
        model[off:off + size] = chunk
    os.fsync(fd)
    ok = os.fstat(fd).st_size == len(model)
    os.close(fd)
    return ok and read_all(path) == model, "read back differs from the model"


def direct_io(d, rng, cache):
    """O_DIRECT writes and reads of page-aligned buffers (cache=none)."""
    path = os.path.join(d, "direct.bin")
    size = 4 * MIB
    buf = mmap.mmap(-1, size)
    buf.write(data(rng, size))
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
    for off in range(0, size, MIB):
        os.pwritev(fd, [memoryview(buf)[off:off + MIB]], off)
    back = mmap.mmap(-1, size)
    got = os.preadv(fd, [back], 0)
    os.close(fd)
    return got == size and back[:] == buf[:], "O_DIRECT read back differs"


def mmap_writes(d, rng, cache):
    """Writes through a shared mapping, then msync (cache=strict)."""
    path = os.path.join(d, "mmap.bin")
    size = 4 * MIB
    want = data(rng, size)
    with open(path, "wb") as f:
        f.truncate(size)
    with open(path, "r+b") as f:
        m = mmap.mmap(f.fileno(), size)
        for off in range(0, size, 256 * KIB):
            m[off:off + 256 * KIB] = want[off:off + 256 * KIB]
        m.flush()
        m.close()
        os.fsync(f.fileno())
    return read_all(path) == want, "file differs from what the mapping held"


def parallel(d, rng, cache):
    """Four writers on disjoint interleaved 256 KiB stripes of one file, two readers
    checking stripes already written, at once."""
    path = os.path.join(d, "parallel.bin")
    stripe, stripes = 256 * KIB, 64
    content = [data(rng, stripe) for _ in range(stripes)]
    with open(path, "wb") as f:
        f.truncate(stripe * stripes)
    done = set()
    lock = threading.Lock()
    errors = []

    def writer(k):
        fd = os.open(path, os.O_WRONLY)
        for i in range(k, stripes, 4):
            os.pwrite(fd, content[i], i * stripe)
            with lock:
                done.add(i)
        os.fsync(fd)
        os.close(fd)

    def reader(seed):
        r = random.Random(seed)
        fd = os.open(path, os.O_RDONLY)
        for _ in range(64):
            with lock:
                ready = sorted(done)
            if not ready:
                continue
            i = r.choice(ready)
            if os.pread(fd, stripe, i * stripe) != content[i]:
                errors.append(i)
        os.close(fd)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    threads += [threading.Thread(target=reader, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    whole = read_all(path) == b"".join(content)
    return whole and not errors, f"stripes read back wrong: {errors[:5]}, whole file ok: {whole}"


def truncate_extend(d, rng, cache):
    """Truncate up (a sparse tail), write past the old end, truncate down."""
    path = os.path.join(d, "sparse.bin")
    head, far = data(rng, MIB), data(rng, 64 * KIB)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, head)
    os.ftruncate(fd, 10 * MIB)
    os.pwrite(fd, far, 9 * MIB)
    os.fsync(fd)
    mid = read_all(path)
    ok1 = mid == head + bytes(8 * MIB) + far + bytes(MIB - len(far))
    os.ftruncate(fd, 5 * MIB)
    os.fsync(fd)
    os.close(fd)
    ok2 = read_all(path) == head + bytes(4 * MIB)
    return ok1 and ok2, f"after extend ok={ok1}, after shrink ok={ok2}"


def copy_compare(d, rng, cache):
    """cp to the share and back."""
    local = os.path.join("/dev/shm", f"cp.{os.getpid()}")
    with open(local, "wb") as f:
        for _ in range(24):
            f.write(data(rng, MIB))
    remote, back = os.path.join(d, "copied.bin"), local + ".back"
    shutil.copyfile(local, remote)
    shutil.copyfile(remote, back)
    same = read_all(local) == read_all(back)
    os.unlink(local)
    os.unlink(back)
    return same, "copied back differs"


def main():
    d, seed, cache = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    workloads = [sequential, random_writes, parallel, truncate_extend, copy_compare]
    workloads.append(direct_io if cache == "none" else mmap_writes)
    failed = False
    for w in workloads:
        rng = random.Random(seed * 1000 + workloads.index(w))
        try:
            ok, why = w(d, rng, cache)
        except OSError as e:
            ok, why = False, f"{type(e).__name__}: {e}"
        print(("ok " if ok else "FAIL ") + w.__name__ + ("" if ok else ": " + why), flush=True)
        failed |= not ok
    sys.exit(1 if failed else 0)


main()
