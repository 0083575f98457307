//! Reads served straight from the page cache, in smbd, without a helper.
//!
//! `preadv2(RWF_NOWAIT)` copies what is cached and returns at once; it fails with EAGAIN
//! instead of waiting for the disk or a lock. So smbd's event loop never blocks on it, and
//! a cached read costs one syscall instead of a round trip to a helper (the trick that
//! makes io_uring fast on cached data). What is not cached still goes to a helper.

use std::os::fd::RawFd;

#[derive(Debug, PartialEq, Eq)]
pub enum CachedRead {
    /// The whole request was served: this many bytes (fewer at end of file).
    All(usize),
    /// Only the first bytes were cached (or the file ends there): the rest needs a helper.
    Part(usize),
    /// Nothing could be read without blocking.
    None,
    /// The file system does not do RWF_NOWAIT: don't try again on this share.
    Unsupported,
}

/// Tries to read `buf.len()` bytes at `offset` without blocking.
pub fn try_read(fd: RawFd, buf: &mut [u8], offset: i64) -> CachedRead {
    if buf.is_empty() {
        return CachedRead::None;
    }
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: one iovec over a live, exclusively borrowed buffer.
    let n = unsafe { libc::preadv2(fd, &iov, 1, offset, libc::RWF_NOWAIT) };
    match n {
        0 => CachedRead::All(0), // end of file: NOWAIT answers EAGAIN, never 0, for a miss
        n if n as usize == buf.len() => CachedRead::All(n as usize),
        n if n > 0 => CachedRead::Part(n as usize),
        _ => match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EOPNOTSUPP) => CachedRead::Unsupported,
            // EAGAIN (not cached), or an error the helper will meet and report too.
            _ => CachedRead::None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::temp_file;
    use std::os::fd::AsRawFd;

    fn cached_file(len: usize) -> std::fs::File {
        temp_file(&vec![7u8; len]) // just written: in the page cache
    }

    #[test]
    fn a_cached_read_is_served_whole() {
        let f = cached_file(64 << 10);
        let mut buf = vec![0u8; 16 << 10];
        let got = try_read(f.as_raw_fd(), &mut buf, 4096);
        // tmpfs/overlay without NOWAIT support would say Unsupported: also acceptable here.
        if got != CachedRead::Unsupported {
            assert_eq!(got, CachedRead::All(16 << 10));
            assert!(buf.iter().all(|&b| b == 7));
        }
    }

    #[test]
    fn at_and_past_end_of_file() {
        let f = cached_file(10_000);
        let mut buf = vec![0u8; 4096];
        match try_read(f.as_raw_fd(), &mut buf, 8192) {
            CachedRead::Part(n) => assert_eq!(n, 10_000 - 8192),
            CachedRead::Unsupported => {}
            other => panic!("short read at EOF: {other:?}"),
        }
        match try_read(f.as_raw_fd(), &mut buf, 20_000) {
            CachedRead::All(0) | CachedRead::Unsupported => {}
            other => panic!("read past EOF: {other:?}"),
        }
    }

    #[test]
    fn empty_requests_and_bad_descriptors_go_the_normal_way() {
        let f = cached_file(100);
        assert_eq!(try_read(f.as_raw_fd(), &mut [], 0), CachedRead::None);
        let mut buf = [0u8; 10];
        assert_eq!(try_read(-1, &mut buf, 0), CachedRead::None);
    }
}
