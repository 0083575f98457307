#!/usr/bin/env bash
# Builds, once, a Debian root file system holding one Samba release (smbd, smbpasswd,
# smbclient, the C VFS modules), and prints its path.
#
#   scripts/testing/samba-rootfs.sh [RELEASE]
#
# RELEASE (default 4.22.6) is one of the Samba releases Debian's archive serves besides
# the host's 4.17.12:
#   4.22.6   bookworm + bookworm-backports  -> /var/cache/aio_fork/rootfs-samba-4.22
#   4.22.11  trixie (Debian 13)             -> /var/cache/aio_fork/rootfs-samba-4.22.11
#   4.24.7   trixie + trixie-backports      -> /var/cache/aio_fork/rootfs-samba-4.24.7
#   4.25.1   sid                            -> /var/cache/aio_fork/rootfs-samba-4.25.1
# The names are the releases the archive holds today; the tree is checked to hold the
# same major.minor (a newer patch release is fine).
#
# Why: the host runs Debian's Samba 4.17 and must stay untouched; the tests prove that
# one build of the module also loads into the other releases by running their smbd
# chrooted into these trees (see scripts/testing/run-in-samba-root.sh). The trees live outside
# the repository, in a cache directory CI can keep between runs.
#
# Idempotent: a stamp file written as the very last step marks a complete tree; with it
# present the script only prints the path. A tree without the stamp (an interrupted run)
# is thrown away and rebuilt. Runs as root, non-interactively (CI=true, no stdin).
#
# Environment:
#   AIO_FORK_ROOTFS  where the tree goes (default: per release, above)
#   AIO_FORK_MIRROR  Debian mirror (default http://deb.debian.org/debian)
set -euo pipefail

RELEASE=${1:-4.22.6}
# suite: what debootstrap installs; from: the suite Samba comes from (apt-get -t);
# want: the `smbd -V` prefix the tree must show.
case $RELEASE in
4.22.6) suite=bookworm from=bookworm-backports want=4.22. dir=rootfs-samba-4.22 ;;
4.22.11) suite=trixie from=trixie want=4.22. dir=rootfs-samba-4.22.11 ;;
4.24.7) suite=trixie from=trixie-backports want=4.24. dir=rootfs-samba-4.24.7 ;;
4.25.1) suite=sid from=sid want=4.25. dir=rootfs-samba-4.25.1 ;;
*)
	echo "samba-rootfs: unknown release '$RELEASE' (known: 4.22.6 4.22.11 4.24.7 4.25.1)" >&2
	exit 2
	;;
esac
ROOTFS=${AIO_FORK_ROOTFS:-/var/cache/aio_fork/$dir}
MIRROR=${AIO_FORK_MIRROR:-http://deb.debian.org/debian}
STAMP=$ROOTFS/.aio_fork-rootfs-complete
# samba-vfs-modules: the C modules, among them vfs/aio_fork.so, the file the tests
# bind-mount the built module over (and the C module to compare against).
PACKAGES=(samba smbclient samba-vfs-modules)

log() { echo "samba-rootfs: $*" >&2; }

if [[ -f $STAMP ]]; then
	echo "$ROOTFS"
	exit 0
fi

if ((EUID != 0)); then
	log "must run as root (debootstrap, chroot)"
	exit 1
fi

# One builder at a time: parallel test binaries or CI steps may all call this script.
mkdir -p "$(dirname "$ROOTFS")"
exec 9>"$ROOTFS.lock"
flock 9
if [[ -f $STAMP ]]; then # built by whoever held the lock before us
	echo "$ROOTFS"
	exit 0
fi

export DEBIAN_FRONTEND=noninteractive
if ! command -v debootstrap >/dev/null; then
	log "installing debootstrap on the host"
	apt-get update -qq || log "apt-get update reported errors (continuing)"
	apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

start=$SECONDS
# Build in a side directory and rename at the end, so $ROOTFS is either absent or whole.
work=$ROOTFS.partial
if [[ -e $work ]]; then
	log "removing the leftovers of an interrupted build: $work"
	# A killed build may have left mounts behind (they live in their own namespace, so
	# normally not); never recurse into a mounted /proc or /dev.
	for m in proc sys dev/pts dev; do
		mountpoint -q "$work/$m" 2>/dev/null && umount -l "$work/$m"
	done
	rm -rf --one-file-system "$work"
fi
rm -rf --one-file-system "$ROOTFS" # no stamp: not ours to trust

log "debootstrap $suite (minbase) into $work"
debootstrap --variant=minbase "$suite" "$work" "$MIRROR" >"$work.debootstrap.log" 2>&1 || {
	tail -30 "$work.debootstrap.log" >&2
	exit 1
}
rm -f "$work.debootstrap.log"

if [[ $from != "$suite" ]]; then
	# The backports suite as a deb822 file, like the host's own sources.
	cat >"$work/etc/apt/sources.list.d/backports.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $from
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
fi
if [[ $suite == sid ]]; then
	# The archive's copy of sid is a snapshot whose Release file is past its Valid-Until:
	# without this, apt-get update inside the tree refuses it.
	echo 'Acquire::Check-Valid-Until "false";' >"$work/etc/apt/apt.conf.d/99aio-fork-no-valid-until"
fi
# No daemon may start inside the tree while packages install (samba's postinst would
# try): invoke-rc.d asks policy-rc.d, and 101 means "not allowed".
printf '#!/bin/sh\nexit 101\n' >"$work/usr/sbin/policy-rc.d"
chmod 755 "$work/usr/sbin/policy-rc.d"

log "installing ${PACKAGES[*]} from $from"
# A private mount namespace: /proc and /dev/pts are mounted for the maintainer scripts
# and vanish with the namespace, whatever happens.
unshare --mount --propagation private sh -euc '
	work=$1 from=$2; shift 2
	mount -t proc proc "$work/proc"
	mount --rbind /dev "$work/dev"
	chroot "$work" apt-get update -qq
	chroot "$work" apt-get install -y -qq --no-install-recommends -t "$from" "$@"
	chroot "$work" apt-get clean
' sh "$work" "$from" "${PACKAGES[@]}" >"$work.install.log" 2>&1 </dev/null || {
	tail -40 "$work.install.log" >&2
	exit 1
}
rm -f "$work.install.log"
rm -rf "$work/var/lib/apt/lists/"* # 40+ MB the tests never need; apt-get update restores

version=$(chroot "$work" smbd -V)
case $version in
"Version $want"*) ;;
*)
	log "expected Samba ${want}x in the tree, got: $version"
	exit 1
	;;
esac

mv "$work" "$ROOTFS"
echo "$version" >"$STAMP" # last: marks the tree complete
log "built $ROOTFS ($version) in $((SECONDS - start)) s"
echo "$ROOTFS"
