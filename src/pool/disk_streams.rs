//! Large reads of a file that is being read from the disk go to helpers, even the ones
//! whose pages are already cached.
//!
//! On a sequential read from the disk the kernel reads ahead: a request often finds its
//! pages cached, but never touched by a CPU yet. The first copy out of such pages costs
//! more than a copy of warm memory (on a virtual machine, the guest's first access to a
//! page the host just filled faults in the host: a cold 8 MiB request copied in smbd took
//! from 4 to over 20 ms, and a 1 GiB get spent two seconds of smbd's main thread in those
//! copies). A helper pays that in parallel, where a plain share's I/O thread pays it too;
//! smbd's main thread, which also sends every reply of the connection, should not. So once
//! most of a large read of a file missed the page cache (see `residency`), the file counts
//! as streaming from the disk while its large reads keep coming (each within `GAP` of the
//! last), and they all go to helpers; a read after a pause is tried in smbd again.
//!
//! A few missing pages are no stream: the kernel takes back pages of cached files even with
//! memory free (on a 24 GiB guest with 15 GiB free, 8 MiB reads of a cached file found 1
//! to 256 of their 2048 pages gone), and such a file, read by a client that never pauses,
//! would have had every later large read sent through a helper.

use super::residency::{self, Cached};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// Reads this large are the ones that matter (see `submit`).
pub const LARGE: usize = 256 << 10;
/// A stream whose next large read comes later than this is over.
const GAP: Duration = Duration::from_secs(1);
/// Files followed at once; the stalest is forgotten first.
const MAX_FILES: usize = 64;

/// The files of a share connection that are being read from the disk, by descriptor (a
/// descriptor closed and reused within `GAP` only sends a few reads to helpers).
#[derive(Default)]
pub struct DiskStreams {
    last: HashMap<RawFd, Instant>,
}

impl DiskStreams {
    /// Whether a read of `len` bytes at `offset` of `fd` should be tried in smbd: not if
    /// it is large and most of it is not cached, nor if its file is streaming from the disk.
    /// A cached file some pages of which the kernel took back is no stream: its read is
    /// tried in smbd, which copies what is cached, and a helper reads the rest.
    pub fn try_in_smbd(&mut self, fd: RawFd, offset: i64, len: usize) -> bool {
        if len < LARGE {
            return true;
        }
        let now = Instant::now();
        if let Some(last) = self.last.get_mut(&fd) {
            if now.saturating_duration_since(*last) < GAP {
                *last = now;
                return false;
            }
        }
        if residency::of(fd, offset, len) != Cached::Little {
            self.last.remove(&fd);
            return true;
        }
        if self.last.len() >= MAX_FILES {
            if let Some(stalest) = self.last.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k) {
                self.last.remove(&stalest);
            }
        }
        self.last.insert(fd, now);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{drop_cached, temp_file, temp_file_by_pages};
    use std::os::fd::AsRawFd;

    #[test]
    fn small_reads_and_cached_files_are_tried_in_smbd() {
        let f = temp_file(&vec![1u8; 1 << 20]);
        let mut s = DiskStreams::default();
        assert!(s.try_in_smbd(f.as_raw_fd(), 0, 4096));
        assert!(s.try_in_smbd(f.as_raw_fd(), 0, 1 << 20));
        assert!(s.try_in_smbd(f.as_raw_fd(), 0, 1 << 20), "and again");
    }

    #[test]
    fn a_miss_sends_the_files_large_reads_to_helpers_until_a_pause() {
        let pages = 2 * LARGE / 4096;
        let f = temp_file_by_pages(pages);
        let fd = f.as_raw_fd();
        drop_cached(&f, LARGE as i64, LARGE as i64);
        if residency::of(fd, LARGE as i64, LARGE) != Cached::Little {
            return; // No cachestat, or tmpfs: nothing was dropped.
        }
        let mut s = DiskStreams::default();
        assert!(!s.try_in_smbd(fd, LARGE as i64, LARGE));
        // Cached, but the file is streaming now.
        assert!(!s.try_in_smbd(fd, 0, LARGE));
        assert!(s.try_in_smbd(fd, 0, 4096), "small reads are not held back");
        // A pause ends the stream.
        *s.last.get_mut(&fd).unwrap() -= GAP;
        assert!(s.try_in_smbd(fd, 0, LARGE));
        assert!(s.last.is_empty());
    }

    #[test]
    fn a_few_pages_missing_start_no_stream() {
        let f = temp_file_by_pages(LARGE / 4096);
        let fd = f.as_raw_fd();
        drop_cached(&f, 8 << 12, 3 << 12);
        if residency::of(fd, 0, LARGE) != Cached::Most {
            return; // No cachestat, or tmpfs: nothing was dropped.
        }
        let mut s = DiskStreams::default();
        assert!(s.try_in_smbd(fd, 0, LARGE));
        assert!(s.last.is_empty(), "no stream");
    }

    #[test]
    fn it_follows_a_bounded_number_of_files() {
        let f = temp_file_by_pages(LARGE / 4096);
        drop_cached(&f, 0, LARGE as i64);
        if residency::of(f.as_raw_fd(), 0, LARGE) != Cached::Little {
            return; // No cachestat, or tmpfs: nothing was dropped.
        }
        let mut s = DiskStreams::default();
        let files: Vec<_> = (0..MAX_FILES + 5).map(|_| f.try_clone().unwrap()).collect();
        for g in &files {
            assert!(!s.try_in_smbd(g.as_raw_fd(), 0, LARGE));
        }
        assert_eq!(s.last.len(), MAX_FILES);
    }
}
