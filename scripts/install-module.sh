#!/usr/bin/env bash
# Builds the module (release) and installs it where smbd loads VFS modules from:
# <MODULESDIR>/vfs/<name>.so, MODULESDIR as `smbd -b` reports it. The module registers
# under the base name of its file, so a share uses it with `vfs objects = <name>`.
#
#   scripts/install-module.sh                     # replaces Samba's C aio_fork (diverted aside)
#   scripts/install-module.sh --name aio_fork_rs  # beside the C module, as "aio_fork_rs"
#   scripts/install-module.sh --uninstall [--name NAME]   # removes it, restores the C module
#
# Options:
#   --name NAME     file and VFS name (default aio_fork)
#   --module FILE   install this built file instead of building (e.g. a CI artifact)
#   --no-build      install target/release/libaio_fork.so as it is
#   --uninstall     remove what an earlier run installed under NAME
# Environment: SMBD (default smbd) — the smbd whose MODULESDIR is used, for a Samba
# built from source (e.g. SMBD=/usr/local/samba/sbin/smbd).
#
# Debian's samba-vfs-modules owns vfs/aio_fork.so (the C module). Overwriting a file a
# package owns would be undone by the next Samba update, so the C file is moved aside
# with a local dpkg-divert first (to aio_fork.so.distrib, dpkg's default); package
# updates then write the C module there and leave ours in place, and --uninstall moves
# it back. A name no package ships (e.g. aio_fork_rs) needs no diversion.
# Running smbd processes keep the module they loaded; new tree connects load the new file.
set -euo pipefail

usage() {
	sed -n '2,17s/^# \{0,1\}//p' "$0" >&2
	exit 2
}

name=aio_fork
module=
build=yes
action=install
while (($#)); do
	case $1 in
	--name)
		name=${2:?--name needs a value}
		shift 2
		;;
	--module)
		module=${2:?--module needs a file}
		build=no
		shift 2
		;;
	--no-build)
		build=no
		shift
		;;
	--uninstall)
		action=uninstall
		shift
		;;
	-h | --help) usage ;;
	*)
		echo "install-module: unknown argument '$1'" >&2
		usage
		;;
	esac
done

# smbd loads "<name>.so" only by a plain name: refuse anything that is not one.
if [[ ! $name =~ ^[A-Za-z0-9_]+$ ]]; then
	echo "install-module: --name must be letters, digits and '_' only (got '$name')" >&2
	exit 2
fi

smbd=${SMBD:-smbd}
if ! command -v "$smbd" >/dev/null; then
	# sbin may be missing from a non-login root PATH.
	for dir in /usr/sbin /usr/local/sbin /sbin; do
		[[ -x $dir/$smbd ]] && smbd=$dir/$smbd && break
	done
fi
modulesdir=$("$smbd" -b | sed -n 's/^ *MODULESDIR: *//p')
if [[ -z $modulesdir || ! -d $modulesdir ]]; then
	echo "install-module: '$smbd -b' reports no usable MODULESDIR ('$modulesdir')" >&2
	exit 1
fi
target=$modulesdir/vfs/$name.so
helper_target=$modulesdir/vfs/aio_fork_helper

have_dpkg=no
command -v dpkg-divert >/dev/null && command -v dpkg-query >/dev/null && have_dpkg=yes

# Who diverts $target: empty (nobody), "LOCAL" (an earlier run of this script), or a
# package name (e.g. samba-vfs-aio-fork-rs, the .deb of this project).
diverter() {
	[[ $have_dpkg == yes ]] || return 0
	dpkg-divert --listpackage "$target"
}

# Does a package ship a file at $target (the C module, for aio_fork)?
package_owned() {
	[[ $have_dpkg == yes ]] && dpkg-query -S "$target" >/dev/null 2>&1
}

# Without dpkg (a Samba built from source), the file found there is kept beside it.
backup=$target.orig-before-aio_fork_rs

refuse_if_packaged() {
	local by
	by=$(diverter)
	if [[ -n $by && $by != LOCAL ]]; then
		echo "install-module: $target is managed by the Debian package '$by';" \
			"remove that package first (apt-get remove $by), or use --name another_name" >&2
		exit 1
	fi
}

do_install() {
	local source=$module
	if [[ $build == yes ]]; then
		# Build as the checkout's tree is now; --locked keeps to Cargo.lock.
		(cd "$(dirname "$0")/.." && cargo build --release --locked)
	fi
	if [[ -z $source ]]; then
		source=${CARGO_TARGET_DIR:-$(dirname "$0")/../target}/release/libaio_fork.so
	fi
	if [[ ! -f $source ]]; then
		echo "install-module: no module file at $source (build it, or give --module FILE)" >&2
		exit 1
	fi
	refuse_if_packaged

	if [[ $have_dpkg == yes ]]; then
		# aio_fork is diverted even when samba-vfs-modules is not installed yet: a later
		# install of it would otherwise overwrite ours without a word.
		if [[ -z $(diverter) ]] && { [[ $name == aio_fork ]] || package_owned; }; then
			dpkg-divert --local --rename --add "$target"
		fi
	elif [[ -e $target && ! -e $backup ]]; then
		mv "$target" "$backup"
	fi

	# Copy then rename: an smbd that has the old file mapped must never see it rewritten
	# in place (that would crash it); rename gives it a new inode instead.
	local tmp=$target.new.$$
	install -m 0644 "$source" "$tmp"
	# Debug info is 2/3 of the file and smbd does not need it; symbols stay.
	if command -v strip >/dev/null; then
		strip --strip-debug "$tmp"
	fi
	mv -f "$tmp" "$target"
	# The helper program smbd starts as each request's user: beside the module.
	local helper=$(dirname "$source")/aio_fork_helper
	if [[ ! -f $helper ]]; then
		echo "install-module: no helper program at $helper (cargo build --release builds it)" >&2
		exit 1
	fi
	install -m 0755 "$helper" "$helper_target.new.$$"
	if command -v strip >/dev/null; then
		strip --strip-debug "$helper_target.new.$$"
	fi
	mv -f "$helper_target.new.$$" "$helper_target"
	echo "install-module: installed $target (VFS name '$name'):" \
		"shares with 'vfs objects = $name' load it at their next connection"
}

do_uninstall() {
	refuse_if_packaged
	if package_owned && [[ -z $(diverter) ]]; then
		echo "install-module: $target belongs to a package and was not installed by this" \
			"script: left alone" >&2
		exit 1
	fi
	rm -f "$target"
	if [[ $(diverter) == LOCAL ]]; then
		# --rename moves the diverted C module back to its own name.
		dpkg-divert --local --rename --remove "$target"
	elif [[ -e $backup ]]; then
		mv "$backup" "$target"
	fi
	# The helper program goes with the last module file of ours (any name).
	if ! grep -qla "aio_fork stats share=" "$(dirname "$target")"/*.so 2>/dev/null; then
		rm -f "$helper_target"
	fi
	echo "install-module: removed the Rust module from $target" \
		"$([[ -e $target ]] && echo "(Samba's own module is back)")"
}

case $action in
install) do_install ;;
uninstall) do_uninstall ;;
esac
