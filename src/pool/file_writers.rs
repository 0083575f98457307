//! Large writes to one file, one helper at a time.
//!
//! Linux serialises buffered writes to a file on its inode lock (ext4, XFS, btrfs, FUSE
//! and NFS alike): two helpers writing one file never write at once. They only wait for
//! each other, and a waiter spins on the lock while its holder copies, on a CPU that smbd
//! and the other helpers need. With the pieces a helper writes a large request in (see
//! `child::helper`), the lock changes hands at every piece. On a 2-CPU machine, a put with
//! 8 MiB requests spent 18 % of all CPU time spinning there. Once a large write waited in
//! the queue while another helper wrote its file, 1 GiB puts took a median 2.0 s instead
//! of 3.1 s with 8 MiB requests, and 1.3 s instead of 2.7 s with 1 MiB requests. A
//! small write waits for nothing: its own round trip is what it costs, and in parallel
//! those round trips overlap.

use super::{HelperState, Job, JobId, PoolInner};

/// Writes larger than this wait while a helper writes their file.
pub const LARGE: usize = 256 << 10;

/// Whether `job` should wait for one of `writing` (the jobs helpers write now): it is a
/// large write, and one of them writes the same file for the same user. Another user's
/// writer is not waited for: the job's own crew may have no helper yet, and a job that
/// waits asks for none.
pub fn waits<'a>(job: &Job, writing: impl IntoIterator<Item = &'a Job>) -> bool {
    job.op.writes()
        && job.len - job.done > LARGE
        && writing
            .into_iter()
            .any(|w| w.op.writes() && w.crew == job.crew && same_file(job, w))
}

/// The same open file, or the same file opened twice.
fn same_file(a: &Job, b: &Job) -> bool {
    a.fd == b.fd || (a.file.is_some() && a.file == b.file)
}

impl PoolInner {
    /// Whether queued job `id` waits for a helper writing its file (see `waits`).
    pub(super) fn waits_for_file_writer(&self, id: JobId) -> bool {
        let Some(job) = self.jobs.get(&id) else {
            return false;
        };
        // Lazy: only a large write looks at the helpers.
        let writing = self.helpers.iter().filter_map(|h| match h.state {
            HelperState::Busy { job, .. } => self.jobs.get(&job),
            HelperState::Idle(_) => None,
        });
        waits(job, writing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Op;
    use std::os::fd::AsRawFd;
    use std::ptr;

    fn job(op: Op, fd: i32, len: usize) -> Job {
        Job::new(ptr::null_mut(), op, fd, 0, len, ptr::null_mut(), 0)
    }

    #[test]
    fn a_large_write_waits_for_a_writer_of_its_file() {
        let big = job(Op::Write, 5, 1 << 20);
        assert!(waits(&big, [&job(Op::Write, 5, 4096)]));
        assert!(waits(&big, [&job(Op::Append, 5, 1 << 20)]));
        assert!(!waits(&big, [&job(Op::Write, 6, 1 << 20)]));
        assert!(!waits(&big, [&job(Op::Read, 5, 1 << 20)]));
        assert!(!waits(&big, [&job(Op::Fsync, 5, 0)]));
        assert!(!waits(&big, std::iter::empty()));
        let mut another_user = job(Op::Write, 5, 1 << 20);
        another_user.crew = 1;
        assert!(!waits(&big, [&another_user]));
    }

    #[test]
    fn small_writes_and_other_requests_never_wait() {
        let writer = job(Op::Write, 5, 1 << 20);
        assert!(!waits(&job(Op::Write, 5, LARGE), [&writer]));
        assert!(!waits(&job(Op::Read, 5, 1 << 20), [&writer]));
        assert!(!waits(&job(Op::Fsync, 5, 0), [&writer]));
        let mut nearly_done = job(Op::Write, 5, 1 << 20);
        nearly_done.done = (1 << 20) - LARGE;
        assert!(!waits(&nearly_done, [&writer]));
    }

    #[test]
    fn the_same_file_open_twice_counts_as_one() {
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        let again = std::fs::File::open("/proc/self/exe").unwrap();
        let big = job(Op::Write, file.as_raw_fd(), 1 << 20);
        let other = job(Op::Write, again.as_raw_fd(), 4096);
        assert!(big.file.is_some());
        assert!(waits(&big, [&other]));
    }
}
