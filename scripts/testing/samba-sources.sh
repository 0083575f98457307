#!/usr/bin/env bash
# Fetches, once, Debian's source of Samba 4.17 (bookworm) and 4.22 (bookworm-backports)
# and keeps only the headers the ABI layout test compiles (tests/abi_layout.rs).
# Prints one line per release: "<release> <headers dir>", e.g.
#   4.17 /var/cache/aio_fork/src/headers-4.17
# Each headers dir holds the files at their source-tree paths (source3/include/vfs.h)
# plus SOURCE (the exact source version they came from, and whether Debian's
# patches were applied).
#
# Why: samba-dev ships neither source3/include/vfs.h nor smbd's structs, so the module
# keeps its own minimal ABI view in samba-headers/; the layout test checks that view
# against the real headers of every release the module supports.
#
# Idempotent and cached: a headers dir is complete when its stamp (written last) exists;
# then nothing is downloaded. Downloads (.dsc, orig and debian tarballs) are kept too.
# Runs as root, non-interactively (CI=true, no stdin).
#
# Environment:
#   AIO_FORK_SRC_CACHE  cache directory (default /var/cache/aio_fork/src)
set -euo pipefail

CACHE=${AIO_FORK_SRC_CACHE:-/var/cache/aio_fork/src}
# Files copied out of each source tree (everything else is dropped after extraction).
HEADERS=(source3/include/vfs.h)
# release  Debian suite that carries it
RELEASES=("4.17 bookworm" "4.22 bookworm-backports")
# Our deb-src stanzas: a deb822 file of its own (a plain .list line for an archive that
# debian.sources already names conflicts). Only deb-src: the host's binary packages
# (its Samba 4.17) never see bookworm-backports.
APT_FILE=/etc/apt/sources.list.d/aio_fork-src.sources
MIRROR=${AIO_FORK_MIRROR:-http://deb.debian.org/debian}

log() { echo "samba-sources: $*" >&2; }

complete() { [[ -f $CACHE/headers-$1/.complete ]]; }

print_all() {
	for entry in "${RELEASES[@]}"; do
		read -r release _ <<<"$entry"
		echo "$release $CACHE/headers-$release"
	done
}

missing=()
for entry in "${RELEASES[@]}"; do
	read -r release suite <<<"$entry"
	complete "$release" || missing+=("$entry")
done
if ((${#missing[@]} == 0)); then
	print_all
	exit 0
fi

if ((EUID != 0)); then
	log "must run as root (apt sources, apt-get update)"
	exit 1
fi
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9 # one fetcher at a time (test binaries may run in parallel)

export DEBIAN_FRONTEND=noninteractive
for tool in dpkg-source:dpkg-dev xz:xz-utils; do
	if ! command -v "${tool%%:*}" >/dev/null; then
		log "installing ${tool#*:} on the host"
		apt-get update -qq || log "apt-get update reported errors (continuing)"
		apt-get install -y -qq --no-install-recommends "${tool#*:}" >/dev/null
	fi
done

# Suites that already have a deb-src entry anywhere in the apt configuration.
configured_src_suites() {
	apt-get indextargets --format '$(RELEASE)' 'Identifier: Sources' 2>/dev/null | sort -u
}

updated=no
for entry in "${missing[@]}"; do
	read -r release suite <<<"$entry"
	if ! configured_src_suites | grep -qx "$suite"; then
		log "adding a deb-src stanza for $suite to $APT_FILE"
		[[ -s $APT_FILE ]] && echo >>"$APT_FILE"
		cat >>"$APT_FILE" <<EOF
Types: deb-src
URIs: $MIRROR
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
		updated=stale
	fi
done
# Also refresh when a configured suite's source index was never downloaded.
for entry in "${missing[@]}"; do
	read -r release suite <<<"$entry"
	apt-get indextargets --format '$(RELEASE) $(FILENAME)' 'Identifier: Sources' 2>/dev/null |
		while read -r rel file; do
			[[ $rel == "$suite" && -e $file ]] && echo yes
		done | grep -q yes || updated=stale
done
if [[ $updated == stale ]]; then
	log "apt-get update"
	apt-get update -qq || log "apt-get update reported errors (continuing)"
fi

# "<name> <sha256>" of every file of the source package of $1 (a suite), as the signed
# index lists them.
source_files() {
	apt-get source -qq --print-uris "samba/$1" |
		awk '/^\x27/ { sub(/^SHA256:/, "", $4); print $2, $4 }'
}

for entry in "${missing[@]}"; do
	read -r release suite <<<"$entry"
	dl=$CACHE/debian/$suite
	mkdir -p "$dl"
	files=$(source_files "$suite")
	dsc=$(awk '/\.dsc / { print $1 }' <<<"$files")
	orig=$(awk '/\.orig\.tar\./ { print $1 }' <<<"$files")
	version=${dsc#samba_}
	version=${version%.dsc}
	case $version in
	"$release".*) ;;
	*)
		log "$suite carries samba $version, expected $release.x"
		exit 1
		;;
	esac
	log "downloading the samba $version source ($suite) into $dl"
	# apt-get source verifies each file against the signed index and reuses files already
	# downloaded. The mirror may lack some of them (seen: bookworm-backports' .dsc and
	# .debian.tar.xz answer 404 while the orig tarball is there): dealt with below.
	(cd "$dl" && apt-get source -qq --download-only "samba/$suite") >&2 ||
		log "apt-get source could not download every file of samba $version"
	# Belt and braces: keep only files whose checksum matches the index.
	while read -r name sum; do
		if [[ -f $dl/$name ]] && ! sha256sum --quiet -c <<<"$sum  $dl/$name" >/dev/null 2>&1; then
			log "checksum mismatch, removing $dl/$name"
			rm -f "$dl/$name"
		fi
	done <<<"$files"

	tmp=$(mktemp -d "$CACHE/extract.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	if [[ -f $dl/$dsc ]]; then
		# Debian's patches applied: what the binary packages were built from.
		dpkg-source --no-copy -x "$dl/$dsc" "$tmp/tree" >/dev/null 2>&1 ||
			dpkg-source --no-copy -x "$dl/$dsc" "$tmp/tree" >&2
		origin="$version (Debian source, patches applied)"
	elif [[ -f $dl/$orig ]]; then
		# Upstream source only. Debian's patches rarely touch these headers (4.17's
		# 37 patches leave vfs.h as upstream wrote it); say so in the provenance.
		mkdir "$tmp/tree"
		members=()
		for h in "${HEADERS[@]}"; do members+=("--wildcards" "*/$h"); done
		tar -xJf "$dl/$orig" -C "$tmp/tree" --strip-components=1 "${members[@]}"
		origin="$version (upstream $orig only: the mirror lacks $dsc, Debian patches not applied)"
	else
		log "could not download $orig nor $dsc for $suite"
		exit 1
	fi
	out=$CACHE/headers-$release
	rm -rf "$out"
	for h in "${HEADERS[@]}"; do
		install -D -m 644 "$tmp/tree/$h" "$out/$h"
	done
	echo "$origin" >"$out/SOURCE"
	rm -rf "$tmp"
	trap - EXIT
	touch "$out/.complete" # last: marks the headers dir complete
	log "samba $origin: headers in $out"
done

print_all
