//! The helper pool of one share connection (parent side).
//!
//! Requests ("jobs") wait in a FIFO queue until a helper is free; the pool forks helpers up
//! to `max helpers`, ends idle ones after `idle timeout` (keeping `min helpers`), and
//! retries a request whose helper died on another helper. Replies arrive on each helper's
//! socket, watched by a tevent fd event on smbd's event loop, so smbd never blocks.
//!
//! Re-entrancy: finishing a request runs smbd's callback, which may send new requests or
//! free others. So the pool never calls out while its state is borrowed: decisions are
//! queued as `Action`s in `completing` and run one by one afterwards; a request freed in
//! the meantime removes its own pending actions (see `forget`).

use crate::config::Config;
use crate::ffi;
use crate::helper_process::{HelperProcess, ReplyRead, BUFFER_SIZE};
use crate::pool_policy::{self, Placement};
use crate::protocol::{Op, Request, FLAG_ERRATIC};
use crate::stats::Stats;
use crate::zygote::Zygote;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::ffi::c_void;
use std::os::fd::RawFd;
use std::ptr;
use std::rc::Rc;
use std::time::Instant;

/// A request whose helper died this many times is handed to the next module instead.
pub const MAX_HELPER_DEATHS: u32 = 3;

pub type JobId = u64;

/// One read, write or fsync, as the pool tracks it.
pub struct Job {
    /// The smbd request; null once smbd freed it (the reply is then dropped).
    pub req: *mut ffi::tevent_req,
    pub op: Op,
    /// smbd's descriptor of the file; each helper gets its own copy with the request.
    pub fd: RawFd,
    pub offset: i64,
    pub len: usize,
    /// Read target or write source (smbd's buffer, valid while `req` is alive).
    pub data: *mut u8,
    /// Bytes already transferred (requests larger than the buffer go in pieces).
    pub done: usize,
    pub deaths: u32,
    pub duration_ns: u64,
    /// When smbd sent the request: the stats report latency from here.
    pub arrived: Instant,
}

/// What to do with a request once the pool's state is no longer borrowed.
pub enum Action {
    /// Complete the request: `result` bytes (or -1 with `error`).
    Finish {
        req: *mut ffi::tevent_req,
        result: isize,
        error: i32,
        duration_ns: u64,
    },
    /// Serve the rest of the request through the next module: `done` bytes are done.
    Fallback {
        req: *mut ffi::tevent_req,
        done: usize,
    },
}

impl Action {
    fn req(&self) -> *mut ffi::tevent_req {
        match self {
            Action::Finish { req, .. } | Action::Fallback { req, .. } => *req,
        }
    }
}

/// Runs an action: implemented by the request glue (it owns the tevent state).
pub type ActionRunner = fn(Action);

pub struct Pool {
    inner: RefCell<PoolInner>,
    run_action: ActionRunner,
}

struct PoolInner {
    cfg: Config,
    ev: *mut ffi::tevent_context,
    /// talloc parent of the pool's tevent fd and timer events.
    mem: *mut c_void,
    /// Address of the owning `Pool` (stable: it lives in an `Rc`), for event callbacks.
    this: *const Pool,
    helpers: Vec<Helper>,
    jobs: HashMap<JobId, Job>,
    queue: VecDeque<JobId>,
    completing: VecDeque<Action>,
    next_id: u64,
    stats: Stats,
    /// One timer for both idle culling and hung-helper detection, and when it fires.
    timer: *mut ffi::tevent_timer,
    timer_due: Option<Instant>,
    spawn_error_logged: bool,
    share: String,
    last_stats_log: Option<Instant>,
    /// Forks the helpers (see `zygote_main`); `None` if it could not be started.
    zygote: Option<Zygote>,
}

struct Helper {
    id: u64,
    process: HelperProcess,
    fde: *mut ffi::tevent_fd,
    /// Private data of `fde`: which pool and helper a wake-up is for.
    _token: Box<Token>,
    state: HelperState,
}

enum HelperState {
    Idle(Instant),
    Busy {
        job: JobId,
        seq: u64,
        chunk: usize,
        since: Instant,
    },
}

struct Token {
    pool: *const Pool,
    helper: u64,
}

