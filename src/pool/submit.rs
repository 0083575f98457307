//! How a request enters the pool: the one decision between doing it in smbd at once
//! (`nowait`), queueing it for a helper, and handing it to the next module.

use super::nowait::{self, NoWait};
use super::{breaker, Action, Job, JobId, Pool};
use crate::abi::ffi;
use crate::parent::credentials::Credentials;
use crate::pool::file_id::FileId;
use crate::protocol::Op;
use std::ops::ControlFlow;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// Largest read or write tried in smbd itself: SMB2's largest. A cached read is one kernel
/// copy into smbd's buffer, as on a plain share, where a helper adds a second copy out of
/// its shared buffer and page faults on smbd's fresh one (measured on a cached 1 GiB get
/// with 8 MiB reads, medians of 9 runs: 0.61 s inline, 0.89 s plain, 1.08 s through
/// helpers). The copy holds smbd's loop about a millisecond per 8 MiB; only this
/// connection waits, for its own data.
const INLINE_MAX: usize = 8 << 20;

/// A read, write, append or fsync as smbd asked for it.
pub struct Spec {
    pub req: *mut ffi::tevent_req,
    /// The tevent context smbd waits for the request on.
    pub ev: *mut ffi::tevent_context,
    pub op: Op,
    /// smbd's descriptor of the file; negative when no kernel file backs it.
    pub fd: RawFd,
    pub offset: i64,
    pub len: usize,
    /// smbd's buffer of `len` bytes (read into, or written from).
    pub data: *mut u8,
}

/// What became of a request given to `Pool::submit`.
#[derive(Debug, PartialEq, Eq)]
pub enum Submitted {
    /// Complete already: `result` bytes, or -1 with `error`. smbd learns it once its
    /// loop runs.
    Done {
        result: isize,
        error: i32,
        duration_ns: u64,
    },
    /// Queued under this id; it completes through the pool's action runner.
    Queued(JobId),
    /// The next module serves it, from byte `done` on.
    Fallback { done: usize },
}

