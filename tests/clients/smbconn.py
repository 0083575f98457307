"""What the tests' Python clients share: the SMB constants they use ([MS-SMB2] 2.2.13),
NT status names, the connection options every client takes, and a connection to a share
on Samba's own client library (python3-samba, run with /usr/bin/python3)."""
import argparse

from samba import credentials, ntstatus
from samba.samba3 import libsmb_samba_internal as libsmb
from samba.samba3 import param

FILE_READ_DATA = 0x1
FILE_WRITE_DATA = 0x2
SYNCHRONIZE = 0x100000
FILE_SHARE_ALL = 0x7
FILE_OPEN = 1
FILE_OVERWRITE_IF = 5
FILE_NON_DIRECTORY_FILE = 0x40

STATUS_NAMES = {
    value & 0xFFFFFFFF: name
    for name, value in vars(ntstatus).items()
    if name.startswith("NT_STATUS_") and isinstance(value, int)
}


def status_name(err):
    """The NT_STATUS_* name of an NTSTATUSError."""
    code = err.args[0] & 0xFFFFFFFF if err.args else 0
    return STATUS_NAMES.get(code, "0x%08X" % code)


def parser(description):
    """An argument parser with --host (default 127.0.0.1), --share, --user, --password
    and --conf (the smb.conf of the test's smbd)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--host", default="127.0.0.1")
    for a in ("--share", "--user", "--password", "--conf"):
        p.add_argument(a, required=True)
    return p


def connect(args, multi_threaded=False):
    """A connection to args.share on args.host as args.user."""
    lp = param.get_context()
    lp.load(args.conf)
    creds = credentials.Credentials()
    creds.guess(lp)
    creds.set_username(args.user)
    creds.set_password(args.password)
    return libsmb.Conn(args.host, args.share, lp, creds, multi_threaded=multi_threaded)
