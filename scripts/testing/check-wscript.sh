#!/usr/bin/env bash
# Checks the top-level `wscript`: builds the module inside a real Samba source tree (4.17's
# by default) the way an admin would (project linked into source3/modules/, one RECURSE
# line, Samba's own waf), checks that its VFS table was generated from that tree's own
# source3/include/vfs.h, installs it into a DESTDIR, and then loads the result into the host's smbd as
# "aio_fork_rs" in a private namespace (host untouched) to prove the in-tree build works.
#
#   scripts/testing/check-wscript.sh [ORIG_TARBALL]
#
# ORIG_TARBALL: Samba's source (default: $AIO_FORK_SAMBA_ORIG, else
# /work/src-samba/samba_4.17.12+dfsg.orig.tar.xz, else one kept by samba-sources.sh).
# Cached in $AIO_FORK_WSCRIPT_CACHE (default /var/cache/aio_fork/wscript): the extracted
# tree and its configure step (about 1 min) are done once; later runs only rebuild.
# Not part of the test command: it needs Samba's full source and build tools; about
# 2 minutes the first time, 30 s after.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)

log() { echo "check-wscript: $*" >&2; }

CACHE=${AIO_FORK_WSCRIPT_CACHE:-/var/cache/aio_fork/wscript}
orig=${1:-${AIO_FORK_SAMBA_ORIG:-}}
if [[ -z $orig ]]; then
	for candidate in /work/src-samba/samba_4.17.*.orig.tar.xz /var/cache/aio_fork/src/*/samba_4.17.*.orig.tar.xz; do
		[[ -f $candidate ]] && orig=$candidate && break
	done
fi
if [[ -z $orig || ! -f $orig ]]; then
	log "no Samba source tarball (give one as argument; 'apt-get source --download-only samba' fetches it)"
	exit 1
fi

# What Samba's configure needs beyond the project's own dependencies (install-deps.sh),
# found by running it on Debian 12: flex and bison (embedded Heimdal's parsers), Perl's
# Parse::Yapp (pidl), and the system libraries it would otherwise try to bundle.
build_deps=(flex bison libparse-yapp-perl libgnutls28-dev libpopt-dev zlib1g-dev
	libtalloc-dev libtevent-dev libtdb-dev libldb-dev python3)
missing=()
for p in "${build_deps[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq || log "apt-get update reported errors (continuing)"
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# One extracted tree per tarball, complete once its stamp exists.
tree=$CACHE/$(basename "$orig" .orig.tar.xz)
if [[ ! -f $tree/.extracted ]]; then
	log "extracting $orig"
	rm -rf "$tree"
	mkdir -p "$tree"
	tar -xJf "$orig" -C "$tree" --strip-components=1
	touch "$tree/.extracted"
fi
cd "$tree"

# The admin's two steps (see the wscript's header): link the project in, recurse into it.
ln -sfn "$repo" source3/modules/aio_fork_rs
grep -qxF "bld.RECURSE('aio_fork_rs')" source3/modules/wscript_build ||
	echo "bld.RECURSE('aio_fork_rs')" >>source3/modules/wscript_build

# A configure that needs the fewest extra packages: no AD DC, LDAP, ADS, Python bindings
# or printing. vfs_snapper would need dbus.
configure_opts=(--without-ad-dc --without-ldap --without-ads --without-json
	--without-libarchive --without-acl-support --without-pam --without-systemd
	--disable-cups --disable-iprint --without-winbind --without-quotas --without-gpgme
	--disable-python "--with-shared-modules=!vfs_snapper")
if [[ ! -f bin/.configured || $(cat bin/.configured) != "${configure_opts[*]}" ]]; then
	log "configuring Samba (about a minute)"
	if ! ./configure "${configure_opts[@]}" >"$CACHE/configure.log" 2>&1; then
		tail -20 "$CACHE/configure.log" >&2
		log "configure failed; full log: $CACHE/configure.log"
		exit 1
	fi
	echo "${configure_opts[*]}" >bin/.configured
fi

# Samba's Makefile sets PYTHONHASHSEED=1 before calling waf; waf refuses to run without.
export PYTHONHASHSEED=1
log "building target vfs_aio_fork_rs"
buildtools/bin/waf build --targets=vfs_aio_fork_rs >"$CACHE/build.log" 2>&1 || {
	tail -30 "$CACHE/build.log" >&2
	exit 1
}
# build.rs writes the table it generated from the tree's own vfs.h, naming the file.
generated=$(grep -l "from $tree/source3/include/vfs.h" \
	$(find bin -path '*cargo-target/release/build/aio_fork-*' -name vfs_fn_pointers_tree.h) \
	/dev/null 2>/dev/null | head -1)
if [[ -z $generated ]]; then
	log "the build did not generate its table from $tree/source3/include/vfs.h"
	exit 1
fi
log "table from the tree's own header: $(sed -n 's/.*\(struct vfs_fn_pointers of Samba [0-9.]*\).*/\1/p' "$generated")," \
	"$(grep -c "^$(printf '\t')" "$generated") slots ($generated)"
