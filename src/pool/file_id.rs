//! Naming a file, and its file system, by what the kernel already knows of it.

use std::os::fd::RawFd;

/// Names a file whatever descriptor it is open under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The file open as `fd`, from the kernel's own inode: with AT_STATX_DONT_SYNC, a
    /// network or FUSE file system is not asked to revalidate attributes, so this never
    /// waits for a backend, hung or not (it runs on smbd's loop for every write).
    pub fn of(fd: RawFd) -> Option<FileId> {
        // SAFETY: an all-zero statx is a valid value of this plain C struct.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: statx of the descriptor itself (empty path) into a struct we own.
        let r = unsafe {
            libc::statx(
                fd,
                c"".as_ptr(),
                libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC,
                libc::STATX_INO,
                &mut stx,
            )
        };
        (r == 0).then(|| FileId {
            dev: libc::makedev(stx.stx_dev_major, stx.stx_dev_minor),
            ino: stx.stx_ino,
        })
    }

    /// Its file system's device number (`st_dev`).
    pub fn dev(&self) -> u64 {
        self.dev
    }
}

#[cfg(test)]
mod tests {
    use super::FileId;
    use crate::test_util::temp_file;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_file_is_named_alike_through_any_descriptor() {
        let file = temp_file(b"x");
        let again = std::fs::File::open(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap();
        let other = temp_file(b"y");
        let id = FileId::of(file.as_raw_fd());
        assert!(id.is_some());
        assert_eq!(id, FileId::of(again.as_raw_fd()));
        assert_ne!(id, FileId::of(other.as_raw_fd()));
        assert_eq!(FileId::of(-1), None);
        let meta = std::os::unix::fs::MetadataExt::dev(&file.metadata().unwrap());
        assert_eq!(id.map(|f| f.dev()), Some(meta));
    }
}
