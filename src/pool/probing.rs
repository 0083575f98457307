//! The pool's side of the device breakers (see `breaker`): it opens the breaker of a
//! device whose helper hangs, and sends the probes that close it again.

use super::file_id::FileId;
use super::{breaker, Job, Pool, PoolInner};
use crate::protocol::Op;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

/// How often a pool with a breaker to probe wakes up to see whether the helpers ended on
/// its device have exited (those of other pools wake nobody here).
pub const POLL: Duration = Duration::from_secs(1);

/// The file an ended helper was working on, kept open: if the helper hangs, the breaker
/// of its device needs a descriptor there to probe (smbd's own may be closed by then).
pub struct HungFile {
    id: FileId,
    fd: OwnedFd,
}

impl HungFile {
    pub fn of(job: &Job) -> Option<HungFile> {
        let id = job.file?;
        // SAFETY: the job's descriptor, open while its request (or probe) is alive.
        let fd = unsafe { BorrowedFd::borrow_raw(job.fd) }
            .try_clone_to_owned()
            .ok()?;
        Some(HungFile { id, fd })
    }

    pub fn dev(&self) -> breaker::Dev {
        self.id.dev()
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Pool {
    /// Counts one of smbd's calls answered EIO because its file is on a hung device.
    pub fn note_hung_refusal(&self) {
        if let Ok(mut inner) = self.inner.try_borrow_mut() {
            inner.stats.hung_refusals += 1;
        }
    }
}

impl Job {
    /// Whether smbd must not serve it itself, nor hand it to the next module: a helper
    /// hung with it, or its file is on a device known to hang.
    pub fn on_hung_device(&self) -> bool {
        self.timed_out || self.file.is_some_and(|f| breaker::is_open(f.dev()))
    }
}

impl PoolInner {
    /// The helper `pid` (`pidfd`) working on `file` hangs in the kernel (`stuck`: it did
    /// not exit after its SIGKILL): the device's breaker opens.
    pub(super) fn trip_breaker(&mut self, file: &HungFile, pid: i32, pidfd: RawFd, stuck: bool) {
        // SAFETY: the helper's pidfd, open while the helper is (the caller holds it).
        let pidfd = unsafe { BorrowedFd::borrow_raw(pidfd) };
        let helper = breaker::Hung { pid, pidfd, stuck };
        if breaker::trip(file.dev(), helper, file.fd(), self.id) {
            self.stats.device_hangs += 1;
        }
    }

    /// Closes the breakers whose device answered, and queues the probes this pool owes:
    /// one per hung device it probes (or that nobody probes and it can: it has a request
    /// there, or a crew with a zygote) whose ended helpers have all exited.
    pub(super) fn send_probes(&mut self) {
        if !breaker::any_open() {
            return;
        }
        let mine: Vec<(breaker::Dev, usize)> = self
            .jobs
            .values()
            .filter(|j| j.probe.is_none())
            .filter_map(|j| Some((j.file?.dev(), j.crew)))
            .collect();
        let any_crew = self.crews.iter().position(|c| c.zygote.is_some());
        let crew_for = |dev: breaker::Dev| {
            mine.iter()
                .find(|(d, _)| *d == dev)
                .map(|(_, crew)| *crew)
                .or(any_crew)
        };
        let due = breaker::probes_due(self.id, |d| crew_for(d).is_some(), self.cfg.request_timeout);
        for (dev, probe) in due {
            // As the user of a request on that device, or of a crew that can start helpers.
            let Some(crew) = crew_for(dev)
                .or(any_crew)
                .or((!self.crews.is_empty()).then_some(0))
            else {
                continue;
            };
            let fd = probe.file.as_raw_fd();
            let null = std::ptr::null_mut();
            let mut job = Job::new(null, Op::Fsync, fd, 0, 0, null as *mut u8, 0);
            job.crew = crew;
            job.probe = Some(probe);
            let id = self.ids.next_job();
            self.jobs.insert(id, job);
            self.queue.push_front(id);
            self.stats.probes += 1;
            tracing::debug!(device = %breaker::name(dev), "probing a hung device");
        }
    }
}
