//! Whether a range of a file is all in the page cache, asked without touching it.
//!
//! A `preadv2(RWF_NOWAIT)` of a range that is not all cached still starts the kernel's
//! readahead for it, in the caller: allocating the page-cache pages and submitting their
//! I/O, before it answers EAGAIN or a short count. Done in smbd, that is work a helper
//! should do, on smbd's main thread, which also sends every reply of the connection: on a
//! cold sequential read it cost that thread more than the helper round trip it was to save.
//! `cachestat` (Linux 6.5) counts a range's cached pages without reading or prefetching
//! anything, so a large read is tried in smbd only when all of it is there (see
//! `disk_streams`).

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

/// `cachestat(2)`: the same number on every architecture.
const SYS_CACHESTAT: libc::c_long = 451;

#[repr(C)]
struct Range {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// Set once the kernel has no `cachestat`: the answer is then always "maybe".
static MISSING: AtomicBool = AtomicBool::new(false);

/// What the page cache holds of a range.
#[derive(Debug, PartialEq, Eq)]
pub enum Cached {
    /// Every page of it.
    All,
    /// At least half of its pages, not all: a cached file some pages of which the kernel
    /// took back. Reading it starts I/O for the missing pages only.
    Most,
    /// Fewer than half of its pages: most of a read would come from the disk.
    Little,
    /// Unknown (no `cachestat`, or it refused the file).
    Unknown,
}

/// How much of `len` bytes at `offset` of the file open as `fd` is in the page cache.
/// Pages past the end of the file are never cached and a read does not want them: only
/// the file's own pages of the range count.
pub fn of(fd: RawFd, offset: i64, len: usize) -> Cached {
    if MISSING.load(Ordering::Relaxed) || offset < 0 || len == 0 {
        return Cached::Unknown;
    }
    let page = 4096u64;
    let first = offset as u64 / page;
    let end = (offset as u64).saturating_add(len as u64).div_ceil(page);
    let range = Range {
        off: first * page,
        len: (end - first) * page,
    };
    let mut stat = Cachestat::default();
    // SAFETY: cachestat reads the range and writes the result struct, both ours and live.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd,
            &range as *const Range,
            &mut stat as *mut Cachestat,
            0,
        )
    };
    if r != 0 {
        if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
            MISSING.store(true, Ordering::Relaxed);
        }
        return Cached::Unknown;
    }
    if stat.nr_cache >= end - first {
        return Cached::All;
    }
    let pages = match nix::sys::stat::fstat(fd) {
        Ok(st) => end
            .min((st.st_size.max(0) as u64).div_ceil(page))
            .saturating_sub(first),
        Err(_) => end - first,
    };
    if stat.nr_cache >= pages {
        Cached::All
    } else if stat.nr_cache * 2 >= pages {
        Cached::Most
    } else {
        Cached::Little
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{drop_cached, temp_file, temp_file_by_pages};
    use std::os::fd::AsRawFd;

    #[test]
    fn a_file_just_written_is_all_cached_even_where_a_range_passes_its_end() {
        let f = temp_file(&vec![1u8; (64 << 10) + 100]);
        let fd = f.as_raw_fd();
        match of(fd, 0, 64 << 10) {
            // No cachestat here (kernel older than 6.5, or the test's file system).
            Cached::Unknown => {}
            got => {
                assert_eq!(got, Cached::All);
                assert_eq!(of(fd, 4096, 8192), Cached::All);
                assert_eq!(of(fd, 60 << 10, 1 << 20), Cached::All, "past the end");
                assert_eq!(of(fd, 1 << 20, 1 << 20), Cached::All, "all past the end");
            }
        }
    }

    #[test]
    fn a_range_passing_the_end_counts_the_files_own_pages() {
        let f = temp_file_by_pages(4);
        let fd = f.as_raw_fd();
        drop_cached(&f, 0, 3 << 12);
        // One of the file's four pages cached, 60 pages of the range past the end.
        match of(fd, 0, 64 << 12) {
            Cached::Unknown => {}
            _ if is_tmpfs(fd) => {}
            got => assert_eq!(got, Cached::Little),
        }
    }

    #[test]
    fn pages_dropped_from_the_cache_are_not_counted() {
        let f = temp_file_by_pages(64);
        let fd = f.as_raw_fd();
        drop_cached(&f, 4 << 12, 2 << 12);
        let few_gone = of(fd, 0, 64 << 12);
        drop_cached(&f, 0, 64 << 12);
        match (few_gone, of(fd, 0, 64 << 12)) {
            (Cached::Unknown, _) | (_, Cached::Unknown) => {}
            // tmpfs keeps its pages whatever the advice.
            _ if is_tmpfs(fd) => {}
            got => assert_eq!(got, (Cached::Most, Cached::Little)),
        }
    }

    fn is_tmpfs(fd: RawFd) -> bool {
        // SAFETY: an all-zero statfs is a valid value; fstatfs fills it.
        let mut s: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: our own descriptor and struct.
        unsafe { libc::fstatfs(fd, &mut s) == 0 && s.f_type == libc::TMPFS_MAGIC }
    }

    #[test]
    fn nonsense_is_unknown() {
        assert_eq!(of(-1, 0, 4096), Cached::Unknown);
        assert_eq!(of(0, -1, 4096), Cached::Unknown);
    }
}
