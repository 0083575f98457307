#!/usr/bin/env bash
# Installs the Debian package into the root file system of another Samba release (see
# scripts/testing/samba-rootfs.sh), checks that it serves a share there, removes it, and checks
# that Samba's own C module is back, byte for byte:
#
#   scripts/testing/deb-in-samba-root.sh RELEASE DEB
#
# The cached tree is never written: everything happens on an overlay (writable layer on a
# tmpfs) inside private mount, network and PID namespaces, which vanish when the script
# ends. dpkg, dpkg-divert and the package's maintainer scripts run for real, chrooted into
# the overlay; smbd, smbpasswd and smbclient are the release's own. Prints one line per
# step; exits non-zero at the first check that fails. Runs as root.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)

(($# == 2)) || {
	echo "usage: $0 RELEASE DEB" >&2
	exit 2
}
release=$1
deb=$(realpath -e "$2")
root=$("$repo/scripts/testing/samba-rootfs.sh" "$release")

work=$(mktemp -d /tmp/aio_fork_deb_root.XXXXXX)
trap 'rm -rf --one-file-system "$work"' EXIT
cp "$deb" "$work/package.deb"
head -c $((9 << 20)) /dev/urandom >"$work/in"

exec 3>&1
unshare --mount --net --pid --fork --propagation private bash -euo pipefail -c '
	root=$1 work=$2 release=$3
	say() { echo "deb-in-samba-root $release: $*"; }
	fail() { echo "deb-in-samba-root $release: FAILED: $*" >&2; exit 1; }

	mkdir "$work/ovl"
	mount -t tmpfs tmpfs "$work/ovl"
	mkdir "$work/ovl/upper" "$work/ovl/work" "$work/ovl/merged"
	m=$work/ovl/merged
	mount -t overlay overlay \
		-o "lowerdir=$root,upperdir=$work/ovl/upper,workdir=$work/ovl/work" "$m"
	mount -t proc proc "$m/proc"
	mount --rbind /dev "$m/dev"
	mkdir -p "$m/mnt/t"
	mount --bind "$work" "$m/mnt/t"
	ip link set lo up
	in_root() { chroot "$m" "$@"; }

	vfs=$(cd "$m" && echo usr/lib/*/samba/vfs)
	c_module=$root/$vfs/aio_fork.so
	[ -f "$c_module" ] || fail "no $vfs/aio_fork.so (samba-vfs-modules) in $root"

	in_root dpkg -i /mnt/t/package.deb >"$work/dpkg-i.log" 2>&1 ||
		{ cat "$work/dpkg-i.log" >&2; fail "dpkg -i"; }
	say "installed: $(in_root dpkg-query -W -f="\${Package} \${Version}" samba-vfs-aio-fork-rs)" \
		"over $(in_root smbd -V)"
	by=$(in_root dpkg-divert --listpackage "/$vfs/aio_fork.so")
	[ "$by" = samba-vfs-aio-fork-rs ] || fail "aio_fork.so diverted by '"'"'$by'"'"', not the package"
	cmp -s "$c_module" "$m/$vfs/aio_fork.so.distrib" || fail "C module not moved to .distrib"
	cmp -s "$c_module" "$m/$vfs/aio_fork.so" && fail "aio_fork.so is still the C module"

	t=/mnt/t
	mkdir -p "$work/share" "$work/state"
	cat >"$work/smb.conf" <<EOF
[global]
	private dir = $t/state
	lock directory = $t/state
	state directory = $t/state
	cache directory = $t/state
	pid directory = $t/state
	ncalrpc dir = $t/state/ncalrpc
	passdb backend = tdbsam:$t/state/passdb.tdb
	interfaces = 127.0.0.1
	bind interfaces only = yes
	load printers = no
	disable spoolss = yes
	log file = $t/log.smbd
	max log size = 0
	log level = 2
[aio]
	path = $t/share
	read only = no
	vfs objects = aio_fork
	aio_fork:inline cached reads = no
EOF
	printf "Pw-aio-fork1\nPw-aio-fork1\n" |
		in_root smbpasswd -c $t/smb.conf -s -a root >"$work/smbpasswd.log" 2>&1 ||
		{ cat "$work/smbpasswd.log" >&2; fail "smbpasswd"; }
	in_root smbd -s $t/smb.conf --foreground --no-process-group </dev/null >"$work/smbd.out" 2>&1 &
	smbd=$!
	for _ in $(seq 100); do
		(exec 4<>/dev/tcp/127.0.0.1/445) 2>/dev/null && break
		sleep 0.1
	done
	in_root smbclient //127.0.0.1/aio -Uroot%Pw-aio-fork1 \
		-c "put $t/in file; get file $t/out" >"$work/client.log" 2>&1 ||
		{ cat "$work/client.log" >&2; tail -20 "$work/log.smbd" >&2; fail "smbclient put/get"; }
	cmp -s "$work/in" "$work/out" || fail "file read back differs from the one written"
	cmp -s "$work/in" "$work/share/file" || fail "file on disk differs from the one written"
	# The connection smbd logs its counters at tree disconnect (level 2).
	stats=
	for _ in $(seq 100); do
		stats=$(grep -ho "aio_fork stats share=aio .*" "$work/log.smbd" || true)
		[ -n "$stats" ] && break
		sleep 0.1
	done
	[ -n "$stats" ] || { tail -20 "$work/log.smbd" >&2; fail "no aio_fork stats line"; }
	case $stats in
	*" preads=0 "* | *" pwrites=0 "*) fail "helpers served no reads or no writes: $stats" ;;
	esac
	say "served 9 MiB put/get through the package'"'"'s module: ${stats%% latency*}"
	kill "$smbd"
	wait "$smbd" || true

	in_root dpkg -r samba-vfs-aio-fork-rs >"$work/dpkg-r.log" 2>&1 ||
		{ cat "$work/dpkg-r.log" >&2; fail "dpkg -r"; }
	cmp -s "$c_module" "$m/$vfs/aio_fork.so" || fail "C module not restored by removal"
	[ ! -e "$m/$vfs/aio_fork.so.distrib" ] || fail ".distrib left behind"
	by=$(in_root dpkg-divert --listpackage "/$vfs/aio_fork.so")
	[ -z "$by" ] || fail "diversion by '"'"'$by'"'"' left behind"
	say "removed: the C module is back byte for byte, no diversion left"
' sh "$root" "$work" "$release" >&3
