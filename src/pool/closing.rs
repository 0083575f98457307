//! Closing a file on a hung device without smbd holding the last reference.
//!
//! Releasing a file (the last close of it) may ask its file system for work: XFS frees
//! blocks preallocated past the end of a file that was written, ext4 allocates delayed
//! blocks of a file truncated and rewritten. On a device that hangs, the process doing
//! that waits uninterruptibly. So while a device's breaker is open, smbd's close of a file
//! there first hands a duplicate of the descriptor to a helper (`Op::Close`): once the
//! helper holds it, smbd's own close is not the last, and the helper releases the file,
//! waiting there if it must.

use super::{Job, Pool};
use crate::parent::credentials::Credentials;
use crate::protocol::Op;
use std::os::fd::{AsRawFd, OwnedFd};

impl Pool {
    /// Queues `file` (a duplicate of a descriptor smbd is about to close) for a helper of
    /// the calling thread's user to close. Dropped here instead, if no helper can be had.
    pub fn hand_over_close(&self, file: OwnedFd) {
        let creds = match Credentials::of_this_thread() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the caller's credentials: smbd closes");
                return;
            }
        };
        let fd = file.as_raw_fd();
        let null = std::ptr::null_mut();
        let mut job = Job::new(null, Op::Close, fd, 0, 0, null as *mut u8, 0);
        job.handed = Some(file);
        self.inner.borrow_mut().stats.closes_handed += 1;
        let _ = self.enqueue(job, creds);
    }
}
