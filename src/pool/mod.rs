//! The helper pool of one share connection (parent side).
//!
//! A request enters through `submit`, which answers it at once when the page cache can
//! (`nowait`), queues it for a helper, or hands it to the next module.
//!
//! Requests ("jobs") wait in a FIFO queue until a helper is free; the pool starts helpers up
//! to `max helpers`, ends idle ones after `idle timeout` (keeping `min helpers`), and
//! retries a request whose helper died on another helper.
//!
//! Helpers run as the user of the requests they serve: each set of credentials the share's
//! requests arrive with has its own crew, a zygote started (as that user) with the first
//! such request, and the helpers it forks. A job only ever runs on a helper of its crew.
//! Nothing runs before the first request that needs a helper. Replies arrive on each helper's
//! socket, watched by a tevent fd event on smbd's event loop, so smbd never blocks.
//!
//! A request that goes `request timeout` without progress has its helper killed and kept
//! until it exits (`ending`): retried after that exit, or failed with EIO, never sent twice
//! while the first may still land. Zygotes and helpers are asked for and join when they
//! answer (`spawning`, `crew`); idle helpers give their buffer pages back.
//!
//! Re-entrancy: finishing a request runs smbd's callback, which may send new requests or
//! free others. So the pool never calls out while its state is borrowed: decisions are
//! queued as `Action`s in `completing` and run one by one afterwards; a request freed in
//! the meantime removes its own pending actions (see `forget`).

pub mod breaker;
mod closing;
mod cpu_pinning;
mod crew;
mod disk_streams;
mod distrust;
mod ending;
mod events;
mod file_id;
mod file_writers;
mod heap;
mod job_table;
pub mod latency;
mod nowait;
mod policy;
mod probing;
mod residency;
mod spawning;
pub mod stats;
mod submit;
mod write_gathering;

use crate::abi::ffi;
use crate::config::Config;
use crate::parent::credentials::Credentials;
use crate::parent::helper::{HelperProcess, ReplyRead, BUFFER_SIZE};
use crate::parent::processes::Slot;
use crate::parent::reap;
use crate::protocol::{self, Op, Request, FLAG_ERRATIC};
use crew::Crew;
use ending::Ending;
use events::{FdWatch, Timer};
use file_id::FileId;
use policy::Placement;
use stats::Stats;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::ffi::{c_void, CString};
use std::os::fd::{OwnedFd, RawFd};
use std::ptr;
use std::rc::{Rc, Weak};
use std::time::Instant;
pub use submit::{Spec, Submitted};
use write_gathering::Rider;

/// A request whose helper died this many times is handed to the next module instead.
pub const MAX_HELPER_DEATHS: u32 = 3;
/// A helper idle this long gives its buffer's pages back (see `release_buffers`).
const RELEASE_BUFFER_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

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
    /// Index of the job's crew (set by `submit`).
    pub crew: usize,
    /// When smbd sent the request: the stats report latency from here.
    pub arrived: Instant,
    /// When the job last made progress (queued, or a piece answered): the request timeout
    /// runs from here.
    pub progress: Instant,
    /// The file it works on: its device's breaker, and ordering writes behind a stuck
    /// write to it.
    pub file: Option<FileId>,
    /// A helper hung with it: it is never handed to the next module (which would hang the
    /// same way, in smbd).
    pub timed_out: bool,
    /// The module's own probe of a hung device (see `breaker`); it owns `fd`.
    pub probe: Option<breaker::Probe>,
    /// The descriptor a close hands to a helper (see `closing`), until it is sent.
    pub handed: Option<OwnedFd>,
}