impl Pool {
    /// A pool for one share; forks `min helpers` right away (smbd is small at connect time).
    pub fn new(
        share: String,
        cfg: Config,
        ev: *mut ffi::tevent_context,
        run_action: ActionRunner,
    ) -> Rc<Pool> {
        // SAFETY: a new talloc context without parent; freed in Drop.
        let mem = unsafe { ffi::aio_fork_talloc_new(ptr::null()) };
        let pool = Rc::new(Pool {
            run_action,
            inner: RefCell::new(PoolInner {
                cfg,
                ev,
                mem,
                this: ptr::null(),
                helpers: Vec::new(),
                jobs: HashMap::new(),
                queue: VecDeque::new(),
                completing: VecDeque::new(),
                next_id: 1,
                stats: Stats::default(),
                timer: ptr::null_mut(),
                timer_due: None,
                spawn_error_logged: false,
                share,
                last_stats_log: None,
                // Started now, while smbd is small: helpers forked later cost the same
                // however much smbd grows.
                zygote: start_zygote(),
            }),
        });
        {
            let mut inner = pool.inner.borrow_mut();
            inner.this = Rc::as_ptr(&pool);
            inner.ensure_min();
        }
        pool
    }

    pub fn share(&self) -> String {
        self.inner.borrow().share.clone()
    }

    pub fn stats(&self) -> Stats {
        self.inner.borrow().stats.clone()
    }

    pub fn helper_pids(&self) -> Vec<i32> {
        let inner = self.inner.borrow();
        inner.helpers.iter().map(|h| h.process.pid()).collect()
    }

    /// Counts a request handed to the next module without entering the pool.
    pub fn note_fallback(&self) {
        self.inner.borrow_mut().stats.fallbacks += 1;
    }

    /// Whether reads should first try the page cache (see `cached_read`).
    pub fn inline_reads(&self) -> bool {
        let inner = self.inner.borrow();
        // Erratic mode exists to delay requests: it gets none served inline.
        inner.cfg.inline_cached_reads && !inner.cfg.erratic_testing_mode
    }

    /// The file system cannot read without blocking: stop trying on this share.
    pub fn disable_inline_reads(&self) {
        tracing::debug!("file system does not support RWF_NOWAIT: reads all go to helpers");
        self.inner.borrow_mut().cfg.inline_cached_reads = false;
    }

    /// Counts a read served whole from the page cache.
    pub fn note_inline_read(&self, bytes: usize, took: std::time::Duration) {
        let mut inner = self.inner.borrow_mut();
        inner.stats.preads += 1;
        inner.stats.pread_bytes += bytes as u64;
        inner.stats.inline_preads += 1;
        inner.stats.latency.record_us(took.as_micros() as u64);
    }

    /// An id for a job about to be submitted (the request keeps it for `forget`).
    pub fn new_job_id(&self) -> JobId {
        let mut inner = self.inner.borrow_mut();
        inner.next_id += 1;
        inner.next_id
    }

    /// Queues a job and starts what can start.
    pub fn submit(&self, id: JobId, job: Job) {
        {
            let mut inner = self.inner.borrow_mut();
            inner.jobs.insert(id, job);
            inner.queue.push_back(id);
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
        }
        self.run_completions();
    }

    /// smbd freed the request of `job`: never touch it or its buffer again.
    pub fn forget(&self, job: JobId, req: *mut ffi::tevent_req) {
        let Ok(mut inner) = self.inner.try_borrow_mut() else {
            // Cannot happen: the pool never calls out to smbd while borrowed.
            tracing::error!("request freed while the pool was busy");
            return;
        };
        inner.completing.retain(|a| a.req() != req);
        inner.queue.retain(|&id| id != job);
        let running = inner
            .helpers
            .iter()
            .any(|h| matches!(h.state, HelperState::Busy { job: j, .. } if j == job));
        if running {
            if let Some(j) = inner.jobs.get_mut(&job) {
                j.req = ptr::null_mut();
                j.data = ptr::null_mut();
            }
        } else {
            inner.jobs.remove(&job);
        }
    }

    /// Runs queued actions one at a time, without holding the pool's state.
    fn run_completions(&self) {
        loop {
            let next = self.inner.borrow_mut().completing.pop_front();
            match next {
                Some(action) => (self.run_action)(action),
                None => break,
            }
        }
    }

    fn on_readable(&self, helper: u64) {
        crate::helper_process::reap_pending();
        self.inner.borrow_mut().handle_reply(helper);
        self.run_completions();
    }

