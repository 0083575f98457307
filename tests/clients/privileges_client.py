#!/usr/bin/env python3
"""Opens an existing file on a share and writes a few bytes at an offset (no truncate,
no create): the write that tells whether set-id bits are cleared as for smbd's own
write. Prints the NT status ("OK" or the error's name)."""
from samba import NTSTATUSError

import smbconn


def main():
    p = smbconn.parser(__doc__)
    p.add_argument("--file", required=True)
    p.add_argument("--offset", type=int, default=100)
    args = p.parse_args()
    try:
        conn = smbconn.connect(args)
        fnum = conn.create(
            args.file,
            DesiredAccess=smbconn.FILE_WRITE_DATA | smbconn.SYNCHRONIZE,
            ShareAccess=smbconn.FILE_SHARE_ALL,
            CreateDisposition=smbconn.FILE_OPEN,
            CreateOptions=smbconn.FILE_NON_DIRECTORY_FILE,
        )
        conn.write(fnum, b"written by a user", args.offset)
        conn.close(fnum)
        print("OK")
    except NTSTATUSError as e:
        print(smbconn.status_name(e))


if __name__ == "__main__":
    main()
