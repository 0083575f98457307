#!/usr/bin/python3
"""Several files in flight on ONE SMB connection (so in one smbd process and one helper
pool): each thread writes its own file in rounds of mixed sizes and reads every round
back, and reads parts of the user's seed files, comparing every byte.

Driven by tests/security.rs (two users, two shares, at once). Samba's client library in
multi-threaded mode: one event thread serves the requests of all Python threads, so
several reads and writes of different files are outstanding at the same time.

Writes the content each file must finally have to --expect-dir (the test compares the
server's files with it). Prints one JSON summary line; exits 1 on any wrong byte.
"""

import hashlib
import json
import os
import sys
import threading

from samba import NTSTATUSError

import smbconn
from smbconn import FILE_OPEN, FILE_OVERWRITE_IF, SYNCHRONIZE

KIB = 1024
MIB = 1024 * KIB
# smbd refuses a read larger than its max read size (8 MiB).
MAX_READ = 8 * MIB
SIZES = [4095, 64 * KIB + 1, MIB + 3, 3 * MIB + 1, 8 * MIB, 200 * KIB]
READ_DATA = smbconn.FILE_READ_DATA
WRITE_DATA = smbconn.FILE_WRITE_DATA
SHARE_ALL = smbconn.FILE_SHARE_ALL


def pattern(tag, thread, rnd, size):
    block = hashlib.sha256(("%s/%d/%d" % (tag, thread, rnd)).encode()).digest()
    return (block * (size // len(block) + 1))[:size]


class Client:
    def __init__(self, args):
        self.args = args
        self.conn = smbconn.connect(args, multi_threaded=True)
        self.conn.settimeout(120 * 1000)
        self.seeds = {}
        for name in sorted(os.listdir(args.seed_dir)):
            with open(os.path.join(args.seed_dir, name), "rb") as f:
                self.seeds[name] = f.read()
        self.lock = threading.Lock()
        self.errors = []
        self.bytes_written = 0
        self.bytes_read = 0

    def error(self, text):
        with self.lock:
            self.errors.append(text)

    def write_all(self, fnum, data, offset):
        done = 0
        while done < len(data):
            n = self.conn.write(fnum, data[done:], offset + done)
            if n <= 0:
                raise IOError("write returned %d" % n)
            done += n
        with self.lock:
            self.bytes_written += done

    def read_all(self, fnum, offset, size):
        out = b""
        while len(out) < size:
            want = min(size - len(out), MAX_READ)
            piece = self.conn.read(fnum, offset + len(out), want)
            if not piece:
                break
            out += piece
        with self.lock:
            self.bytes_read += len(out)
        return out

    def worker(self, t):
        name = "mt_%d.bin" % t
        expected = b""
        try:
            fnum = self.conn.create(
                name,
                DesiredAccess=READ_DATA | WRITE_DATA | SYNCHRONIZE,
                ShareAccess=SHARE_ALL,
                CreateDisposition=FILE_OVERWRITE_IF,
            )
            seed_names = sorted(self.seeds)
            for r in range(self.args.rounds):
                size = SIZES[(t + r) % len(SIZES)]
                data = pattern(self.args.tag, t, r, size)
                offset = len(expected)
                self.write_all(fnum, data, offset)
                expected += data
                back = self.read_all(fnum, offset, size)
                if back != data:
                    self.error("%s round %d: read back %d bytes differ" % (name, r, size))
                seed = seed_names[(t + r) % len(seed_names)]
                content = self.seeds[seed]
                start = (r * 1234567 + t * 4099) % max(1, len(content))
                length = min(2 * MIB + 17, len(content) - start)
                sf = self.conn.create(
                    seed,
                    DesiredAccess=READ_DATA | SYNCHRONIZE,
                    ShareAccess=SHARE_ALL,
                    CreateDisposition=FILE_OPEN,
                )
                got = self.read_all(sf, start, length)
                self.conn.close(sf)
                if got != content[start:start + length]:
                    self.error(
                        "%s: %d bytes at %d differ from the user's own file" % (seed, length, start)
                    )
            whole = self.read_all(fnum, 0, len(expected))
            if whole != expected:
                self.error("%s: whole file read back differs" % name)
            self.conn.close(fnum)
        except NTSTATUSError as e:
            self.error("%s: %s" % (name, e))
        with open(os.path.join(self.args.expect_dir, name), "wb") as f:
            f.write(expected)


def main():
    parser = smbconn.parser(__doc__)
    parser.add_argument("--tag", required=True, help="makes this client's data its own")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seed-dir", required=True, help="local copies of the share's seed files")
    parser.add_argument("--expect-dir", required=True)
    args = parser.parse_args()
    client = Client(args)
    threads = [threading.Thread(target=client.worker, args=(t,)) for t in range(args.threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    print(
        json.dumps(
            {
                "share": args.share,
                "user": args.user,
                "bytes_written": client.bytes_written,
                "bytes_read": client.bytes_read,
                "errors": client.errors,
            },
            sort_keys=True,
        ),
        flush=True,
    )
    return 1 if client.errors else 0


if __name__ == "__main__":
    sys.exit(main())
