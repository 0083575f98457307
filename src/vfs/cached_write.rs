//! Writes served straight into the page cache, in smbd, without a helper.
//!
//! `pwritev2(RWF_NOWAIT)` copies the data into cached pages and returns at once where the
//! file system can do that without waiting (XFS: an overwrite of cached data), and fails
//! with EAGAIN where the write would block (block allocation, an extending write, pages
//! under writeback, a set-id bit to clear); file systems without support (ext4, for
//! buffered writes) answer EOPNOTSUPP, and the share stops trying. What the kernel will
//! not do at once still goes to a helper. The write runs with smbd's thread credentials,
//! which are the request's user's, as a helper's would be.

use std::os::fd::RawFd;

#[derive(Debug, PartialEq, Eq)]
pub enum CachedWrite {
    /// The whole request was written.
    All(usize),
    /// Only the first bytes were written: the rest needs a helper.
    Part(usize),
    /// Nothing could be written without blocking.
    None,
    /// The file system does not do RWF_NOWAIT writes: don't try again on this share.
    Unsupported,
}

/// Tries to write `buf` at `offset` without blocking.
pub fn try_write(fd: RawFd, buf: &[u8], offset: i64) -> CachedWrite {
    if buf.is_empty() {
        return CachedWrite::None;
    }
    let iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: one iovec over a live buffer, which the kernel only reads.
    let n = unsafe { libc::pwritev2(fd, &iov, 1, offset, libc::RWF_NOWAIT) };
    match n {
        n if n >= 0 && n as usize == buf.len() => CachedWrite::All(n as usize),
        n if n > 0 => CachedWrite::Part(n as usize),
        _ => match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EOPNOTSUPP) => CachedWrite::Unsupported,
            // EAGAIN (would block), or an error the helper will meet and report too.
            _ => CachedWrite::None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::temp_file;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_write_is_done_whole_or_left_to_a_helper() {
        let f = temp_file(&[0u8; 64 << 10]);
        let data = vec![9u8; 4096];
        match try_write(f.as_raw_fd(), &data, 8192) {
            CachedWrite::All(n) => {
                assert_eq!(n, 4096);
                let back = std::fs::read(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap();
                assert_eq!(&back[8192..8192 + 4096], &data[..]);
            }
            // ext4 and tmpfs refuse or defer buffered NOWAIT writes: the helper writes.
            CachedWrite::Unsupported | CachedWrite::None => {}
            CachedWrite::Part(n) => panic!("a 4 KiB overwrite split at {n}"),
        }
    }

    #[test]
    fn empty_requests_and_bad_descriptors_go_the_normal_way() {
        assert_eq!(try_write(-1, &[], 0), CachedWrite::None);
        assert_eq!(try_write(-1, &[1, 2], 0), CachedWrite::None);
    }
}
