#!/usr/bin/env python3
"""Opens an existing file on a share and writes a few bytes at an offset (no truncate,
no create): the write that tells whether set-id bits are cleared as for smbd's own
write. Prints the NT status ("OK" or the error's name)."""
import argparse

from samba import NTSTATUSError, credentials
from samba.samba3 import libsmb_samba_internal as libsmb
from samba.samba3 import param

FILE_WRITE_DATA = 0x2
SYNCHRONIZE = 0x100000
FILE_SHARE_ALL = 0x7
FILE_OPEN = 1
FILE_NON_DIRECTORY_FILE = 0x40


def main():
    p = argparse.ArgumentParser()
    for a in ("--host", "--share", "--user", "--password", "--conf", "--file"):
        p.add_argument(a, required=a != "--host", default="127.0.0.1")
    p.add_argument("--offset", type=int, default=100)
    args = p.parse_args()
    lp = param.get_context()
    lp.load(args.conf)
    creds = credentials.Credentials()
    creds.guess(lp)
    creds.set_username(args.user)
    creds.set_password(args.password)
    try:
        conn = libsmb.Conn(args.host, args.share, lp, creds)
        fnum = conn.create(
            args.file,
            DesiredAccess=FILE_WRITE_DATA | SYNCHRONIZE,
            ShareAccess=FILE_SHARE_ALL,
            CreateDisposition=FILE_OPEN,
            CreateOptions=FILE_NON_DIRECTORY_FILE,
        )
        conn.write(fnum, b"written by a user", args.offset)
        conn.close(fnum)
        print("OK")
    except NTSTATUSError as e:
        print(e.args[1] if len(e.args) > 1 else e)


if __name__ == "__main__":
    main()
