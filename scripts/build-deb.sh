#!/usr/bin/env bash
# Builds the Debian package samba-vfs-aio-fork-rs with cargo-deb, from the metadata in
# Cargo.toml ([package.metadata.deb]) and the maintainer scripts in packaging/debian/.
# Prints the path of the .deb as its last line (target/debian/ by default).
# Extra arguments go to `cargo deb` (e.g. --no-build, --deb-revision 2, --output DIR).
#
# Install:  dpkg -i target/debian/samba-vfs-aio-fork-rs_*_amd64.deb   (or apt-get install ./...)
# Remove:   dpkg -r samba-vfs-aio-fork-rs     (Samba's C aio_fork.so comes back)
set -euo pipefail
cd "$(dirname "$0")/.."

# The version this project is tested with; cargo-deb is a build tool only, installed
# into ~/.cargo/bin the first time (about one minute of compiling).
CARGO_DEB_VERSION=3.8.0

# The asset path and the maintainer scripts name /usr/lib/x86_64-linux-gnu: the package
# is for amd64 only (the path is Debian's multiarch libdir for Samba's modules).
if command -v dpkg >/dev/null && [[ $(dpkg --print-architecture) != amd64 ]]; then
	echo "build-deb: this package is laid out for amd64 (x86_64-linux-gnu); this is $(dpkg --print-architecture)" >&2
	exit 1
fi

if ! cargo deb --version >/dev/null 2>&1; then
	echo "build-deb: installing cargo-deb $CARGO_DEB_VERSION (once)" >&2
	cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION" >&2
fi

# --strip: the release profile keeps debug info (debug = 1) for developers; the package
# ships the module without it, as Debian does (symbols stay, for smbd's backtraces).
# --locked: exactly the dependency versions of Cargo.lock.
out=$(cargo deb --locked --strip "$@" | tail -n 1)
if [[ ! -f $out ]]; then
	echo "build-deb: cargo deb did not report a .deb (last line: '$out')" >&2
	exit 1
fi
echo "$out"