impl Pool {
    /// Takes a request: done at once in smbd if that cannot block, else queued for a helper
    /// of the calling thread's user (whose zygote, if needed, starts now), else handed to
    /// the next module. Nothing of it reaches the action runner before this returns.
    ///
    /// # Safety
    /// `spec.data` points to `spec.len` bytes (writable for a read) that stay valid while
    /// `spec.req` is alive.
    pub unsafe fn submit(&self, spec: Spec) -> Submitted {
        if spec.fd < 0 || !self.hears_on(spec.ev) {
            // No kernel file (a module below serves it), or smbd waits on a tevent
            // context of its own (smb_vfs_fsync_sync polls a fresh one for a synchronous
            // flush) while the pool hears its helpers on smbd's main context, which
            // nobody runs meanwhile: the next module completes on the context it is given,
            // unless its file is on a device known to hang, where it would hang smbd.
            if breaker::open_for(spec.fd) {
                self.inner.borrow_mut().stats.hung_refusals += 1;
                return Submitted::Done {
                    result: -1,
                    error: libc::EIO,
                    duration_ns: 0,
                };
            }
            return self.refuse(0);
        }
        self.inner.borrow().heap.note_request();
        // SAFETY: the buffer as this function's contract states.
        let done = match unsafe { self.try_inline(&spec) } {
            ControlFlow::Continue(done) => done,
            ControlFlow::Break(finished) => return finished,
        };
        let creds = match Credentials::of_this_thread() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the request's credentials: next module");
                return self.refuse(done);
            }
        };
        self.inner.borrow().heap.keep_warm();
        let job = Job::new(
            spec.req,
            spec.op,
            spec.fd,
            spec.offset,
            spec.len,
            spec.data,
            done,
        );
        self.enqueue(job, creds)
    }

    /// Counts a request the pool does not take.
    fn refuse(&self, done: usize) -> Submitted {
        self.inner.borrow_mut().stats.fallbacks += 1;
        Submitted::Fallback { done }
    }

    fn hears_on(&self, ev: *mut ffi::tevent_context) -> bool {
        self.inner.borrow().ev == ev
    }

    /// Queues a job and starts what can start. An answer the pool reached for the job
    /// meanwhile (backpressure, no helper can be made) is returned, not run.
    pub(super) fn enqueue(&self, mut job: Job, creds: Credentials) -> Submitted {
        let req = job.req;
        let (id, own) = {
            let mut inner = self.inner.borrow_mut();
            let id = inner.ids.next_job();
            let crew = inner.crew_for(creds);
            job.crew = crew;
            inner.jobs.insert(id, job);
            inner.queue.push_back(id);
            inner.ensure_zygote(crew);
            inner.ensure_min(crew);
            inner.pump();
            if inner.queue.len() > inner.cfg.max_queue as usize {
                // Backpressure: past `max queue`, the newest request goes to the next module.
                inner.queue.pop_back();
                inner.stats.queue_overflows += 1;
                inner.fall_back(id);
            }
            let waiting = inner.queue.len();
            inner.stats.note_queue_len(waiting);
            inner.arm_timer();
            let own = inner.completing.iter().position(|a| a.req() == req);
            (id, own.and_then(|i| inner.completing.remove(i)))
        };
        self.run_completions();
        match own {
            None => Submitted::Queued(id),
            Some(Action::Finish {
                result,
                error,
                duration_ns,
                ..
            }) => Submitted::Done {
                result,
                error,
                duration_ns,
            },
            Some(Action::Fallback { done, .. }) => Submitted::Fallback { done },
        }
    }

    /// Tries a read or write in smbd without blocking (see `nowait`), if the share does:
    /// `Break` with the answer when that did it whole, else `Continue` with how many bytes
    /// it did.
    ///
    /// # Safety
    /// As `submit`.
    unsafe fn try_inline(&self, spec: &Spec) -> ControlFlow<Submitted, usize> {
        if spec.len > INLINE_MAX || !self.inline_allowed(spec.op, spec.fd) {
            return ControlFlow::Continue(0);
        }
        if spec.op == Op::Read
            && !self
                .inner
                .borrow_mut()
                .disk_streams
                .try_in_smbd(spec.fd, spec.offset, spec.len)
        {
            // From the disk, or fresh from its readahead: a helper reads it.
            return ControlFlow::Continue(0);
        }
        let started = Instant::now();
        let outcome = if spec.op == Op::Read {
            // SAFETY: smbd's read buffer of spec.len bytes, alive as long as the request.
            let buf = unsafe { std::slice::from_raw_parts_mut(spec.data, spec.len) };
            nowait::try_read(spec.fd, buf, spec.offset)
        } else {
            // SAFETY: smbd's write buffer of spec.len bytes, alive as long as the request.
            let buf = unsafe { std::slice::from_raw_parts(spec.data, spec.len) };
            nowait::try_write(spec.fd, buf, spec.offset)
        };
        match outcome {
            NoWait::All(n) => {
                let took = started.elapsed();
                self.note_inline(spec.op, n, took);
                ControlFlow::Break(Submitted::Done {
                    result: n as isize,
                    error: 0,
                    duration_ns: took.as_nanos() as u64,
                })
            }
            NoWait::Part(n) => ControlFlow::Continue(n),
            NoWait::None => ControlFlow::Continue(0),
            NoWait::Unsupported => {
                self.disable_inline(spec.op);
                ControlFlow::Continue(0)
            }
        }
    }

    /// Whether a read or write on `fd` should first be tried in smbd without blocking:
    /// not in erratic mode (which exists to delay requests), not on a device known to hang
    /// (even a read from the page cache may update the file's access time, which waits for
    /// the journal), nor a write to a file where a stuck write may still land.
    fn inline_allowed(&self, op: Op, fd: RawFd) -> bool {
        let inner = self.inner.borrow();
        if inner.cfg.erratic_testing_mode || breaker::open_for(fd) {
            return false;
        }
        match op {
            Op::Read => inner.cfg.inline_cached_reads,
            // A file that cannot be named is not written inline while any write is stuck.
            Op::Write => {
                inner.cfg.inline_writes
                    && (inner.ending.is_empty() || {
                        let file = FileId::of(fd);
                        file.is_some() && !inner.stuck_write_to(file)
                    })
            }
            Op::Append | Op::Fsync | Op::Close => false,
        }
    }

    /// The file system cannot do `op` without blocking: stop trying on this share.
    fn disable_inline(&self, op: Op) {
        tracing::debug!(
            ?op,
            "file system does not support RWF_NOWAIT: all go to helpers"
        );
        let mut inner = self.inner.borrow_mut();
        match op {
            Op::Read => inner.cfg.inline_cached_reads = false,
            _ => inner.cfg.inline_writes = false,
        }
    }

    /// Counts a read or write done whole in smbd.
    fn note_inline(&self, op: Op, bytes: usize, took: Duration) {
        let mut inner = self.inner.borrow_mut();
        let stats = &mut inner.stats;
        if op == Op::Read {
            stats.preads += 1;
            stats.pread_bytes += bytes as u64;
            stats.inline_preads += 1;
        } else {
            stats.pwrites += 1;
            stats.pwrite_bytes += bytes as u64;
            stats.inline_pwrites += 1;
        }
        stats.latency.record_us(took.as_micros() as u64);
    }
}