destdir=$(mktemp -d)
trap 'rm -rf "$destdir"' EXIT
buildtools/bin/waf install --targets=vfs_aio_fork_rs --destdir="$destdir" >"$CACHE/install.log" 2>&1 || {
	tail -30 "$CACHE/install.log" >&2
	exit 1
}
modulesdir=$(sed -n "s/^MODULESDIR = '\(.*\)'$/\1/p" bin/c4che/default_cache.py)
built=$destdir$modulesdir/vfs/aio_fork_rs.so
if [[ ! -f $built ]]; then
	log "waf install did not install $modulesdir/vfs/aio_fork_rs.so"
	exit 1
fi
if ! nm -D --defined-only "$built" | grep -qw samba_init_module; then
	log "$built does not export samba_init_module"
	exit 1
fi
log "installed into DESTDIR: $modulesdir/vfs/aio_fork_rs.so ($(stat -c %s "$built") bytes)"

# Load check: the host's smbd (same Samba release as the tree) in a private network,
# mount and PID namespace; the module is added to a tmpfs copy of its vfs directory.
# Everything started in there dies with the namespace.
host_vfs=$(smbd -b | sed -n 's/^ *MODULESDIR: *//p')/vfs
work=$(mktemp -d /tmp/aio_fork_wscript.XXXXXX)
trap 'rm -rf "$destdir" "$work"' EXIT
cp "$built" "$work/aio_fork_rs.so"
cat >"$work/load-check.sh" <<EOF
set -euo pipefail
ip link set lo up
mount --make-rprivate /
mkdir -p $work/vfs && cp -a $host_vfs/. $work/vfs/ && cp $work/aio_fork_rs.so $work/vfs/
mount --bind $work/vfs $host_vfs
mkdir -p $work/{private,lock,state,cache,pid,ncalrpc,share}
cat >$work/smb.conf <<CONF
[global]
	private dir = $work/private
	lock directory = $work/lock
	state directory = $work/state
	cache directory = $work/cache
	pid directory = $work/pid
	ncalrpc dir = $work/ncalrpc
	passdb backend = tdbsam:$work/private/passdb.tdb
	interfaces = 127.0.0.1
	bind interfaces only = yes
	load printers = no
	disable spoolss = yes
	log file = $work/log.smbd
	log level = 1 aio_fork:5
[s]
	path = $work/share
	read only = no
	vfs objects = aio_fork_rs
CONF
printf 'Pw-check1\nPw-check1\n' | smbpasswd -c $work/smb.conf -s -a root >/dev/null
smbd -s $work/smb.conf -F --no-process-group </dev/null >$work/smbd.out 2>&1 &
for _ in \$(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/445) 2>/dev/null && break; sleep 0.1; done
head -c 1048577 /dev/urandom >$work/in
smbclient -s $work/smb.conf //127.0.0.1/s -U root%Pw-check1 -c "put $work/in f; get f $work/out" >/dev/null
cmp $work/in $work/out
EOF
log "loading it into $(smbd -V) as aio_fork_rs (private namespace)"
if ! unshare --net --mount --pid --fork --kill-child --mount-proc bash "$work/load-check.sh"; then
	tail -20 "$work/log.smbd" >&2 || true
	log "load check failed"
	exit 1
fi
# The tree connect logs the registration; the round trip above compared the bytes.
for _ in $(seq 50); do
	grep -q "registered name=aio_fork_rs" "$work/log.smbd" && break
	sleep 0.1
done
if ! grep -q "registered name=aio_fork_rs" "$work/log.smbd"; then
	tail -20 "$work/log.smbd" >&2
	log "smbd's log has no 'registered name=aio_fork_rs'"
	exit 1
fi
log "ok: the wscript-built module loads as aio_fork_rs and served a 1 MiB put/get"