    fn on_timer(&self) {
        crate::helper_process::reap_pending();
        {
            let mut inner = self.inner.borrow_mut();
            // tevent frees a timer after it fired.
            inner.timer = ptr::null_mut();
            inner.timer_due = None;
            let now = Instant::now();
            inner.end_hung(now);
            inner.cull(now);
            inner.ensure_min();
            inner.pump();
            inner.arm_timer();
        }
        self.run_completions();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let inner = self.inner.get_mut();
        inner.cancel_timer();
        while !inner.helpers.is_empty() {
            inner.remove_helper(0);
        }
        // SAFETY: our own talloc context; everything under it is ours.
        unsafe { ffi::aio_fork_talloc_free(inner.mem) };
    }
}

impl PoolInner {
    /// Starts queued jobs on idle or new helpers, in order, while that is possible.
    fn pump(&mut self) {
        while let Some(&id) = self.queue.front() {
            let Some(idx) = self.free_helper() else {
                break;
            };
            self.queue.pop_front();
            self.start_on(idx, id);
        }
        if self.queue.is_empty() || !self.helpers.is_empty() {
            return;
        }
        // No helper at all and none can be forked: the next module serves what waits.
        while let Some(id) = self.queue.pop_front() {
            self.fall_back(id);
        }
    }

    /// The idle helpers: their indexes, and since when each is idle.
    fn idle_helpers(&self) -> (Vec<usize>, Vec<Instant>) {
        self.helpers
            .iter()
            .enumerate()
            .filter_map(|(i, h)| match h.state {
                HelperState::Idle(since) => Some((i, since)),
                HelperState::Busy { .. } => None,
            })
            .unzip()
    }

    /// An idle helper, or a new one if the pool may grow; `None`: the job must wait.
    fn free_helper(&mut self) -> Option<usize> {
        let (idle, since) = self.idle_helpers();
        match pool_policy::place(&since, self.helpers.len(), self.cfg.max_helpers as usize) {
            Placement::Idle(i) => Some(idle[i]),
            Placement::Spawn => self.spawn(),
            Placement::Wait => None,
        }
    }

    fn spawn(&mut self) -> Option<usize> {
        let spawned = if self.cfg.fail_fork_testing_mode {
            Err(std::io::Error::from_raw_os_error(libc::EAGAIN))
        } else {
            self.fork_helper()
        };
        let process = match spawned {
            Ok(p) => p,
            Err(e) => {
                if !self.spawn_error_logged {
                    tracing::warn!(
                        error = %e,
                        helpers = self.helpers.len(),
                        "cannot fork a helper: requests wait for a busy helper, or go to the next module"
                    );
                    self.spawn_error_logged = true;
                }
                return None;
            }
        };
        self.spawn_error_logged = false;
        let id = self.next_id;
        self.next_id += 1;
        let token = Box::new(Token {
            pool: self.this,
            helper: id,
        });
        // SAFETY: ev is smbd's event context; the fde lives under our talloc context and
        // is freed before the token (remove_helper); the handler only uses the token.
        let fde = unsafe {
            ffi::aio_fork_add_fd(
                self.ev,
                self.mem,
                process.socket(),
                ffi::TEVENT_FD_READ as u16,
                Some(helper_readable),
                &*token as *const Token as *mut c_void,
            )
        };
        if fde.is_null() {
            tracing::error!("tevent_add_fd failed: no helper");
            return None;
        }
        tracing::debug!(
            pid = process.pid(),
            helpers = self.helpers.len() + 1,
            "helper spawned"
        );
        self.stats.spawned += 1;
        self.helpers.push(Helper {
            id,
            process,
            fde,
            _token: token,
            state: HelperState::Idle(Instant::now()),
        });
        Some(self.helpers.len() - 1)
    }

    /// A new helper from the zygote; if the zygote fails, it is ended and smbd forks the
    /// helper itself (and starts a new zygote next time).
    fn fork_helper(&mut self) -> std::io::Result<HelperProcess> {
        if self.zygote.is_none() {
            self.zygote = start_zygote();
        }
        if let Some(zygote) = &self.zygote {
            match HelperProcess::spawn(BUFFER_SIZE, Some(zygote)) {
                Ok(helper) => return Ok(helper),
                Err(e) => {
                    tracing::warn!(pid = zygote.pid(), error = %e, "zygote failed: forking from smbd");
                    self.zygote = None;
                }
            }
        }
        HelperProcess::spawn(BUFFER_SIZE, None)
    }

