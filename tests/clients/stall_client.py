#!/usr/bin/python3
"""One client's side of a stall case (tests/stalls.rs), on Samba's Python client
library in multi-threaded mode: the stalled request waits on a thread of its own while
the main thread goes on using the same connection (so the same smbd process and the
same helper pool).

The stall is made by tests/clients/stallfs.py through its control directory (--ctl);
--fs-name is the file's path relative to that file system's root.

    read:  read a stalled file; meanwhile write and read another file on the same
           connection; then resume and read the file again.
    write: per round, hold the next write of the file, write X over it, release the
           held write (after X's answer, or while a second write Y waits), write Y,
           and check the file ends as Y (through the share and in --backing).
    close: close a file while a read of it is stalled.

Prints `EVENT <name> t=<monotonic>` lines as things happen (stdout is flushed, the
test may act on them) and `RESULT key=value ...` lines; times are CLOCK_MONOTONIC
seconds, like the test's own clock. Exits 0 whatever the statuses were: judging them
is the test's job.
"""

import hashlib
import os
import sys
import threading
import time

from samba import NTSTATUSError

import smbconn
from smbconn import FILE_OPEN, FILE_OVERWRITE_IF, SYNCHRONIZE, status_name

READ_DATA = smbconn.FILE_READ_DATA
WRITE_DATA = smbconn.FILE_WRITE_DATA
SHARE_ALL = smbconn.FILE_SHARE_ALL



def pattern(tag, size):
    block = hashlib.sha256(tag.encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def now():
    return time.monotonic()


def emit(kind, **fields):
    parts = ["%s=%s" % (k, v) for k, v in fields.items()]
    print(kind, " ".join(parts), flush=True)


class Call:
    """One request on its own thread: status and times once it is answered."""

    def __init__(self, fn):
        self.fn = fn
        self.status = "waiting"
        self.value = None
        self.start = now()
        self.end = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            self.value = self.fn()
            self.status = "NT_STATUS_OK"
        except NTSTATUSError as e:
            self.status = status_name(e)
        except Exception as e:  # a Python-level failure must still be reported
            self.status = "exception:" + type(e).__name__
        self.end = now()

    def wait(self, until):
        self.thread.join(max(0.0, until - now()))
        return not self.thread.is_alive()

    def secs(self):
        end = self.end if self.end is not None else now()
        return "%.3f" % (end - self.start)


class Client:
    def __init__(self, args):
        self.args = args
        self.conn = smbconn.connect(args, multi_threaded=True)
        # Far beyond any bound of the test: the test, not the library, gives up.
        self.conn.settimeout(300 * 1000)

    def open(self, name, disposition=FILE_OPEN):
        return self.conn.create(
            name,
            DesiredAccess=READ_DATA | WRITE_DATA | SYNCHRONIZE,
            ShareAccess=SHARE_ALL,
            CreateDisposition=disposition,
        )

    def read_all(self, fnum, size):
        out = b""
        while len(out) < size:
            piece = self.conn.read(fnum, len(out), size - len(out))
            if not piece:
                break
            out += piece
        return out

    def write_all(self, fnum, data):
        done = 0
        while done < len(data):
            n = self.conn.write(fnum, data[done:], done)
            if n <= 0:
                raise IOError("write returned %d" % n)
            done += n
        return done


def ctl(args, name):
    return os.path.join(args.ctl, name)


def put_ctl(args, name, text):
    tmp = ctl(args, "." + name + ".client")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, ctl(args, name))


def drop_ctl(args, name):
    try:
        os.unlink(ctl(args, name))
    except FileNotFoundError:
        pass


def wait_for(pred, timeout):
    deadline = now() + timeout
    while now() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def log_has(args, text):
    try:
        with open(ctl(args, "stallfs.log")) as f:
            return text in f.read()
    except FileNotFoundError:
        return False


def log_count(args, text):
    try:
        with open(ctl(args, "stallfs.log")) as f:
            return f.read().count(text)
    except FileNotFoundError:
        return 0


def stall_and_wait(args, before):
    """Waits until the stall file system reports one more stalled read of the file."""
    marker = "read stalled /" + args.fs_name + " "
    return wait_for(lambda: log_count(args, marker) > before, 10)


