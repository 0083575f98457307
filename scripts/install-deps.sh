#!/usr/bin/env bash
# Installs what building and testing the module needs, on Debian 12, as root.
# Only what is missing is installed, and `apt-get update` runs at most once.
set -euo pipefail

packages=(
	samba            # smbd, to serve shares with the module
	samba-testsuite  # smbtorture
	smbclient        # the real client the tests drive
	python3-samba    # Samba's client library for Python: the bad-input and security tests' clients
	samba-vfs-modules # Samba's C aio_fork, aio_pthread, io_uring: compared against ours
	libclang-dev     # bindgen (build.rs)
	libtalloc-dev libtevent-dev pkg-config gcc # gcc also builds the tests' preloaded libraries (benches/c/ballast.c, tests/programs/at_exit.c)
	libsmbclient-dev # the benchmark's load generator
	ctdb             # the two-node clustered Samba of the cluster test
	python3-smbc     # libsmbclient from Python: the cluster test's second client
	python3-fusepy libfuse2 fuse # tests/clients/stallfs.py: the FUSE file system the stall tests hang reads and writes on
	iproute2 util-linux procps psmisc # ip, unshare, ps, fuser: private namespaces for tests
	debootstrap      # the root file systems of the other Samba releases the tests run
	xfsprogs         # mkfs.xfs: XFS shares in tests/inline_writes.rs and the benchmark (RWF_NOWAIT writes)
	user-mode-linux kmod quota # Linux guests of the tests: disk quotas (the host kernel may lack a quota format), tests/privileges.rs; fs.suid_dumpable (not namespaced), tests/local_users.rs
	dmsetup cifs-utils fio e2fsprogs # the guest's device-mapper disks, the kernel's SMB client, fio --verify, e2fsck/debugfs after a power cut: tests/block_devices.rs
	binutils         # objdump: tests/abi_binaries.rs reads each release's smbd
	dpkg-dev man-db  # the Debian package (cargo-deb's dpkg-shlibdeps) and its man page test
	fonts-dejavu-core # labels in the benchmark's PNG chart
)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done

if ((${#missing[@]})); then
	echo "install-deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# A third-party source that cannot be reached must not stop us: Debian's own lists
	# are what we need, and a real failure shows up in apt-get install below.
	apt-get update -qq || echo "install-deps: apt-get update reported errors (continuing)"
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
	echo "install-deps: cargo not found: this machine needs a Rust toolchain (rustup)" >&2
	exit 1
fi
echo "install-deps: all present ($(smbd -V), $(cargo --version))"
