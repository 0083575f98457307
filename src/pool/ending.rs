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
use super::{Helper, JobId};
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
    pub fn of(fd: RawFd) -> Option<FileId> {
        let st = nix::sys::stat::fstat(fd).ok()?;
        Some(FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }
}

pub struct Ending {
    pub id: u64,
    pub crew: usize,
    process: HelperProcess,
    _slot: Slot,
    /// Wakes the pool when the helper has exited.
    _watch: FdWatch,
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
    /// Kills `helper` and watches for its exit with `watch` (made on its pidfd); `None`
    /// if no watch could be made (the helper is then only killed).
    pub fn new(
        helper: Helper,
        make_watch: impl FnOnce(RawFd) -> Option<FdWatch>,
        writing: Option<FileId>,
        retry: Option<JobId>,
    ) -> Option<Ending> {
        helper.process.kill();
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
