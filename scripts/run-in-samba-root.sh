#!/usr/bin/env bash
# Runs a program of the Samba 4.22 root file system (scripts/samba-rootfs.sh) chrooted
# into it, e.g. its smbd or smbpasswd, with the module under test in place of Samba's
# vfs/aio_fork.so:
#
#   scripts/run-in-samba-root.sh [--module FILE] [--] PROGRAM [ARGS...]
#
# In a private mount namespace of its own (nothing is visible outside, nothing is left
# behind when the program exits):
#   - FILE is bind-mounted over <rootfs>/usr/lib/<arch>/samba/vfs/aio_fork.so (smbd loads
#     modules by name from there only, see DESIGN.md);
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
		"run scripts/samba-rootfs.sh first (as root, with network access)" >&2
	exit 1
fi

target=
if [[ -n $module ]]; then
	module=$(realpath -e "$module")
	# The module file Debian's samba-vfs-modules installs: the bind mount's mount point.
	target=$(echo "$ROOTFS"/usr/lib/*/samba/vfs/aio_fork.so)
	if [[ ! -f $target ]]; then
		echo "run-in-samba-root: $target missing (samba-vfs-modules not in the root" \
			"file system?): rebuild it with scripts/samba-rootfs.sh" >&2
		exit 1
	fi
fi

exec unshare --mount --propagation private sh -euc '
	root=$1 module=$2 target=$3
	shift 3
	mount --rbind /dev "$root/dev"
	mount -t proc proc "$root/proc"
	mount --rbind /tmp "$root/tmp"
	if [ -n "$module" ]; then
		mount --bind "$module" "$target"
		cmp -s "$module" "$target" || {
			echo "run-in-samba-root: bind mount of $module over $target did not take" >&2
			exit 1
		}
	fi
	exec chroot "$root" "$@"
' sh "$ROOTFS" "$module" "$target" "$@"