def case_read(args):
    c = Client(args)
    with open(args.expect, "rb") as f:
        expected = f.read()
    fnum = c.open(args.file)
    marker = "read stalled /" + args.fs_name + " "
    before = log_count(args, marker)
    put_ctl(args, "stall-read", args.fs_name + "\n")
    first = Call(lambda: c.read_all(fnum, len(expected)))
    reached = stall_and_wait(args, before)
    emit("EVENT", name="stalled", t="%.3f" % now(), reached=int(reached))

    # The same connection, another file, while the stalled read is outstanding.
    other = pattern("other " + args.share, args.other_size)
    o_start = now()
    step = "create"
    try:
        ofn = c.open(args.other, FILE_OVERWRITE_IF)
        step = "write"
        c.write_all(ofn, other)
        step = "close"
        c.conn.close(ofn)
        # Read through a second open: on 4.17's client library, reading the handle
        # just created (overwrite-if) while another read is outstanding on the
        # connection answers NT_STATUS_INVALID_HANDLE, on a plain share as well.
        step = "reopen"
        ofn = c.open(args.other)
        step = "read"
        back = c.read_all(ofn, len(other))
        step = "close2"
        c.conn.close(ofn)
        o_status = "NT_STATUS_OK"
        o_ok = int(back == other)
    except NTSTATUSError as e:
        o_status = status_name(e) + "@" + step
        o_ok = 0
    o_end = now()
    first_done_during_other = int(first.end is not None and first.end < o_end)

    answered = first.wait(first.start + args.bound)
    first_status = first.status
    first_secs = first.secs()
    first_end = first.end if answered else now()
    hold_past_exit_grace(first_end)
    resume_t = now()
    drop_ctl(args, "stall-read")
    late_status = "-"
    late_ok = "-"
    late_secs = "-"
    if not answered:
        # The outstanding read completes once the file system answers.
        first.wait(now() + 15)
        late_status = first.status
        late_secs = "%.3f" % ((first.end or now()) - resume_t)
        late_ok = int(first.value == expected) if first.value is not None else 0
    first_ok = int(first.value == expected) if answered and first.value is not None else 0

    again = Call(lambda: c.read_all(fnum, len(expected)))
    again.wait(now() + 15)
    again_ok = int(again.value == expected) if again.value is not None else 0
    close = Call(lambda: c.conn.close(fnum))
    close.wait(now() + 15)
    emit(
        "RESULT",
        case="read",
        share=args.share,
        reached=int(reached),
        first_status=first_status,
        first_secs=first_secs,
        first_start="%.3f" % first.start,
        first_end="%.3f" % first_end,
        first_ok=first_ok,
        late_status=late_status,
        late_secs=late_secs,
        late_ok=late_ok,
        other_status=o_status,
        other_ok=o_ok,
        other_secs="%.3f" % (o_end - o_start),
        other_start="%.3f" % o_start,
        other_end="%.3f" % o_end,
        first_done_during_other=first_done_during_other,
        again_status=again.status,
        again_secs=again.secs(),
        again_ok=again_ok,
        close_status=close.status,
    )


# The module gives a killed helper 1 s to exit before it counts it as stuck in the
# kernel; the stall is held a little longer than that after the client's answer, so
# that the helper blocked in this file system is seen as stuck.
EXIT_GRACE_HOLD = 2.0


def hold_past_exit_grace(answered_at):
    time.sleep(max(0.0, answered_at + EXIT_GRACE_HOLD - now()))


