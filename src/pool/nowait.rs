//! Reads and writes done straight in the page cache, in smbd, without a helper.
//!
//! `preadv2`/`pwritev2` with RWF_NOWAIT copy what can be copied at once and fail with
//! EAGAIN instead of waiting for the disk, a lock, block allocation or writeback. So
//! smbd's event loop never blocks on them, and such a request costs one syscall instead of
//! a round trip to a helper (the trick that makes io_uring fast on cached data). What
//! would block still goes to a helper. File systems without support answer EOPNOTSUPP
//! (ext4 and tmpfs for buffered writes; XFS does them), and the share stops trying. The
//! I/O runs with smbd's thread credentials, which are the request's user's, as a helper's
//! would be; a write that must clear a set-id bit is refused with EAGAIN and a helper
//! running as that user does it.

use std::os::fd::RawFd;

#[derive(Debug, PartialEq, Eq)]
pub enum NoWait {
    /// The whole request was done: this many bytes (fewer for a read at end of file).
    All(usize),
    /// Only the first bytes could be done at once: the rest needs a helper.
    Part(usize),
    /// Nothing could be done without blocking.
    None,
    /// The file system does not do RWF_NOWAIT for this: don't try again on this share.
    Unsupported,
}

/// Tries to read `buf.len()` bytes at `offset` without blocking.
pub fn try_read(fd: RawFd, buf: &mut [u8], offset: i64) -> NoWait {
    if buf.is_empty() {
        return NoWait::None;
    }
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: one iovec over a live, exclusively borrowed buffer.
    let n = unsafe { libc::preadv2(fd, &iov, 1, offset, libc::RWF_NOWAIT) };
    // End of file: NOWAIT answers EAGAIN, never 0, for what is not cached.
    outcome(n, buf.len(), NoWait::All(0))
}

/// Tries to write `buf` at `offset` without blocking.
pub fn try_write(fd: RawFd, buf: &[u8], offset: i64) -> NoWait {
    if buf.is_empty() {
        return NoWait::None;
    }
    let iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: one iovec over a live buffer, which the kernel only reads.
    let n = unsafe { libc::pwritev2(fd, &iov, 1, offset, libc::RWF_NOWAIT) };
    outcome(n, buf.len(), NoWait::None)
}

/// What a NOWAIT call that returned `n` for `len` bytes did; `zero`: what 0 means.
fn outcome(n: isize, len: usize, zero: NoWait) -> NoWait {
    match n {
        0 => zero,
        n if n as usize == len => NoWait::All(len),
        n if n > 0 => NoWait::Part(n as usize),
        _ => match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EOPNOTSUPP) => NoWait::Unsupported,
            // EAGAIN (would block), or an error the helper will meet and report too.
            _ => NoWait::None,
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
        if got != NoWait::Unsupported {
            assert_eq!(got, NoWait::All(16 << 10));
            assert!(buf.iter().all(|&b| b == 7));
        }
    }

    #[test]
    fn reads_at_and_past_end_of_file() {
        let f = cached_file(10_000);
        let mut buf = vec![0u8; 4096];
        match try_read(f.as_raw_fd(), &mut buf, 8192) {
            NoWait::Part(n) => assert_eq!(n, 10_000 - 8192),
            NoWait::Unsupported => {}
            other => panic!("short read at EOF: {other:?}"),
        }
        match try_read(f.as_raw_fd(), &mut buf, 20_000) {
            NoWait::All(0) | NoWait::Unsupported => {}
            other => panic!("read past EOF: {other:?}"),
        }
    }

    #[test]
    fn a_write_is_done_whole_or_left_to_a_helper() {
        let f = temp_file(&[0u8; 64 << 10]);
        let data = vec![9u8; 4096];
        match try_write(f.as_raw_fd(), &data, 8192) {
            NoWait::All(n) => {
                assert_eq!(n, 4096);
                let back = std::fs::read(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap();
                assert_eq!(&back[8192..8192 + 4096], &data[..]);
            }
            // ext4 and tmpfs refuse buffered NOWAIT writes: a helper writes.
            NoWait::Unsupported | NoWait::None => {}
            NoWait::Part(n) => panic!("a 4 KiB overwrite split at {n}"),
        }
    }

    #[test]
    fn empty_requests_and_bad_descriptors_go_the_normal_way() {
        let f = cached_file(100);
        assert_eq!(try_read(f.as_raw_fd(), &mut [], 0), NoWait::None);
        let mut buf = [0u8; 10];
        assert_eq!(try_read(-1, &mut buf, 0), NoWait::None);
        assert_eq!(try_write(-1, &[], 0), NoWait::None);
        assert_eq!(try_write(-1, &[1, 2], 0), NoWait::None);
    }
}
