#!/usr/bin/env bash
# Runs a program of the Samba 4.22 root file system (scripts/testing/samba-rootfs.sh) chrooted
# into it, e.g. its smbd or smbpasswd, with the module under test in place of Samba's
# vfs/aio_fork.so:
#
#   scripts/testing/run-in-samba-root.sh [--module FILE] [--] PROGRAM [ARGS...]
#
# In a private mount namespace of its own (nothing is visible outside, nothing is left
# behind when the program exits):
#   - a copy of <rootfs>/usr/lib/<arch>/samba/vfs with FILE as aio_fork.so and, beside it,
#     the helper program found next to FILE (aio_fork_helper) is bind-mounted over that
#     directory (smbd loads modules by name from there only);
#   - the host's /tmp is bind-mounted over <rootfs>/tmp, so smb.conf, shares and logs
#     under /tmp have the same path inside and outside (the test harness keeps its work
#     dirs there, and reads smbd's log from the host side);
#   - /proc (of the caller's PID namespace) and /dev are mounted.
# The network namespace is the caller's: run this inside `unshare --net` and the host's
# smbclient/smbtorture reach the chrooted smbd over that namespace's loopback.
# Each step execs the next, so the caller's child *is* PROGRAM (signals reach it).
#
# The root file system must exist already (this never builds it: a caller inside a
# network namespace could not download anything).
#
# Environment:
#   AIO_FORK_ROOTFS  the root file system (default /var/cache/aio_fork/rootfs-samba-4.22)
set -euo pipefail

ROOTFS=${AIO_FORK_ROOTFS:-/var/cache/aio_fork/rootfs-samba-4.22}

usage() {
	echo "usage: $0 [--module FILE] [--] PROGRAM [ARGS...]" >&2
	exit 2
}

module=
while (($#)); do
	case $1 in
	--module)
		(($# >= 2)) || usage
		module=$2
		shift 2
		;;
	--)
		shift
		break
		;;
	-*) usage ;;
	*) break ;;
	esac
done
(($#)) || usage

if [[ ! -f $ROOTFS/.aio_fork-rootfs-complete ]]; then
	echo "run-in-samba-root: no complete Samba root file system at $ROOTFS:" \
		"run scripts/testing/samba-rootfs.sh first (as root, with network access)" >&2
	exit 1
fi

vfsdir=
helper=
if [[ -n $module ]]; then
	module=$(realpath -e "$module")
	# Debian's samba-vfs-modules installs the C module there: the directory smbd loads from.
	vfsdir=$(echo "$ROOTFS"/usr/lib/*/samba/vfs)
	if [[ ! -f $vfsdir/aio_fork.so ]]; then
		echo "run-in-samba-root: $vfsdir/aio_fork.so missing (samba-vfs-modules not in the" \
			"root file system?): rebuild it with scripts/testing/samba-rootfs.sh" >&2
		exit 1
	fi
	if [[ -f $(dirname "$module")/aio_fork_helper ]]; then
		helper=$(dirname "$module")/aio_fork_helper
	fi
fi

exec unshare --mount --propagation private sh -euc '
	root=$1 module=$2 vfsdir=$3 helper=$4
	shift 4
	mount --rbind /dev "$root/dev"
	mount -t proc proc "$root/proc"
	mount --rbind /tmp "$root/tmp"
	if [ -n "$module" ]; then
		# A private tmpfs over the root'"'"'s empty /mnt holds the copy.
		copy=$root/mnt
		mount -t tmpfs tmpfs "$copy"
		cp -a "$vfsdir/." "$copy/"
		cp "$module" "$copy/aio_fork.so"
		if [ -n "$helper" ]; then cp "$helper" "$copy/aio_fork_helper"; fi
		mount --bind "$copy" "$vfsdir"
		cmp -s "$module" "$vfsdir/aio_fork.so" || {
			echo "run-in-samba-root: $module not in place at $vfsdir/aio_fork.so" >&2
			exit 1
		}
	fi
	exec chroot "$root" "$@"
' sh "$ROOTFS" "$module" "$vfsdir" "$helper" "$@"
