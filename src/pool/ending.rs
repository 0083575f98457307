//! Helpers ended for not answering in time, kept until they are seen to exit.
//!
//! SIGKILL ends a helper that is stopped or looping in user space at once, but one blocked
//! in the kernel (a FUSE request its daemon does not answer, an NFS server gone) only when
//! the backend lets go, and until then the write it was doing may still land. So an ended
//! helper stays here, its pidfd watched, until it exits: it still counts against `max
//! helpers` and `max processes` (stuck helpers cannot multiply), its request is sent again
//! only once it is gone, and later writes to the file it was writing wait for it, so that
//! they land after its write and never under it.

use super::events::FdWatch;
use super::{Helper, HelperState, JobId, PoolInner, MAX_HELPER_DEATHS};
use crate::config::TimeoutAction;
use crate::parent::helper::HelperProcess;
use crate::parent::processes::Slot;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// How long after its SIGKILL a helper may take to exit for its request to be retried.
pub const EXIT_GRACE: Duration = Duration::from_secs(1);

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
}

pub struct Ending {
    pub id: u64,
    pub crew: usize,
    /// Wakes the pool when the helper has exited. Dropped before `process` closes the pidfd
    /// it watches (fields drop in order; see `events`).
    _watch: FdWatch,
    process: HelperProcess,
    _slot: Slot,
    /// The file the helper was writing, if it was.
    pub writing: Option<FileId>,
    /// A request to send again once the helper has exited, if that is by `deadline`.
    pub retry: Option<JobId>,
    /// Its SIGKILL plus [`EXIT_GRACE`].
    pub deadline: Instant,
    /// Whether it outlived its grace: blocked in the kernel (counted in the stats).
    pub stuck: bool,
}

impl Ending {
    /// Watches `helper`, which was just killed, for its exit with `watch` (made on its
    /// pidfd); `None` if no watch could be made.
    pub fn new(
        helper: Helper,
        make_watch: impl FnOnce(RawFd) -> Option<FdWatch>,
        writing: Option<FileId>,
        retry: Option<JobId>,
    ) -> Option<Ending> {
        let watch = make_watch(helper.process.pidfd())?;
        let Helper {
            id,
            crew,
            process,
            _slot,
            ..
        } = helper;
        Some(Ending {
            id,
            crew,
            process,
            _slot,
            _watch: watch,
            writing,
            retry,
            deadline: Instant::now() + EXIT_GRACE,
            stuck: false,
        })
    }

    pub fn pid(&self) -> i32 {
        self.process.pid()
    }

    pub fn exited(&self) -> bool {
        self.process.exited()
    }
}

impl PoolInner {
    /// Whether job `id` writes a file that a helper ended for a timeout may still be
    /// writing: it must wait for that helper's exit, or its data could end up under the
    /// older write's.
    pub(super) fn held_behind_stuck_write(&self, id: JobId) -> bool {
        self.jobs
            .get(&id)
            .is_some_and(|j| self.stuck_write_to(j.file))
    }

    /// Whether an ended helper may still be writing `file` (`None`: unknown, taken as no).
    pub(super) fn stuck_write_to(&self, file: Option<FileId>) -> bool {
        file.is_some() && self.ending.iter().any(|e| e.writing == file)
    }

    /// Counts the ended helpers that outlived their grace, for the stats.
    fn note_stuck(&mut self) {
        let stuck = self.ending.iter().filter(|e| e.stuck).count();
        self.stats.note_stuck(stuck);
    }

    /// Ends helpers busy with one piece of a request for longer than `request timeout`
    /// (stopped, looping, or blocked in a hung backend); see `ending`.
    pub(super) fn end_hung(&mut self, now: Instant) {
        let timeout = self.cfg.request_timeout;
        while let Some(idx) = self.helpers.iter().position(|h| {
            matches!(h.state, HelperState::Busy { since, .. } if now.saturating_duration_since(since) >= timeout)
        }) {
            tracing::warn!(
                pid = self.helpers[idx].process.pid(),
                timeout_s = timeout.as_secs(),
                "helper did not answer within the request timeout: ending it"
            );
            self.stats.hung += 1;
            self.end_timed_out(idx);
        }
    }

