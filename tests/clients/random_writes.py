#!/usr/bin/env python3
"""Opens an existing file on a share and overwrites it with 4 KiB writes at seeded random
4 KiB-aligned offsets within its size (the same writes for the same seed, whatever the
share), one at a time. Prints one JSON line: writes done and the first error, if any."""
import argparse
import json
import random

from samba import NTSTATUSError, credentials
from samba.samba3 import libsmb_samba_internal as libsmb
from samba.samba3 import param

FILE_READ_DATA = 0x1
FILE_WRITE_DATA = 0x2
SYNCHRONIZE = 0x100000
FILE_SHARE_ALL = 0x7
FILE_OPEN = 1
FILE_NON_DIRECTORY_FILE = 0x40
BLOCK = 4096


def main():
    p = argparse.ArgumentParser()
    for a in ("--host", "--share", "--user", "--password", "--conf", "--file"):
        p.add_argument(a, required=a != "--host", default="127.0.0.1")
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--writes", type=int, default=256)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    lp = param.get_context()
    lp.load(args.conf)
    creds = credentials.Credentials()
    creds.guess(lp)
    creds.set_username(args.user)
    creds.set_password(args.password)
    rng = random.Random(args.seed)
    done, error = 0, None
    try:
        conn = libsmb.Conn(args.host, args.share, lp, creds)
        fnum = conn.create(
            args.file,
            DesiredAccess=FILE_READ_DATA | FILE_WRITE_DATA | SYNCHRONIZE,
            ShareAccess=FILE_SHARE_ALL,
            CreateDisposition=FILE_OPEN,
            CreateOptions=FILE_NON_DIRECTORY_FILE,
        )
        for _ in range(args.writes):
            offset = rng.randrange(args.size // BLOCK) * BLOCK
            conn.write(fnum, rng.randbytes(BLOCK), offset)
            done += 1
        conn.close(fnum)
    except NTSTATUSError as e:
        error = e.args[1] if len(e.args) > 1 else str(e)
    print(json.dumps({"share": args.share, "writes": done, "error": error}))


if __name__ == "__main__":
    main()