impl Job {
    /// A job for smbd's request `req`, with `done` of its `len` bytes already done.
    pub fn new(
        req: *mut ffi::tevent_req,
        op: Op,
        fd: RawFd,
        offset: i64,
        len: usize,
        data: *mut u8,
        done: usize,
    ) -> Job {
        let now = Instant::now();
        Job {
            req,
            op,
            fd,
            offset,
            len,
            data,
            done,
            deaths: 0,
            duration_ns: 0,
            crew: 0,
            arrived: now,
            progress: now,
            file: FileId::of(fd),
            timed_out: false,
            probe: None,
            handed: None,
        }
    }
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
    /// Names the pool to the device breakers of this process.
    id: u64,
    cfg: Config,
    ev: *mut ffi::tevent_context,
    /// talloc parent of the pool's tevent fd and timer events.
    mem: *mut c_void,
    /// The owning pool, for the events' wake-ups.
    this: Weak<Pool>,
    helpers: Vec<Helper>,
    /// Helpers ended for a timeout, until they exit.
    ending: Vec<Ending>,
    jobs: job_table::JobTable,
    queue: VecDeque<JobId>,
    completing: VecDeque<Action>,
    /// Ids of jobs, of helpers (for their wake-ups) and sequence numbers of requests sent
    /// to helpers (a reply must carry its request's).
    ids: Ids,
    stats: Stats,
    /// One timer for both idle culling and hung-helper detection.
    timer: Option<Timer>,
    spawn_error_logged: bool,
    share: String,
    last_stats_log: Option<Instant>,
    /// The helper program (see `child`).
    program: CString,
    crews: Vec<Crew>,
    /// The CPUs smbd may run on, where unpinned helpers may run (see `cpu_pinning`).
    cpus: nix::sched::CpuSet,
    heap: heap::HeapTrim,
    disk_streams: disk_streams::DiskStreams,
}

/// Counters that hand out ids, one per kind; none is ever given twice.
#[derive(Default)]
struct Ids {
    job: u64,
    helper: u64,
    seq: u64,
}

impl Ids {
    fn next_job(&mut self) -> JobId {
        self.job += 1;
        self.job
    }