    /// Keeps `min helpers` alive (best effort: a failed fork is retried later).
    fn ensure_min(&mut self) {
        while self.helpers.len() < self.cfg.min_helpers as usize {
            if self.spawn().is_none() {
                break;
            }
        }
        self.arm_timer();
    }

    /// Sends the next piece of job `id` to helper `idx`.
    fn start_on(&mut self, idx: usize, id: JobId) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        let chunk = match job.op {
            Op::Fsync => 0,
            _ => (job.len - job.done).min(BUFFER_SIZE),
        };
        let helper = &mut self.helpers[idx];
        if job.op.writes() && chunk > 0 {
            // SAFETY: job.data is smbd's live buffer of job.len bytes (the job is forgotten
            // before smbd frees it); the helper is idle, so nobody else uses its buffer.
            let src = unsafe { std::slice::from_raw_parts(job.data.add(job.done), chunk) };
            helper.process.buffer()[..chunk].copy_from_slice(src);
        }
        let seq = self.next_id;
        self.next_id += 1;
        let req = Request {
            seq,
            op: job.op as u32,
            flags: if self.cfg.erratic_testing_mode {
                FLAG_ERRATIC
            } else {
                0
            },
            offset: job.offset.wrapping_add(job.done as i64),
            len: chunk as u64,
        };
        tracing::trace!(
            op = ?job.op, offset = req.offset, len = chunk, helper = helper.process.pid(),
            "request sent to helper"
        );
        let sent = helper.process.send(&req, job.fd);
        helper.state = HelperState::Busy {
            job: id,
            seq,
            chunk,
            since: Instant::now(),
        };
        if let Err(e) = sent {
            tracing::warn!(pid = helper.process.pid(), error = %e, "helper unreachable");
            self.bury(idx, false);
        }
    }

    /// Handles a wake-up on helper `helper_id`'s socket: a reply, or its death.
    fn handle_reply(&mut self, helper_id: u64) {
        let Some(idx) = self.helpers.iter().position(|h| h.id == helper_id) else {
            return;
        };
        let reply = match self.helpers[idx].process.read_reply() {
            ReplyRead::NotYet => return,
            ReplyRead::Dead => {
                tracing::warn!(pid = self.helpers[idx].process.pid(), "helper died");
                self.bury(idx, true);
                self.pump();
                return;
            }
            ReplyRead::Reply(r) => r,
        };
        let (job_id, chunk) = match self.helpers[idx].state {
            HelperState::Busy {
                job, seq, chunk, ..
            } if seq == reply.seq => (job, chunk),
            _ => {
                tracing::error!(
                    pid = self.helpers[idx].process.pid(),
                    "helper sent an unexpected reply"
                );
                self.bury(idx, true);
                self.pump();
                return;
            }
        };
        if reply.result > chunk as i64 {
            tracing::error!(
                pid = self.helpers[idx].process.pid(),
                result = reply.result,
                chunk,
                "helper claimed more bytes than asked"
            );
            self.bury(idx, true);
            self.pump();
            return;
        }
        if self.advance(idx, job_id, chunk, reply.result, reply.duration_ns) {
            self.start_on(idx, job_id);
        } else {
            self.helpers[idx].state = HelperState::Idle(Instant::now());
            self.pump();
            self.arm_timer();
            self.log_stats_when_quiet();
        }
    }

    /// Accounts a reply to job `id`; true when the job has another piece to send.
    fn advance(
        &mut self,
        idx: usize,
        id: JobId,
        chunk: usize,
        result: i64,
        duration_ns: u64,
    ) -> bool {
        let Some(job) = self.jobs.get_mut(&id) else {
            return false;
        };
        job.duration_ns += duration_ns;
        if result >= 0 && !job.req.is_null() {
            let n = result as usize;
            if job.op == Op::Read && n > 0 {
                let buf = self.helpers[idx].process.buffer();
                // SAFETY: job.data is smbd's live buffer of job.len bytes and
                // done + n <= len (n <= chunk, checked by the caller).
                unsafe { ptr::copy_nonoverlapping(buf.as_ptr(), job.data.add(job.done), n) };
            }
            job.done += n;
            let more = job.op != Op::Fsync && n == chunk && job.done < job.len;
            if more {
                return true;
            }
        }
        let job = self.jobs.remove(&id).expect("job present");
        self.account(&job, result);
        let waited = job.arrived.elapsed().as_micros() as u64;
        self.stats.latency.record_us(waited);
        if !job.req.is_null() {
            let (result, error) = match (result, job.done) {
                (r, _) if r >= 0 => (job.done as isize, 0),
                (r, 0) => (-1, (-r) as i32),
                // An error after some pieces went through: report what was done.
                (_, done) => (done as isize, 0),
            };
            self.completing.push_back(Action::Finish {
                req: job.req,
                result,
                error,
                duration_ns: job.duration_ns,
            });
        }
        false
    }

    /// At debug level, the stats line whenever the pool falls quiet, at most every 10 s:
    /// admins see it on demand by raising `log level` (e.g. `smbcontrol smbd debug aio_fork:5`).
    fn log_stats_when_quiet(&mut self) {
        const EVERY: std::time::Duration = std::time::Duration::from_secs(10);
        if !self.queue.is_empty()
            || !self.jobs.is_empty()
            || !tracing::enabled!(tracing::Level::DEBUG)
        {
            return;
        }
        if self.last_stats_log.is_some_and(|t| t.elapsed() < EVERY) {
            return;
        }
        self.last_stats_log = Some(Instant::now());
        tracing::debug!("aio_fork stats share={} {}", self.share, self.stats);
    }

    fn account(&mut self, job: &Job, result: i64) {
        let bytes = if result >= 0 { job.done as u64 } else { 0 };
        match job.op {
            Op::Read => {
                self.stats.preads += 1;
                self.stats.pread_bytes += bytes;
            }
            Op::Write | Op::Append => {
                self.stats.pwrites += 1;
                self.stats.pwrite_bytes += bytes;
            }
            Op::Fsync => self.stats.fsyncs += 1,
        }
    }

    /// Ends helper `idx` after it died or misbehaved; its job is retried or handed on.
    /// `delivered`: the helper may have started the job (it was sent successfully).
    fn bury(&mut self, idx: usize, delivered: bool) {
        self.stats.helper_deaths += 1;
        let state = self.remove_helper(idx);
        let HelperState::Busy { job: id, .. } = state else {
            return;
        };
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        if job.req.is_null() {
            self.jobs.remove(&id);
            return;
        }
        if delivered && !job.op.is_idempotent() {
            // An append may have happened: doing it again could write the data twice.
            tracing::warn!(
                done = job.done,
                "helper died during an append: it may or may not have been written; reporting EIO"
            );
            let job = self.jobs.remove(&id).expect("job present");
            self.account(&job, -(libc::EIO as i64));
            self.completing.push_back(Action::Finish {
                req: job.req,
                result: if job.done > 0 { job.done as isize } else { -1 },
                error: if job.done > 0 { 0 } else { libc::EIO },
                duration_ns: job.duration_ns,
            });
            return;
        }
        job.deaths += 1;
        if job.deaths < MAX_HELPER_DEATHS {
            // pread, pwrite at an offset and fsync are idempotent: run the piece again.
            self.stats.retries += 1;
            self.queue.push_front(id);
        } else {
            self.fall_back(id);
        }
    }

    /// Hands job `id` to the next module (its done part stays done).
    fn fall_back(&mut self, id: JobId) {
        let Some(job) = self.jobs.remove(&id) else {
            return;
        };
        if job.req.is_null() {
            return;
        }
        self.stats.fallbacks += 1;
        self.completing.push_back(Action::Fallback {
            req: job.req,
            done: job.done,
        });
    }

    /// Removes helper `idx` (killing and reaping it); returns what it was doing.
    fn remove_helper(&mut self, idx: usize) -> HelperState {
        let helper = self.helpers.swap_remove(idx);
        // SAFETY: the fde is ours, under `mem`; freeing it inside its own handler is
        // allowed by tevent. It goes before the token it points to.
        unsafe { ffi::aio_fork_talloc_free(helper.fde as *mut c_void) };
        helper.state
        // helper.process drops here: SIGKILL + waitpid.
    }

    /// Ends helpers idle for longer than the idle timeout, down to `min helpers`.
    fn cull(&mut self, now: Instant) {
        let (idle, since) = self.idle_helpers();
        let picked = pool_policy::to_cull(
            &since,
            self.helpers.len(),
            self.cfg.min_helpers as usize,
            self.cfg.idle_timeout,
            now,
        );
        let mut ids: Vec<u64> = picked.iter().map(|&i| self.helpers[idle[i]].id).collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(idx) = self.helpers.iter().position(|h| h.id == id) {
                tracing::debug!(pid = self.helpers[idx].process.pid(), "idle helper culled");
                self.remove_helper(idx);
                self.stats.culled += 1;
            }
        }
    }

    /// Ends helpers busy with one request for longer than `request timeout` (hung, e.g.
    /// stopped, or stuck): their requests are retried like those of a dead helper.
    fn end_hung(&mut self, now: Instant) {
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
            self.bury(idx, true);
        }
    }

    /// When the timer must next fire: the earliest of the oldest idle helper's expiry (if
    /// the pool is above `min helpers`) and the oldest busy helper's request timeout.
    fn next_due(&self) -> Option<Instant> {
        let (_, idle) = self.idle_helpers();
        let cull = pool_policy::next_cull(
            &idle,
            self.helpers.len(),
            self.cfg.min_helpers as usize,
            self.cfg.idle_timeout,
        );
        let hang = self
            .helpers
            .iter()
            .filter_map(|h| match h.state {
                HelperState::Busy { since, .. } => Some(since + self.cfg.request_timeout),
                HelperState::Idle(_) => None,
            })
            .min();
        cull.into_iter().chain(hang).min()
    }

    /// (Re-)arms the timer for `next_due`, unless it is already due no later.
    fn arm_timer(&mut self) {
        let Some(due) = self.next_due() else {
            return;
        };
        if self.timer_due.is_some_and(|armed| armed <= due) {
            return;
        }
        self.cancel_timer();
        let after = due.saturating_duration_since(Instant::now());
        // A little slack so that what is due has really expired when the timer fires.
        let usec = after.as_micros() as u64 + 10_000;
        // SAFETY: ev is smbd's event context; the timer lives under our talloc context and
        // is freed in Drop if it has not fired; `this` outlives it.
        self.timer = unsafe {
            ffi::aio_fork_add_timer(
                self.ev,
                self.mem,
                usec,
                Some(timer_fired),
                self.this as *mut c_void,
            )
        };
        if !self.timer.is_null() {
            self.timer_due = Some(due);
        }
    }

    fn cancel_timer(&mut self) {
        if !self.timer.is_null() {
            // SAFETY: a live timer we created under `mem` (cleared when it fires).
            unsafe { ffi::aio_fork_talloc_free(self.timer as *mut c_void) };
        }
        self.timer = ptr::null_mut();
        self.timer_due = None;
    }
}

