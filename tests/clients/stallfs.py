#!/usr/bin/python3
"""A passthrough FUSE file system whose reads and writes the tests can stall.

    stallfs.py BACKING_DIR MOUNTPOINT CONTROL_DIR

Every operation is passed to the same path under BACKING_DIR (user xattrs included:
smbd keeps DOS attributes in user.DOSATTRIB). Multithreaded, so one stalled request
holds one FUSE thread and every other file keeps working. Mounted `allow_other` (smbd
works as root and as the users it becomes) and `direct_io` (every read and write
reaches this daemon: no page cache can serve or absorb one behind a stall).

Control, through files in CONTROL_DIR (outside the mount, so controlling never goes
through the file system being controlled). Names are paths relative to the mount
root, one per line (e.g. `aio_fail/stalled.bin`):

- `stall-read`: every read of a named file blocks while this file exists (and still
  names it); removing it lets the blocked reads complete normally.
- `hold-write`: the next write request to a named file is held, not applied, until
  `release-write` appears; the daemon removes `hold-write` when it takes the write
  and creates `held-write` (holding "path offset length") while it holds it; on
  release it removes `release-write`, applies the write, then removes `held-write`.
  Writes after the held one pass through at once.
- `ready` is written once the file system answers (a getattr of the root reached it).

Logs one line per stall event to CONTROL_DIR/stallfs.log. Ends on SIGTERM/SIGINT or
an unmount.
"""

import errno
import os
import sys
import threading
import time

import fusepy
from fusepy import FUSE, FuseOSError, Operations

POLL = 0.02