    fn next_helper(&mut self) -> u64 {
        self.helper += 1;
        self.helper
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
}

struct Helper {
    id: u64,
    crew: usize,
    /// Wakes the pool when the helper answers or dies. Dropped before `process` closes the
    /// socket it watches (fields drop in order; see `events`).
    _watch: FdWatch,
    process: HelperProcess,
    /// Its place under `max processes`.
    _slot: Slot,
    state: HelperState,
    /// Whether its buffer holds pages (a request used it since it was last released).
    buffer_used: bool,
    /// The CPUs it may run on (see `cpu_pinning`).
    pinning: cpu_pinning::Pinning,
}

enum HelperState {
    Idle(Instant),
    Busy {
        job: JobId,
        seq: u64,
        /// The job's bytes in the piece.
        chunk: usize,
        /// Writes that follow the job's, written with it (see `write_gathering`).
        riders: Vec<Rider>,
        since: Instant,
    },
}

impl HelperState {
    /// Whether the helper is doing job `id`: as its own job or carried along.
    fn holds(&self, id: JobId) -> bool {
        match self {
            HelperState::Busy { job, riders, .. } => {
                *job == id || riders.iter().any(|r| r.job == id)
            }
            HelperState::Idle(_) => false,
        }
    }
}

/// Pools of this process get distinct ids, never reused.
fn next_pool_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Pool {
    /// A pool for one share; it starts no process before the first request.
    pub fn new(
        share: String,
        cfg: Config,
        program: CString,
        ev: *mut ffi::tevent_context,
        run_action: ActionRunner,
    ) -> Rc<Pool> {
        // SAFETY: a new talloc context without parent; freed in Drop.
        let mem = unsafe { ffi::aio_fork_talloc_new(ptr::null()) };
        Rc::new_cyclic(|this| Pool {
            run_action,
            inner: RefCell::new(PoolInner {
                id: next_pool_id(),
                cfg,
                ev,
                mem,
                this: this.clone(),
                helpers: Vec::new(),
                ending: Vec::new(),
                jobs: job_table::JobTable::default(),
                queue: VecDeque::new(),
                completing: VecDeque::new(),
                ids: Ids::default(),
                stats: Stats::default(),
                timer: None,
                spawn_error_logged: false,
                share,
                last_stats_log: None,
                program,
                crews: Vec::new(),
                cpus: cpu_pinning::allowed(),
                heap: heap::HeapTrim::new(ev),
                disk_streams: disk_streams::DiskStreams::default(),
            }),
        })
    }

    pub fn share(&self) -> String {
        self.inner.borrow().share.clone()
    }

    #[cfg(test)]
    pub fn stats(&self) -> Stats {
        self.inner.borrow().stats.clone()
    }

    /// The stats as a connection ends: helpers that died since smbd's loop last ran (killed
    /// just before the client left, their socket's end-of-file never read) count too.
    pub fn final_stats(&self) -> Stats {
        let mut inner = self.inner.borrow_mut();
        inner.bury_the_exited();
        inner.stats.clone()
    }

    #[cfg(test)]
    pub fn helper_pids(&self) -> Vec<i32> {
        let inner = self.inner.borrow();
        inner.helpers.iter().map(|h| h.process.pid()).collect()
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
        let running = inner.helpers.iter().any(|h| h.state.holds(job));
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
        reap::pending();
        {
            let mut inner = self.inner.borrow_mut();
            if let Some(crew) = inner.crews.iter().position(|c| c.wake == helper) {
                inner.on_zygote(crew);
            } else if inner.ending.iter().any(|e| e.id == helper) {
                inner.on_exit(helper);
            } else {
                inner.handle_reply(helper);
            }
        }
        self.run_completions();
    }

    fn on_timer(&self) {
        reap::pending();
        {
            let mut inner = self.inner.borrow_mut();
            if let Some(timer) = inner.timer.take() {
                timer.fired();
            }
            let now = Instant::now();
            inner.end_hung(now);
            inner.time_out_queued(now);
            inner.give_up_on_exits(now);
            inner.give_up_on_silent_zygotes(now);
            inner.send_probes();
            inner.release_buffers(now);
            inner.cull(now);
            for crew in 0..inner.crews.len() {
                inner.ensure_min(crew);
            }
            inner.pump();
            inner.arm_timer();
        }
        self.run_completions();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let inner = self.inner.get_mut();
        breaker::abandon(inner.id);
        inner.timer = None;
        while !inner.helpers.is_empty() {
            inner.remove_helper(0);
        }
        inner.ending.clear();
        // Before the talloc context: their watches live in it.
        inner.crews.clear();
        // SAFETY: our own talloc context; everything under it is ours.
        unsafe { ffi::aio_fork_talloc_free(inner.mem) };
        // The zygotes just ended are reaped as they exit, though this pool is gone.
        reap::watch_kept(inner.ev);
    }
}

impl PoolInner {
    /// The crew of `creds`, made if new.
    fn crew_for(&mut self, creds: Credentials) -> usize {
        if let Some(i) = self.crews.iter().position(|c| c.creds == creds) {
            return i;
        }
        self.crews.push(Crew::new(creds));
        self.crews.len() - 1
    }

    /// Starts queued jobs on idle or new helpers of their crews, in order, while that is
    /// possible. A job whose crew has no helper and can get none goes to the next module.
    fn pump(&mut self) {
        let mut blocked: Vec<usize> = Vec::new();
        // Per crew, waiting jobs that a helper already asked for will take.
        let mut covered: Vec<usize> = self.crews.iter().map(Crew::spawning).collect();
        let mut i = 0;
        while i < self.queue.len() {
            let id = self.queue[i];
            let Some(crew) = self.jobs.get(&id).map(|j| j.crew) else {
                self.queue.remove(i);
                continue;
            };
            if blocked.contains(&crew)
                || self.held_behind_stuck_write(id)
                || self.waits_for_file_writer(id)
                || self.waits_to_be_gathered(id, i.checked_sub(1).map(|a| self.queue[a]))
            {
                i += 1;
                continue;
            }
            let (idle, since) = self.idle_helpers(Some(crew));
            let asked = match policy::place(&since, self.live(), self.cfg.max_helpers as usize) {
                Placement::Idle(k) => {
                    self.queue.remove(i);
                    self.start_on(idle[k], id);
                    continue;
                }
                _ if covered[crew] > 0 => {
                    covered[crew] -= 1;
                    true
                }
                Placement::Spawn => self.ask_spawn(crew),
                Placement::Wait => self.make_room(crew) && self.ask_spawn(crew),
            };
            if !asked {
                blocked.push(crew);
                if blocked.len() == self.crews.len() {
                    // No later job can start either: their crews are all blocked.
                    break;
                }
            }
            i += 1;
        }
        self.fall_back_orphans();
    }

