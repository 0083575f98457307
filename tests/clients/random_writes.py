#!/usr/bin/env python3
"""Opens an existing file on a share and overwrites it with 4 KiB writes at seeded random
4 KiB-aligned offsets within its size (the same writes for the same seed, whatever the
share), one at a time. Prints one JSON line: writes done and the first error, if any."""
import json
import random

from samba import NTSTATUSError

import smbconn

BLOCK = 4096


def main():
    p = smbconn.parser(__doc__)
    p.add_argument("--file", required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--writes", type=int, default=256)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    rng = random.Random(args.seed)
    done, error = 0, None
    try:
        conn = smbconn.connect(args)
        fnum = conn.create(
            args.file,
            DesiredAccess=smbconn.FILE_READ_DATA | smbconn.FILE_WRITE_DATA | smbconn.SYNCHRONIZE,
            ShareAccess=smbconn.FILE_SHARE_ALL,
            CreateDisposition=smbconn.FILE_OPEN,
            CreateOptions=smbconn.FILE_NON_DIRECTORY_FILE,
        )
        for _ in range(args.writes):
            offset = rng.randrange(args.size // BLOCK) * BLOCK
            conn.write(fnum, rng.randbytes(BLOCK), offset)
            done += 1
        conn.close(fnum)
    except NTSTATUSError as e:
        error = smbconn.status_name(e)
    print(json.dumps({"share": args.share, "writes": done, "error": error}))


if __name__ == "__main__":
    main()