class StallFS(Operations):
    use_ns = True

    def __init__(self, root, control):
        self.root = os.path.realpath(root)
        self.control = control
        self.log_lock = threading.Lock()
        self.hold_lock = threading.Lock()
        self.log_file = open(os.path.join(control, "stallfs.log"), "a", buffering=1)
        self.mountpoint = None

    # --- control files ---

    def ctl(self, name):
        return os.path.join(self.control, name)

    def names_in(self, name):
        try:
            with open(self.ctl(name)) as f:
                return {line.strip().lstrip("/") for line in f if line.strip()}
        except FileNotFoundError:
            return None

    def log(self, text):
        with self.log_lock:
            self.log_file.write("%.3f %s\n" % (time.monotonic(), text))

    def write_ctl(self, name, text):
        tmp = self.ctl("." + name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        # Atomic: a test polling for the file never sees it empty.
        os.rename(tmp, self.ctl(name))

    def remove_ctl(self, name):
        try:
            os.unlink(self.ctl(name))
        except FileNotFoundError:
            pass

    # --- helpers ---

    def full(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    @staticmethod
    def rel(path):
        return path.lstrip("/")

    # --- file system operations ---

    def init(self, path):
        # Called before the loop serves requests: a thread writes `ready` once the
        # mount answers (ismount's lstat of the root is itself served by the loop).
        threading.Thread(target=self.announce, daemon=True).start()

    def announce(self):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if os.path.ismount(self.mountpoint):
                self.write_ctl("ready", "%d\n" % os.getpid())
                self.log("ready")
                return
            time.sleep(POLL)
        self.log("mount never appeared")

    def access(self, path, amode):
        if not os.access(self.full(path), amode):
            raise FuseOSError(errno.EACCES)

    def getattr(self, path, fh=None):
        if fh is not None:
            st = os.fstat(fh)
        else:
            st = os.lstat(self.full(path))
        keys = (
            "st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_ino",
            "st_atime_ns", "st_mtime_ns", "st_ctime_ns", "st_blocks",
        )
        out = {k: getattr(st, k) for k in keys}
        # fusepy with use_ns takes st_*time in nanoseconds under the plain names.
        for k in ("st_atime", "st_mtime", "st_ctime"):
            out[k] = out.pop(k + "_ns")
        return out

    def chmod(self, path, mode):
        os.chmod(self.full(path), mode)

    def chown(self, path, uid, gid):
        os.lchown(self.full(path), uid, gid)

    def utimens(self, path, times=None):
        if times is None:
            os.utime(self.full(path), follow_symlinks=False)
        else:
            os.utime(self.full(path), ns=times, follow_symlinks=False)

    def readlink(self, path):
        return os.readlink(self.full(path))

    def symlink(self, target, source):
        os.symlink(source, self.full(target))

    def link(self, target, source):
        os.link(self.full(source), self.full(target))

    def mknod(self, path, mode, dev):
        os.mknod(self.full(path), mode, dev)

    def mkdir(self, path, mode):
        os.mkdir(self.full(path), mode)

    def rmdir(self, path):
        os.rmdir(self.full(path))

    def unlink(self, path):
        os.unlink(self.full(path))

    def rename(self, old, new):
        os.rename(self.full(old), self.full(new))

    def opendir(self, path):
        if not os.path.isdir(self.full(path)):
            raise FuseOSError(errno.ENOTDIR)
        return 0

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self.full(path))

    def statfs(self, path):
        sv = os.statvfs(self.full(path))
        keys = (
            "f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree",
            "f_files", "f_flag", "f_frsize", "f_namemax",
        )
        return {k: getattr(sv, k) for k in keys}

    def open(self, path, flags):
        return os.open(self.full(path), flags)

    def create(self, path, mode, fi=None):
        return os.open(self.full(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)

    def truncate(self, path, length, fh=None):
        if fh is not None:
            os.ftruncate(fh, length)
        else:
            os.truncate(self.full(path), length)

    def read(self, path, size, offset, fh):
        names = self.names_in("stall-read")
        if names and self.rel(path) in names:
            self.log("read stalled %s offset=%d size=%d" % (path, offset, size))
            start = time.monotonic()
            while True:
                names = self.names_in("stall-read")
                if not names or self.rel(path) not in names:
                    break
                time.sleep(POLL)
            self.log("read resumed %s after %.3f s" % (path, time.monotonic() - start))
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        held = False
        with self.hold_lock:
            names = self.names_in("hold-write")
            if names and self.rel(path) in names:
                self.remove_ctl("hold-write")
                self.write_ctl("held-write", "%s %d %d\n" % (path, offset, len(data)))
                held = True
        if held:
            self.log("write held %s offset=%d size=%d" % (path, offset, len(data)))
            start = time.monotonic()
            while not os.path.exists(self.ctl("release-write")):
                time.sleep(POLL)
            self.remove_ctl("release-write")
            n = os.pwrite(fh, data, offset)
            self.log("write released %s after %.3f s: applied %d bytes"
                     % (path, time.monotonic() - start, n))
            self.remove_ctl("held-write")
            return n
        return os.pwrite(fh, data, offset)

    def flush(self, path, fh):
        # Writes are applied as they come: nothing to write back; the fd stays open
        # until release.
        return 0

    def fsync(self, path, datasync, fh):
        if datasync:
            os.fdatasync(fh)
        else:
            os.fsync(fh)

    def release(self, path, fh):
        os.close(fh)

    def getxattr(self, path, name, position=0):
        try:
            return os.getxattr(self.full(path), name, follow_symlinks=False)
        except OSError as e:
            # ENODATA is the ordinary "no such attribute" answer (fusepy's ENOATTR).
            raise FuseOSError(e.errno)

    def setxattr(self, path, name, value, options, position=0):
        os.setxattr(self.full(path), name, value, options, follow_symlinks=False)

    def listxattr(self, path):
        return os.listxattr(self.full(path), follow_symlinks=False)

    def removexattr(self, path, name):
        os.removexattr(self.full(path), name, follow_symlinks=False)


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: stallfs.py BACKING_DIR MOUNTPOINT CONTROL_DIR")
    backing, mountpoint, control = sys.argv[1:]
    fs = StallFS(backing, control)
    fs.mountpoint = mountpoint
    fs.log("mounting %s on %s (fusepy %s)"
           % (backing, mountpoint, getattr(fusepy, "__version__", "?")))
    FUSE(
        fs,
        mountpoint,
        foreground=True,
        nothreads=False,
        allow_other=True,
        direct_io=True,
        # Whole SMB-sized writes in one request (else 4 KiB pieces).
        big_writes=True,
        fsname="stallfs",
        subtype="stallfs",
    )
    fs.log("unmounted")


if __name__ == "__main__":
    main()