    /// Hands on the queued jobs whose crew has no helper, none ending (to retry on) and
    /// none asked for: nothing would ever start them.
    fn fall_back_orphans(&mut self) {
        let orphan_crew = |c: usize| {
            self.crews[c].spawning() == 0
                && !self.helpers.iter().any(|h| h.crew == c)
                && !self.ending.iter().any(|e| e.crew == c)
        };
        let orphan_crews: Vec<bool> = (0..self.crews.len()).map(orphan_crew).collect();
        if !orphan_crews.contains(&true) {
            return;
        }
        let orphaned: Vec<JobId> = self
            .queue
            .iter()
            .copied()
            .filter(|&id| {
                self.jobs
                    .get(&id)
                    .is_some_and(|j| orphan_crews[j.crew] && !self.held_behind_stuck_write(id))
            })
            .collect();
        for id in orphaned {
            self.queue.retain(|&q| q != id);
            self.fall_back(id);
        }
    }

    /// The idle helpers of `crew` (all crews: `None`): indexes, and since when each is idle.
    fn idle_helpers(&self, crew: Option<usize>) -> (Vec<usize>, Vec<Instant>) {
        self.helpers
            .iter()
            .enumerate()
            .filter(|(_, h)| crew.map_or(true, |c| h.crew == c))
            .filter_map(|(i, h)| match h.state {
                HelperState::Idle(since) => Some((i, since)),
                HelperState::Busy { .. } => None,
            })
            .unzip()
    }

    fn crew_size(&self, crew: usize) -> usize {
        self.helpers.iter().filter(|h| h.crew == crew).count()
    }

    /// Helpers that hold a place under `max helpers`: running, ending (stuck ones must not
    /// multiply) and asked for.
    fn live(&self) -> usize {
        let spawning: usize = self.crews.iter().map(Crew::spawning).sum();
        self.helpers.len() + self.ending.len() + spawning
    }

    /// Ends the idle helper of another crew that has been idle longest, to make room for
    /// one of `crew`; false if there is none.
    fn make_room(&mut self, crew: usize) -> bool {
        let (others, since) = self.idle_helpers(None);
        let oldest = (0..others.len())
            .filter(|&i| self.helpers[others[i]].crew != crew)
            .min_by_key(|&i| since[i]);
        match oldest {
            Some(i) => {
                self.remove_helper(others[i]);
                true
            }
            None => false,
        }
    }

