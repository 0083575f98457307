"""A libsmbclient client (Debian python3-smbc) for tests/cluster.rs.

  cluster_client.py stripes URL SOURCE CHUNK PARITY PASSWORD
      opens URL for writing (created if missing, never truncated) and writes every chunk
      i of SOURCE with i % 2 == PARITY at its own offset: two of these, one per node and
      parity, fill one file together.
  cluster_client.py read URL OUT PASSWORD
      reads URL from start to end into the local file OUT.

Prints one line `ok <bytes>` on success; any error ends it with a traceback, status 1.
"""

import os
import sys

import smbc

READ_SIZE = 1 << 20


def context(password):
    def auth(_server, _share, _workgroup, _user, _password):
        return ("WORKGROUP", "root", password)

    ctx = smbc.Context(auth_fn=auth)
    # Never fall back to a guest login: a wrong password must fail.
    ctx.optionNoAutoAnonymousLogin = True
    return ctx


def stripes(url, source, chunk, parity, password):
    ctx = context(password)
    remote = ctx.open(url, os.O_WRONLY | os.O_CREAT)
    written = 0
    with open(source, "rb") as src:
        index = 0
        while True:
            data = src.read(chunk)
            if not data:
                break
            if index % 2 == parity:
                remote.seek(index * chunk)
                done = remote.write(data)
                if done != len(data):
                    raise RuntimeError(f"short write at chunk {index}: {done} of {len(data)}")
                written += done
            index += 1
    remote.close()
    return written


def read(url, out, password):
    ctx = context(password)
    remote = ctx.open(url, os.O_RDONLY)
    total = 0
    with open(out, "wb") as local:
        while True:
            data = remote.read(READ_SIZE)
            if not data:
                break
            local.write(data)
            total += len(data)
    remote.close()
    return total


def main():
    mode = sys.argv[1]
    if mode == "stripes":
        url, source, chunk, parity, password = sys.argv[2:7]
        done = stripes(url, source, int(chunk), int(parity), password)
    elif mode == "read":
        url, out, password = sys.argv[2:5]
        done = read(url, out, password)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(f"ok {done}")


if __name__ == "__main__":
    main()