    /// Kills helper `idx` and keeps it until it exits. Its request is sent again after that
    /// exit if `timeout action` is retry, the request may be repeated (not an append) and
    /// has attempts left (as after a death), and the exit comes within the grace; else it
    /// fails with EIO (never the next module: it would block in the same backend).
    pub(super) fn end_timed_out(&mut self, idx: usize) {
        let helper = self.helpers.swap_remove(idx);
        let HelperState::Busy { job: id, .. } = helper.state else {
            return;
        };
        let (writing, retry) = match self.jobs.get_mut(&id) {
            Some(job) => {
                job.deaths += 1;
                let retry = self.cfg.timeout_action == TimeoutAction::Retry
                    && job.deaths < MAX_HELPER_DEATHS
                    && job.op.is_idempotent()
                    && !job.req.is_null();
                (job.file, retry.then_some(id))
            }
            None => (None, None),
        };
        helper.process.kill();
        let (ev, mem, this, helper_id) = (self.ev, self.mem, self.this.clone(), helper.id);
        let watch = |pidfd| FdWatch::new(ev, mem, pidfd, this, helper_id);
        let retried = match Ending::new(helper, watch, writing, retry) {
            Some(ending) => {
                self.ending.push(ending);
                retry.is_some()
            }
            None => {
                tracing::error!("tevent_add_fd failed: a timed-out helper cannot be watched");
                false
            }
        };
        if !retried {
            self.fail_timed_out(id);
        }
    }

    /// Fails requests that waited in the queue for longer than `request timeout` (every
    /// helper they could have is busy or stuck).
    pub(super) fn time_out_queued(&mut self, now: Instant) {
        let timeout = self.cfg.request_timeout;
        let expired: Vec<JobId> = self
            .queue
            .iter()
            .copied()
            .filter(|id| {
                self.jobs
                    .get(id)
                    .is_some_and(|j| now.saturating_duration_since(j.progress) >= timeout)
            })
            .collect();
        if expired.is_empty() {
            return;
        }
        tracing::warn!(
            requests = expired.len(),
            timeout_s = timeout.as_secs(),
            "requests waited for a helper longer than the request timeout: failing them"
        );
        self.queue.retain(|id| !expired.contains(id));
        for id in expired {
            self.fail_timed_out(id);
        }
    }

    /// An ended helper has exited: its request, if it is to be retried, is queued again,
    /// and writes held behind it may go.
    pub(super) fn on_exit(&mut self, helper_id: u64) {
        let Some(idx) = self.ending.iter().position(|e| e.id == helper_id) else {
            return;
        };
        if !self.ending[idx].exited() {
            return;
        }
        let ending = self.ending.swap_remove(idx);
        tracing::info!(
            pid = ending.pid(),
            was_stuck = ending.stuck,
            "timed-out helper has exited"
        );
        if let Some(id) = ending.retry {
            if let Some(job) = self.jobs.get_mut(&id) {
                job.progress = Instant::now();
                self.stats.retries += 1;
                self.queue.push_front(id);
            }
        }
        self.note_stuck();
        self.pump();
        self.arm_timer();
    }

    /// Ended helpers that did not exit within the grace are stuck in the kernel: their
    /// requests fail instead of being retried.
    pub(super) fn give_up_on_exits(&mut self, now: Instant) {
        let mut failed = Vec::new();
        for e in self
            .ending
            .iter_mut()
            .filter(|e| !e.stuck && e.deadline <= now)
        {
            e.stuck = true;
            tracing::warn!(
                pid = e.pid(),
                "a helper ended for a timeout has not exited: stuck in the kernel (hung \
                 backend); its request fails, later writes to its file wait for it"
            );
            failed.extend(e.retry.take());
        }
        for id in failed {
            self.fail_timed_out(id);
        }
        self.note_stuck();
    }

    pub(super) fn fail_timed_out(&mut self, id: JobId) {
        if self.jobs.contains_key(&id) {
            self.stats.timeouts += 1;
        }
        self.fail(id, libc::EIO);
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
    }
}