    /// Sends the next piece of job `id` to helper `idx`; false if the helper could not be
    /// reached (it is buried, the job queued again: the caller must pump).
    fn start_on(&mut self, idx: usize, id: JobId) -> bool {
        let Some(job) = self.jobs.get(&id) else {
            return true;
        };
        let chunk = match job.op {
            Op::Fsync | Op::Close => 0,
            _ => (job.len - job.done).min(BUFFER_SIZE),
        };
        let riders = write_gathering::gather(job, chunk, &mut self.queue, &self.jobs);
        let piece = write_gathering::piece_len(chunk, &riders);
        let alone = self.queue.is_empty()
            && !self
                .helpers
                .iter()
                .enumerate()
                .any(|(i, h)| i != idx && matches!(h.state, HelperState::Busy { .. }));
        let cpus = cpu_pinning::wanted(piece, alone);
        let helper = &mut self.helpers[idx];
        helper.pinning.place(helper.process.pid(), cpus, &self.cpus);
        helper.buffer_used |= piece > 0;
        if job.op.writes() && chunk > 0 {
            // SAFETY: job.data is smbd's live buffer of job.len bytes (the job is forgotten
            // before smbd frees it); the helper is idle, so nobody else uses its buffer.
            let src = unsafe { std::slice::from_raw_parts(job.data.add(job.done), chunk) };
            helper.process.buffer()[..chunk].copy_from_slice(src);
            write_gathering::copy_riders(
                &self.jobs,
                &riders,
                &mut helper.process.buffer()[chunk..],
            );
        }
        let seq = self.ids.next_seq();
        let req = Request {
            seq,
            op: job.op as u32,
            flags: if self.cfg.erratic_testing_mode {
                FLAG_ERRATIC
            } else {
                0
            },
            offset: job.offset.wrapping_add(job.done as i64),
            len: piece as u64,
        };
        tracing::trace!(
            op = ?job.op, offset = req.offset, len = piece, riders = riders.len(),
            helper = helper.process.pid(),
            "request sent to helper"
        );
        let sent = helper.process.send(&req, job.fd);
        helper.state = HelperState::Busy {
            job: id,
            seq,
            chunk,
            riders,
            since: Instant::now(),
        };
        if let Err(e) = sent {
            tracing::warn!(pid = helper.process.pid(), error = %e, "helper unreachable");
            self.bury(idx, false);
            return false;
        }
        if let Some(job) = self.jobs.get_mut(&id) {
            // The helper holds the file now: smbd's reference must not be the last.
            job.handed = None;
        }
        true
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
            ReplyRead::Malformed => {
                self.broke_protocol(idx, format_args!("a message of another size"));
                self.pump();
                return;
            }
            ReplyRead::Reply(r) => r,
        };
        let (job_id, chunk, riders) = match &self.helpers[idx].state {
            HelperState::Busy {
                job,
                seq,
                chunk,
                riders,
                ..
            } if *seq == reply.seq => (*job, *chunk, riders.clone()),
            _ => {
                self.broke_protocol(idx, format_args!("a reply to nothing asked: {reply:?}"));
                self.pump();
                return;
            }
        };
        let piece = write_gathering::piece_len(chunk, &riders);
        if !protocol::reply_is_valid(reply.result, piece) {
            let result = reply.result;
            let what = format_args!("result {result} for a piece of {piece} bytes");
            self.broke_protocol(idx, what);
            self.pump();
            return;
        }
        let (result, duration_ns) =
            self.settle_riders(idx, chunk, &riders, reply.result, reply.duration_ns);
        if self.advance(idx, job_id, chunk, result, duration_ns) {
            if !self.start_on(idx, job_id) {
                self.pump();
                self.arm_timer();
            }
        } else {
            self.helpers[idx].state = HelperState::Idle(Instant::now());
            self.pump();
            self.arm_timer();
            self.log_stats_when_quiet();
        }
    }

