#!/usr/bin/python3
"""Requests a normal client does not send, against one share, one JSON line per case.

Driven by tests/bad_input.rs, which runs it against a plain share and an aio_fork share
of the same smbd and compares the lines. Uses Samba's own client library (Debian
python3-samba), which sends offsets and sizes as given (SMB2 sizes are only lowered to
what the connection's credits and negotiated maximum allow, the same on both shares).

Each line: {"case": name, "status": "NT_STATUS_OK" or the error, "bytes": n or null,
"sha": first 16 hex digits of SHA-256 of the data read (or read back), "size": the
file's size afterwards (write cases)}. A case that loses the connection reconnects
before the next case, so one crash shows as a status, not as a silent end.

The share must hold `seed.bin` (SEED_SIZE bytes) before the probe runs.
"""

import argparse
import hashlib
import json
import sys
import time

from samba import NTSTATUSError, credentials
from samba.samba3 import libsmb_samba_internal as libsmb
from samba.samba3 import param

from smbconn import status_name

KIB = 1024
MIB = 1024 * KIB
SEED_SIZE = 17 * MIB + 5
OFF_MAX = 2**63 - 1  # largest off_t
MAXFILESIZE = 0xFFFFFFF0000  # [MS-FSA] 2.1.5.3: smbd refuses writes ending above it

# Access masks and create dispositions ([MS-SMB2] 2.2.13).
FILE_READ_DATA = 0x1
FILE_WRITE_DATA = 0x2
FILE_APPEND_DATA = 0x4
FILE_EXECUTE = 0x20
FILE_READ_ATTRIBUTES = 0x80
SYNCHRONIZE = 0x100000
FILE_SHARE_ALL = 0x7
FILE_OPEN = 1
FILE_OVERWRITE_IF = 5
FILE_DIRECTORY_FILE = 0x1
FILE_NON_DIRECTORY_FILE = 0x40



def pattern(size, seed):
    """Deterministic bytes, different for every seed."""
    block = hashlib.sha256(b"aio_fork bad input %d" % seed).digest()
    reps = size // len(block) + 1
    return (block * reps)[:size]


def sha(data):
    return hashlib.sha256(data).hexdigest()[:16]


