#!/usr/bin/env bash
# Writes stats-<release>.txt: the SMBPROFILE_STATS_ALL_SECTIONS list of a release's
# source3/include/smbprofile.h, verbatim (the counters of struct profile_stats, in order).
# src/abi/profile_layout.rs reads these lists to place the counters and to compute the
# magic smbd stamps its profile with.
#
#   samba-headers/profile/extract.sh <samba git dir> <tag> <release>
#   e.g. extract.sh ~/samba/.git samba-4.24.5 4.24
set -euo pipefail
git_dir=$1 tag=$2 release=$3
cd "$(dirname "$0")"
{
	echo "# SMBPROFILE_STATS_ALL_SECTIONS of source3/include/smbprofile.h at $tag ($(git --git-dir="$git_dir" rev-parse --short=12 "$tag^{commit}"))"
	git --git-dir="$git_dir" show "$tag:source3/include/smbprofile.h" |
		awk '/^#define SMBPROFILE_STATS_ALL_SECTIONS/ { f = 1 } f { print } f && /SMBPROFILE_STATS_END$/ { exit }'
} >"stats-$release.txt"