    /// Accounts a reply to job `id`; true when the job has another piece to send.
    pub(super) fn advance(
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
        if let Some(probe) = &mut job.probe {
            probe.ticket.answered();
        }
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
            job.progress = Instant::now();
            let more = job.op.moves_data() && n == chunk && job.done < job.len;
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
        if job.probe.is_some() {
            return;
        }
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
            Op::Close => {}
        }
    }

    /// Ends helper `idx` after it died or misbehaved; its job is retried or handed on.
    /// `delivered`: the helper may have started the job (it was sent successfully).
    fn bury(&mut self, idx: usize, delivered: bool) {
        self.stats.helper_deaths += 1;
        let state = self.remove_helper(idx);
        let HelperState::Busy {
            job: id, riders, ..
        } = state
        else {
            return;
        };
        self.queue_again(&riders);
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
            self.fail(id, libc::EIO);
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

    /// Buries every helper that has exited, whatever it was doing.
    fn bury_the_exited(&mut self) {
        let mut idx = 0;
        while idx < self.helpers.len() {
            if self.helpers[idx].process.exited() {
                // `bury` swaps the last helper into `idx`.
                self.bury(idx, true);
            } else {
                idx += 1;
            }
        }
    }

    /// Completes job `id` with `error`, or with what it did if that is not nothing.
    fn fail(&mut self, id: JobId, error: i32) {
        let Some(job) = self.jobs.remove(&id) else {
            return;
        };
        self.account(&job, -(error as i64));
        if job.req.is_null() {
            return;
        }
        self.completing.push_back(Action::Finish {
            req: job.req,
            result: if job.done > 0 { job.done as isize } else { -1 },
            error: if job.done > 0 { 0 } else { error },
            duration_ns: job.duration_ns,
        });
    }

    /// Hands job `id` to the next module (its done part stays done); fails it with EIO if
    /// that would hang smbd (see `breaker`).
    fn fall_back(&mut self, id: JobId) {
        if self.jobs.get(&id).is_some_and(Job::on_hung_device) {
            self.stats.hung_refusals += 1;
            self.fail(id, libc::EIO);
            return;
        }
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
        helper.state
        // The watch and the process drop here: event freed, helper ended.
    }

    /// Helpers idle for a while give their buffers' pages back: between bursts of I/O a
    /// connection holds no more memory than smbd's own, however large its last requests
    /// were (each helper's buffer fills up to 8 MiB of shared memory while in use).
    fn release_buffers(&mut self, now: Instant) {
        for h in &mut self.helpers {
            if let HelperState::Idle(since) = h.state {
                if h.buffer_used && now.saturating_duration_since(since) >= RELEASE_BUFFER_AFTER {
                    h.process.release_buffer();
                    h.buffer_used = false;
                }
            }
        }
    }

    /// Ends helpers idle for longer than the idle timeout, down to `min helpers` per crew;
    /// a crew left without helpers (and `min helpers` 0) lets its zygote go too.
    fn cull(&mut self, now: Instant) {
        for crew in 0..self.crews.len() {
            let (idle, since) = self.idle_helpers(Some(crew));
            let picked = policy::to_cull(
                &since,
                self.crew_size(crew),
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
            // Queued, running, or to be sent again once an ended helper exits: the zygote
            // cannot be started again outside `submit` (it takes the requesting user's ids).
            let waiting = self.jobs.values().any(|j| j.crew == crew);
            if self.cfg.min_helpers == 0
                && !breaker::probes_any(self.id)
                && self.crew_size(crew) == 0
                && self.crews[crew].spawning() == 0
                && !waiting
            {
                self.crews[crew].stop_zygote();
            }
        }
    }

    /// When the timer must next fire: the earliest of the oldest idle helper's expiry (if
    /// the pool is above `min helpers`), the request timeout of the oldest busy helper or
    /// queued job, and an ended helper's grace.
    fn next_due(&self) -> Option<Instant> {
        let cull = (0..self.crews.len())
            .filter_map(|crew| {
                let (_, idle) = self.idle_helpers(Some(crew));
                policy::next_cull(
                    &idle,
                    self.crew_size(crew),
                    self.cfg.min_helpers as usize,
                    self.cfg.idle_timeout,
                )
            })
            .min();
        let hang = self
            .helpers
            .iter()
            .filter_map(|h| match h.state {
                HelperState::Busy { since, .. } => Some(since),
                HelperState::Idle(_) => None,
            })
            .chain(
                self.queue
                    .iter()
                    .filter_map(|id| self.jobs.get(id).map(|j| j.progress)),
            )
            .min()
            .map(|since| since + self.cfg.request_timeout);
        let zygotes = self.crews.iter().filter_map(Crew::answer_due).min();
        let release = self
            .helpers
            .iter()
            .filter_map(|h| match h.state {
                HelperState::Idle(since) if h.buffer_used => Some(since + RELEASE_BUFFER_AFTER),
                _ => None,
            })
            .min();
        let grace = self
            .ending
            .iter()
            .filter(|e| !e.stuck)
            .map(|e| e.deadline)
            .min();
        let probes = breaker::probes_any(self.id).then(|| Instant::now() + probing::POLL);
        cull.into_iter()
            .chain(probes)
            .chain(hang)
            .chain(grace)
            .chain(zygotes)
            .chain(release)
            .min()
    }

    /// (Re-)arms the timer for `next_due`, unless it is already due no later.
    fn arm_timer(&mut self) {
        let Some(due) = self.next_due() else {
            return;
        };
        if self.timer.as_ref().is_some_and(|t| t.due() <= due) {
            return;
        }
        self.timer = Timer::new(self.ev, self.mem, due, self.this.clone());
    }
}

#[cfg(test)]
mod tests;
