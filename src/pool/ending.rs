//! Helpers ended for not answering in time, kept until they are seen to exit.
//!
//! SIGKILL ends a helper that is stopped or looping in user space at once, but one blocked
//! in the kernel (a FUSE request its daemon does not answer, an NFS server gone) only when
//! the backend lets go, and until then the write it was doing may still land. So an ended
//! helper stays here, its pidfd watched, until it exits: it still counts against `max
//! helpers` and `max processes` (stuck helpers cannot multiply), its request is sent again
//! only once it is gone, and later writes to the file it was writing wait for it, so that
//! they land after its write and never under it.

use super::breaker;
use super::events::FdWatch;
use super::file_id::FileId;
use super::probing::HungFile;
use super::{Helper, HelperState, JobId, PoolInner, MAX_HELPER_DEATHS};
use crate::config::TimeoutAction;
use crate::parent::helper::HelperProcess;
use crate::parent::proc_state::waits_in_kernel;
use crate::parent::processes::Slot;
use crate::protocol::Op;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// How long after its SIGKILL a helper may take to exit for its request to be retried.
pub const EXIT_GRACE: Duration = Duration::from_secs(1);

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
    /// The file it was working on, for its device's breaker should it hang.
    pub file: Option<HungFile>,
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
        file: Option<HungFile>,
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
            file,
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

    pub fn pidfd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the helper's pidfd, open as long as `self.process`.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.process.pidfd()) }
    }
}

impl PoolInner {
    /// Whether job `id` writes a file that a helper ended for a timeout may still be
    /// writing: it must wait for that helper's exit, or its data could end up under the
    /// older write's.
    pub(super) fn held_behind_stuck_write(&self, id: JobId) -> bool {
        self.jobs
            .get(&id)
            .is_some_and(|j| j.op.writes() && self.stuck_write_to(j.file))
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

    /// Kills helper `idx` and keeps it until it exits. A helper that waits in the kernel
    /// (state D) hangs in its file system: the device's breaker opens and the request
    /// fails with EIO now, since a retry would only wait as long again. Otherwise (stopped,
    /// looping) its request is sent again after that exit if `timeout action` is retry,
    /// the request may be repeated (not an append) and has attempts left (as after a
    /// death), and the exit comes within the grace; else it fails with EIO (never the next
    /// module: it would block in the same backend).
    pub(super) fn end_timed_out(&mut self, idx: usize) {
        let mut helper = self.helpers.swap_remove(idx);
        let HelperState::Busy {
            job: id,
            ref mut riders,
            ..
        } = helper.state
        else {
            return;
        };
        let riders = std::mem::take(riders);
        self.queue_again(&riders);
        let in_kernel = waits_in_kernel(helper.process.pid());
        let file = self.jobs.get(&id).and_then(HungFile::of);
        let (writing, retry) = match self.jobs.get_mut(&id) {
            Some(job) => {
                job.deaths += 1;
                job.timed_out = true;
                let retry = self.cfg.timeout_action == TimeoutAction::Retry
                    && !in_kernel
                    && job.deaths < MAX_HELPER_DEATHS
                    && job.op.is_idempotent()
                    && !job.req.is_null();
                (job.file.filter(|_| job.op.writes()), retry.then_some(id))
            }
            None => (None, None),
        };
        if let (true, Some(file)) = (in_kernel, &file) {
            let (pid, pidfd) = (helper.process.pid(), helper.process.pidfd());
            self.trip_breaker(file, pid, pidfd, false);
        }
        helper.process.kill();
        let (ev, mem, this, helper_id) = (self.ev, self.mem, self.this.clone(), helper.id);
        let watch = |pidfd| FdWatch::new(ev, mem, pidfd, this, helper_id);
        let retried = match Ending::new(helper, watch, writing, retry, file) {
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
                // A close waits for a helper as long as it takes: failing it would leave
                // smbd the last reference (see `closing`).
                self.jobs.get(id).is_some_and(|j| {
                    j.op != Op::Close && now.saturating_duration_since(j.progress) >= timeout
                })
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
        self.send_probes();
        self.pump();
        self.arm_timer();
    }

    /// Ended helpers that did not exit within the grace are stuck in the kernel: their
    /// requests fail instead of being retried.
    pub(super) fn give_up_on_exits(&mut self, now: Instant) {
        let mut failed = Vec::new();
        let mut hung = Vec::new();
        for (i, e) in self.ending.iter_mut().enumerate() {
            if e.stuck || e.deadline > now {
                continue;
            }
            e.stuck = true;
            hung.push(i);
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
        // Not even SIGKILL ends it: it waits for its file system, whose breaker opens.
        for i in hung {
            let e = &self.ending[i];
            if let Some(file) = &e.file {
                let helper = breaker::Hung {
                    pid: e.pid(),
                    pidfd: e.pidfd(),
                    stuck: true,
                };
                let opened = breaker::trip(file.dev(), helper, file.fd(), self.id);
                self.stats.device_hangs += u64::from(opened);
            }
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