class Probe:
    def __init__(self, args):
        self.args = args
        # libsmb needs source3's loadparm context (samba.param's fails the login).
        self.lp = param.get_context()
        self.lp.load(args.conf)
        if args.smb1:
            self.lp.set("client min protocol", "NT1")
            self.lp.set("client max protocol", "NT1")
        self.creds = credentials.Credentials()
        self.creds.guess(self.lp)
        self.creds.set_username(args.user)
        self.creds.set_password(args.password)
        self.conn = None
        self.case_start = time.monotonic()
        self.connect()

    def connect(self):
        self.conn = libsmb.Conn(
            self.args.host,
            self.args.share,
            self.lp,
            self.creds,
            force_smb1=self.args.smb1,
        )
        # Large requests on a busy machine: do not give up on a slow answer.
        self.conn.settimeout(120 * 1000)

    def emit(self, case, status, nbytes=None, digest=None, size=None):
        line = {"case": case, "status": status, "bytes": nbytes, "sha": digest, "size": size}
        # Not compared: for the report only.
        line["ms"] = int((time.monotonic() - self.case_start) * 1000)
        print(json.dumps(line, sort_keys=True), flush=True)

    def open(self, name, access, disposition=FILE_OPEN, options=FILE_NON_DIRECTORY_FILE):
        return self.conn.create(
            name,
            DesiredAccess=access | SYNCHRONIZE,
            ShareAccess=FILE_SHARE_ALL,
            CreateDisposition=disposition,
            CreateOptions=options,
        )

    def close(self, fnum):
        try:
            self.conn.close(fnum)
        except NTSTATUSError:
            pass

    def size_of(self, name):
        """The file's size as a directory listing shows it (None if unknown)."""
        try:
            entries = self.conn.list("", mask=name)
        except NTSTATUSError:
            return None
        for entry in entries:
            if entry["name"] == name:
                return entry["size"]
        return None

    def case_read(self, case, fnum, offset, size):
        try:
            data = self.conn.read(fnum, offset, size)
        except NTSTATUSError as e:
            self.emit(case, status_name(e))
            return
        self.emit(case, "NT_STATUS_OK", len(data), sha(data))

    def run_case(self, case, body):
        """Runs one case; a failure outside the request itself is reported too."""
        self.case_start = time.monotonic()
        try:
            body(case)
        except NTSTATUSError as e:
            self.emit(case, "setup:" + status_name(e))
        except Exception as e:  # noqa: BLE001 - reported, never hidden
            self.emit(case, "exception:%s:%s" % (type(e).__name__, e))
        # Is the connection still up? If not, say so (it is compared too) and make a
        # new one, so that the remaining cases still run.
        try:
            self.conn.echo()
        except NTSTATUSError as e:
            self.emit(case + " (connection check)", status_name(e))
            self.connect()

    # --- reads of the seed file -------------------------------------------------------

    def reads(self):
        offsets = [
            ("0", 0),
            ("eof-1", SEED_SIZE - 1),
            ("eof", SEED_SIZE),
            ("eof+1", SEED_SIZE + 1),
            ("2^31", 2**31),
            ("2^32", 2**32),
            ("maxfilesize", MAXFILESIZE),
            ("2^62", 2**62),
            # The last 64 KiB read that ends within off_t, and one byte further.
            ("offmax-65536", OFF_MAX - 65536),
            ("offmax-65535", OFF_MAX - 65535),
            ("offmax-1", OFF_MAX - 1),
            ("offmax", OFF_MAX),
            ("2^63", 2**63),
            ("2^64-2", 2**64 - 2),
            ("2^64-1", 2**64 - 1),
        ]
        sizes = [0, 1, 65536]
        for label, offset in offsets:
            for size in sizes:
                self.run_case(
                    "read seed off=%s len=%d" % (label, size),
                    lambda case, o=offset, s=size: self.read_seed(case, o, s),
                )
        lengths = [
            128 * KIB - 1, 128 * KIB, 128 * KIB + 1,
            MIB - 1, MIB, MIB + 1,
            8 * MIB - 1, 8 * MIB, 8 * MIB + 1,
            16 * MIB + 1,
        ]
        for size in lengths:
            self.run_case(
                "read seed off=0 len=%d" % size,
                lambda case, s=size: self.read_seed(case, 0, s),
            )
            # Crossing the end of the file: a short read.
            self.run_case(
                "read seed off=eof-100 len=%d" % size,
                lambda case, s=size: self.read_seed(case, SEED_SIZE - 100, s),
            )
            # Just inside the 8 MiB boundary of the file.
            self.run_case(
                "read seed off=8MiB-1 len=%d" % size,
                lambda case, s=size: self.read_seed(case, 8 * MIB - 1, s),
            )
        self.run_case(
            "read seed past eof off=eof+4096 len=4096",
            lambda case: self.read_seed(case, SEED_SIZE + 4096, 4096),
        )

    def read_seed(self, case, offset, size):
        fnum = self.open("seed.bin", FILE_READ_DATA)
        try:
            self.case_read(case, fnum, offset, size)
        finally:
            self.close(fnum)

    # --- writes to scratch files --------------------------------------------------------

    def writes(self):
        offsets = [
            ("0", 0),
            ("2^31", 2**31),
            ("2^32", 2**32),
            ("maxfilesize-1", MAXFILESIZE - 1),
            ("maxfilesize", MAXFILESIZE),
            ("2^62", 2**62),
            ("offmax-1", OFF_MAX - 1),
            ("offmax", OFF_MAX),
            ("2^63", 2**63),
            ("2^64-1", 2**64 - 1),
        ]
        n = 0
        for label, offset in offsets:
            for size in [0, 1, 4096]:
                n += 1
                self.run_case(
                    "write off=%s len=%d" % (label, size),
                    lambda case, o=offset, s=size, k=n: self.write_scratch(case, k, o, s),
                )
        lengths = [
            128 * KIB - 1, 128 * KIB, 128 * KIB + 1,
            MIB - 1, MIB, MIB + 1,
            8 * MIB - 1, 8 * MIB, 8 * MIB + 1,
            # Twice the largest write, yet below 16 MiB: a write PDU of 16 MiB or more
            # does not fit the transport's 24-bit length, so the stream itself breaks and
            # whether smbd still answers depends on TCP timing, on any share.
            16 * MIB - 64 * KIB,
        ]
        for size in lengths:
            for label, offset in [("0", 0), ("4095", 4095)]:
                n += 1
                self.run_case(
                    "write off=%s len=%d" % (label, size),
                    lambda case, o=offset, s=size, k=n: self.write_scratch(case, k, o, s),
                )
        # Write-through (smbd syncs the file after the write).
        for label, offset, size in [("0", 0, MIB + 1), ("maxfilesize-1", MAXFILESIZE - 1, 1)]:
            n += 1
            self.run_case(
                "write-through off=%s len=%d" % (label, size),
                lambda case, o=offset, s=size, k=n: self.write_scratch(case, k, o, s, mode=1),
            )

    def write_scratch(self, case, n, offset, size, mode=0):
        name = "w%03d.bin" % n
        data = pattern(size, n)
        fnum = self.open(name, FILE_READ_DATA | FILE_WRITE_DATA, FILE_OVERWRITE_IF)
        try:
            try:
                written = self.conn.write(fnum, data, offset, mode=mode)
            except NTSTATUSError as e:
                self.emit(case, status_name(e), size=self.size_of(name))
                return
            back = self.read_back(fnum, offset, written) if written else b""
            ok = back == data[:written]
            self.emit(
                case,
                "NT_STATUS_OK" if ok else "READ_BACK_DIFFERS",
                written,
                sha(back),
                self.size_of(name),
            )
        finally:
            self.close(fnum)

    def read_back(self, fnum, offset, size):
        out = b""
        while len(out) < size:
            piece = self.conn.read(fnum, offset + len(out), min(size - len(out), MIB))
            if not piece:
                break
            out += piece
        return out

    # --- handles without the right access -----------------------------------------------

    def access(self):
        def write_read_only(case):
            fnum = self.open("seed.bin", FILE_READ_DATA)
            try:
                self.case_write(case, fnum, 0, b"x" * 100)
            finally:
                self.close(fnum)

        def read_write_only(case):
            fnum = self.open("wo.bin", FILE_WRITE_DATA, FILE_OVERWRITE_IF)
            try:
                self.conn.write(fnum, pattern(5000, 77), 0)
                self.case_read(case, fnum, 0, 4096)
            finally:
                self.close(fnum)

        def read_execute_only(case):
            fnum = self.open("seed.bin", FILE_EXECUTE)
            try:
                self.case_read(case, fnum, 0, 65536)
            finally:
                self.close(fnum)

        def read_attributes_only(case):
            fnum = self.open("seed.bin", FILE_READ_ATTRIBUTES)
            try:
                self.case_read(case, fnum, 0, 4096)
            finally:
                self.close(fnum)

        def write_append_only(case, offset):
            fnum = self.open("ap.bin", FILE_APPEND_DATA, FILE_OVERWRITE_IF)
            try:
                self.case_write(case, fnum, offset, pattern(3000, 5), "ap.bin")
            finally:
                self.close(fnum)

        def closed_handle(case, op):
            fnum = self.open("seed.bin", FILE_READ_DATA | FILE_WRITE_DATA)
            self.conn.close(fnum)
            if op == "read":
                self.case_read(case, fnum, 0, 4096)
            else:
                self.case_write(case, fnum, 0, b"y" * 10)

        def directory_handle(case, op):
            try:
                self.conn.mkdir("dir")
            except NTSTATUSError:
                pass
            fnum = self.open("dir", FILE_READ_DATA, FILE_OPEN, FILE_DIRECTORY_FILE)
            try:
                if op == "read":
                    self.case_read(case, fnum, 0, 4096)
                else:
                    self.case_write(case, fnum, 0, b"z" * 10)
            finally:
                self.close(fnum)

        self.run_case("write on read-only handle", write_read_only)
        self.run_case("read on write-only handle", read_write_only)
        self.run_case("read on execute-only handle", read_execute_only)
        self.run_case("read on read-attributes-only handle", read_attributes_only)
        self.run_case("write on append-only handle off=0", lambda c: write_append_only(c, 0))
        self.run_case(
            "write on append-only handle off=1000", lambda c: write_append_only(c, 1000)
        )
        self.run_case("read on closed handle", lambda c: closed_handle(c, "read"))
        self.run_case("write on closed handle", lambda c: closed_handle(c, "write"))
        self.run_case("read on directory handle", lambda c: directory_handle(c, "read"))
        self.run_case("write on directory handle", lambda c: directory_handle(c, "write"))

    def case_write(self, case, fnum, offset, data, name=None):
        try:
            written = self.conn.write(fnum, data, offset)
        except NTSTATUSError as e:
            size = self.size_of(name) if name else None
            self.emit(case, status_name(e), size=size)
            return
        size = self.size_of(name) if name else None
        self.emit(case, "NT_STATUS_OK", written, size=size)

    def final(self):
        """After everything: a normal read on the same connection still works."""
        self.run_case(
            "final normal read", lambda case: self.read_seed(case, 12345, 1 * MIB)
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--share")
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--conf", help="smb.conf for the client settings")
    parser.add_argument("--smb1", action="store_true", help="force SMB1 (NT1)")
    parser.add_argument("--print-seed", metavar="PATH", help="write seed.bin's bytes to PATH")
    args = parser.parse_args()
    if args.print_seed:
        with open(args.print_seed, "wb") as f:
            f.write(pattern(SEED_SIZE, 0))
        return 0
    for needed in ("share", "user", "password", "conf"):
        if getattr(args, needed) is None:
            parser.error("--%s is required" % needed)
    probe = Probe(args)
    probe.reads()
    probe.writes()
    probe.access()
    probe.final()
    return 0


if __name__ == "__main__":
    sys.exit(main())