unsafe extern "C" fn helper_readable(
    _ev: *mut ffi::tevent_context,
    _fde: *mut ffi::tevent_fd,
    _flags: u16,
    private: *mut c_void,
) {
    crate::vfs_ops::guard((), || {
        // SAFETY: `private` is the Token of a live helper (the fde is freed with it), and
        // its pool is alive (the pool frees its fdes in Drop).
        let token = unsafe { &*(private as *const Token) };
        let (pool, helper) = (token.pool, token.helper);
        // SAFETY: see above; `token` is not used after this point (it may be freed).
        unsafe { &*pool }.on_readable(helper);
    })
}

unsafe extern "C" fn timer_fired(
    _ev: *mut ffi::tevent_context,
    _te: *mut ffi::tevent_timer,
    _now: ffi::timeval,
    private: *mut c_void,
) {
    crate::vfs_ops::guard((), || {
        // SAFETY: the timer is freed in Pool's Drop, so the pool is alive when it fires.
        let pool = unsafe { hold(private as *const Pool) };
        pool.on_timer();
    })
}

fn start_zygote() -> Option<Zygote> {
    Zygote::start()
        .map_err(
            |e| tracing::warn!(error = %e, "cannot start the zygote: smbd forks helpers itself"),
        )
        .ok()
}

/// A strong reference to the pool for the length of an event callback: the requests it
/// completes may drop every other reference (share disconnected, requests freed).
///
/// # Safety
/// `pool` must come from `Rc::as_ptr` of a live `Rc<Pool>`.
unsafe fn hold(pool: *const Pool) -> Rc<Pool> {
    Rc::increment_strong_count(pool);
    Rc::from_raw(pool)
}

#[cfg(test)]
mod tests;