def case_write(args):
    c = Client(args)
    backing = os.path.join(args.backing, args.fs_name)
    for r, mode in enumerate(args.modes.split(",")):
        x = pattern("X %s %d" % (args.share, r), args.size)
        y = pattern("Y %s %d" % (args.share, r), args.size)
        drop_ctl(args, "release-write")
        fnum = c.open(args.file)
        put_ctl(args, "hold-write", args.fs_name + "\n")
        xw = Call(lambda: c.write_all(fnum, x))
        held = wait_for(lambda: os.path.exists(ctl(args, "held-write")), 10)
        x_answered = xw.wait(xw.start + args.bound)
        x_status = xw.status
        x_secs = xw.secs()
        y_waited = "-"
        if mode == "after":
            hold_past_exit_grace(xw.end or now())
            put_ctl(args, "release-write", "")
            release_t = now()
            xw.wait(now() + 15)
            x_late = xw.status if not x_answered else "-"
            # The held write is applied (by the helper that had it, if it still
            # exists) before the daemon removes held-write.
            applied = wait_for(lambda: not os.path.exists(ctl(args, "held-write")), 15)
            yw = Call(lambda: c.write_all(fnum, y))
            yw.wait(now() + args.bound)
        else:
            # Y is sent while X is still held: the module must keep it back until
            # the helper that had X is gone, so that Y lands last.
            yw = Call(lambda: c.write_all(fnum, y))
            time.sleep(1.0)
            hold_past_exit_grace(xw.end or now())
            y_waited = int(yw.end is None)
            put_ctl(args, "release-write", "")
            release_t = now()
            applied = wait_for(lambda: not os.path.exists(ctl(args, "held-write")), 15)
            yw.wait(yw.start + args.bound + 1.0)
            xw.wait(now() + 15)
            x_late = xw.status if not x_answered else "-"
        y_status = yw.status
        y_secs = yw.secs()
        close = Call(lambda: c.conn.close(fnum))
        close.wait(now() + 15)
        # Whatever is still in flight lands before the file is judged.
        wait_for(lambda: not os.path.exists(ctl(args, "held-write")), 5)
        time.sleep(0.3)
        with open(backing, "rb") as f:
            on_disk = f.read()
        rd = Call(lambda: c.read_all(c.open(args.file), args.size))
        rd.wait(now() + 15)
        via_share = rd.value if rd.value is not None else b""

        def which(data):
            if data == y:
                return "Y"
            if data == x:
                return "X"
            return "other(%d)" % len(data)

        emit(
            "RESULT",
            case="write",
            share=args.share,
            round=r,
            mode=mode,
            held=int(held),
            x_status=x_status,
            x_secs=x_secs,
            x_late=x_late,
            y_waited=y_waited,
            y_status=y_status,
            y_secs=y_secs,
            release_to_y_end="%.3f" % ((yw.end or now()) - release_t),
            applied=int(applied),
            close_status=close.status,
            disk=which(on_disk),
            share_read=which(via_share),
        )
        drop_ctl(args, "hold-write")
        if os.path.exists(ctl(args, "held-write")):
            put_ctl(args, "release-write", "")


def case_close(args):
    c = Client(args)
    fnum = c.open(args.file)
    marker = "read stalled /" + args.fs_name + " "
    before = log_count(args, marker)
    put_ctl(args, "stall-read", args.fs_name + "\n")
    rd = Call(lambda: c.conn.read(fnum, 0, args.size))
    reached = stall_and_wait(args, before)
    emit("EVENT", name="stalled", t="%.3f" % now(), reached=int(reached))
    cl = Call(lambda: c.conn.close(fnum))
    answered = cl.wait(cl.start + args.bound)
    close_status = cl.status
    close_secs = cl.secs()
    rd_status_at_close = rd.status
    hold_past_exit_grace(cl.end or now())
    drop_ctl(args, "stall-read")
    cl.wait(now() + 15)
    rd.wait(now() + 15)
    emit(
        "RESULT",
        case="close",
        share=args.share,
        reached=int(reached),
        close_status=close_status,
        close_secs=close_secs,
        close_answered=int(answered),
        read_status_at_close=rd_status_at_close,
        read_status=rd.status,
        read_secs=rd.secs(),
        close_late=cl.status,
    )


def main():
    p = smbconn.parser(__doc__)
    p.add_argument("case", choices=["read", "write", "close"])
    p.add_argument("--ctl", required=True)
    p.add_argument("--file", required=True)
    p.add_argument("--fs-name", required=True)
    p.add_argument("--backing", default="")
    p.add_argument("--expect", default="")
    p.add_argument("--other", default="other.bin")
    p.add_argument("--other-size", type=int, default=1 << 20)
    p.add_argument("--size", type=int, default=64 * 1024)
    p.add_argument("--modes", default="after,during")
    p.add_argument("--bound", type=float, required=True)
    args = p.parse_args()
    {"read": case_read, "write": case_write, "close": case_close}[args.case](args)
    sys.stdout.flush()
    # Threads still blocked on a request must not keep the process alive.
    os._exit(0)


if __name__ == "__main__":
    main()
