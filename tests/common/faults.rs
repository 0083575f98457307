//! Fault injection and watching for the fault tests: a thread that SIGKILLs random
//! helpers, a thread that watches /proc (zombies, helpers per connection, smbd RSS) and
//! reaps what the namespace's init inherits, and checks of smbd's log for crashes.
//!
//! Inside the test's PID namespace the test process is PID 1: a helper or connection
//! process whose parent died is re-parented to it, and it must reap them (as init
//! does), or they would stay zombies through no fault of the module. [`ProcWatch`]
//! does that, and only for processes named like smbd's or the helpers (never the
//! children the test waits for itself).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::procs::{self, Proc, HELPER_COMM, ZYGOTE_COMM};

/// Sets the seed of every random choice of a fault test (printed by each run).
pub const ENV_SEED: &str = "AIO_FORK_FAULT_SEED";

/// Texts in smbd's log (or console) that mean it crashed or hit an internal error:
/// Samba's fault handler ("INTERNAL ERROR: Signal 11 ...", "PANIC (pid ..)",
/// "BACKTRACE: ..."), and the module's own: a Rust panic (in the test build, also a
/// failed debug assertion or an arithmetic overflow) caught at the smbd boundary, and
/// the panic hook's "panicked at" on stderr.
pub const CRASH_MARKERS: [&str; 7] = [
    "PANIC",
    "INTERNAL ERROR",
    "Backtrace",
    "BACKTRACE",
    "smb_panic",
    "internal error caught",
    "panicked at",
];

/// A small xorshift64* generator: random moments and victims, reproducible from a seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// From `$AIO_FORK_FAULT_SEED`, else from the clock; the seed is printed.
    pub fn from_env_or_time(what: &str) -> Rng {
        let seed = match std::env::var(ENV_SEED) {
            Ok(text) => text
                .parse()
                .unwrap_or_else(|_| panic!("${ENV_SEED}={text:?} is not a number")),
            Err(_) => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1),
        };
        println!("{what}: random seed {seed} (set ${ENV_SEED} to repeat)");
        Rng::new(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high);
        low + self.next_u64() % (high - low + 1)
    }

    /// A duration in `low..=high`, to the millisecond.
    pub fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(self.range(low, high))
    }
}

/// The process `pid` now, if it exists.
pub fn proc_of(pid: u32) -> Option<Proc> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    procs::parse_stat(&stat)
}

/// Whether `pid` is a live (not zombie) process.
pub fn is_live(pid: u32) -> bool {
    proc_of(pid).is_some_and(|p| p.is_live())
}

/// Sends `signal` to `pid`; true if it was delivered.
pub fn send_signal(pid: u32, signal: libc::c_int) -> bool {
    // SAFETY: kill(2) only sends a signal; no memory is touched.
    unsafe { libc::kill(pid as libc::pid_t, signal) == 0 }
}

/// Live helpers whose parent is `parent` (any parent with `None`). A helper forked by
/// its connection's zygote counts as the connection's (see [`procs::snapshot`]).
pub fn live_helpers(parent: Option<u32>) -> Vec<Proc> {
    procs::snapshot()
        .into_iter()
        .filter(|p| p.is_live() && p.comm == HELPER_COMM)
        .filter(|p| parent.map_or(true, |c| p.ppid == c))
        .collect()
}

/// Whether helper `pid` is inside a request now: any system call but the `recvmsg` an
/// idle helper waits in (from /proc/<pid>/syscall; "running" counts as busy). `None`
/// if it cannot be read (the helper is gone).
pub fn helper_in_request(pid: u32) -> Option<bool> {
    let text = fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    let first = text.split_whitespace().next()?;
    match first.parse::<libc::c_long>() {
        Ok(nr) => Some(nr != libc::SYS_recvmsg),
        Err(_) => Some(first == "running"),
    }
}

/// How many of `pids` are inside a request now (see [`helper_in_request`]).
pub fn helpers_in_request(pids: &[u32]) -> usize {
    pids.iter()
        .filter(|&&p| helper_in_request(p) == Some(true))
        .count()
}

/// Waits until none of `pids` exists any more (exited and reaped: no /proc entry);
/// returns how long that took, or the ones left at `timeout`.
pub fn wait_all_gone(pids: &[u32], timeout: Duration) -> Result<Duration, Vec<Proc>> {
    let start = Instant::now();
    loop {
        let left: Vec<Proc> = pids.iter().filter_map(|&p| proc_of(p)).collect();
        if left.is_empty() {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return Err(left);
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until none of `pids` is alive (exited; a zombie counts as dead); returns how
/// long that took, or the live ones left at `timeout`.
pub fn wait_all_dead(pids: &[u32], timeout: Duration) -> Result<Duration, Vec<Proc>> {
    let start = Instant::now();
    loop {
        let left: Vec<Proc> = pids
            .iter()
            .filter_map(|&p| proc_of(p))
            .filter(|p| p.is_live())
            .collect();
        if left.is_empty() {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return Err(left);
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// Lines of smbd's log that show a crash or an internal error.
pub fn crash_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| CRASH_MARKERS.iter().any(|m| l.contains(m)))
        .map(str::to_string)
        .collect()
}

/// What a [`HelperKiller`] did.
#[derive(Clone, Debug, Default)]
pub struct KillReport {
    /// Helpers SIGKILLed, each once (each was a live helper of the target just before
    /// the kill).
    pub killed: Vec<u32>,
    /// Of those, the ones seen inside a request just before the kill.
    pub in_request: usize,
    /// Rounds that found no live helper to kill.
    pub idle_rounds: usize,
}

/// How long a round that wants a busy helper looks for one before it takes any.
const BUSY_SEARCH: Duration = Duration::from_millis(50);

/// A thread that, every `interval` (±50 %), SIGKILLs one live helper (of the connection
/// process `parent`, or of any connection with `None`). Every other round kills a helper
/// inside a request if one shows up within [`BUSY_SEARCH`]: a helper serving 8 MiB pieces
/// is idle most of the time, and kills that all land between requests never test a retry.
/// The other rounds pick at random, idle or not. A helper is killed once: one killed in
/// an uninterruptible syscall may still look alive a while.
pub struct HelperKiller {
    stop: Arc<AtomicBool>,
    kills: Arc<AtomicUsize>,
    handle: JoinHandle<KillReport>,
}

impl HelperKiller {
    pub fn start(parent: Option<u32>, interval: Duration, mut rng: Rng) -> HelperKiller {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let kills = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&kills);
        let base = interval.as_millis() as u64;
        let handle = thread::spawn(move || {
            let mut report = KillReport::default();
            while !flag.load(Ordering::Relaxed) {
                thread::sleep(rng.millis(base / 2, base + base / 2));
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let want_busy = report.killed.len() % 2 == 0;
                let Some((pid, busy)) = pick_victim(parent, &report.killed, want_busy, &mut rng)
                else {
                    report.idle_rounds += 1;
                    continue;
                };
                // Still a live helper (not exited meanwhile)? Its parent is not compared:
                // the snapshot gives a zygote-born helper its connection as parent.
                let same = proc_of(pid).is_some_and(|p| p.is_live() && p.comm == HELPER_COMM);
                if same && send_signal(pid, libc::SIGKILL) {
                    report.killed.push(pid);
                    report.in_request += usize::from(busy);
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
            report
        });
        HelperKiller {
            stop,
            kills,
            handle,
        }
    }

    /// Helpers killed so far.
    pub fn kills(&self) -> usize {
        self.kills.load(Ordering::Relaxed)
    }

    pub fn finish(self) -> KillReport {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("helper killer thread panicked")
    }
}

/// A live helper not in `killed`, and whether it was inside a request. With `want_busy`,
/// looks for one inside a request for up to [`BUSY_SEARCH`] before it takes any.
fn pick_victim(
    parent: Option<u32>,
    killed: &[u32],
    want_busy: bool,
    rng: &mut Rng,
) -> Option<(u32, bool)> {
    let deadline = Instant::now() + BUSY_SEARCH;
    loop {
        let victims: Vec<(u32, bool)> = live_helpers(parent)
            .into_iter()
            .filter(|p| !killed.contains(&p.pid))
            .map(|p| (p.pid, helper_in_request(p.pid) == Some(true)))
            .collect();
        let busy: Vec<(u32, bool)> = victims.iter().copied().filter(|v| v.1).collect();
        let from = if want_busy && !busy.is_empty() {
            &busy
        } else {
            &victims
        };
        if from.is_empty() {
            return None;
        }
        if !want_busy || !busy.is_empty() || Instant::now() >= deadline {
            return Some(from[rng.range(0, from.len() as u64 - 1) as usize]);
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// A helper seen in state Z.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Zombie {
    /// Its parent then, and the parent's state (R, S, Z, ...).
    pub parent: u32,
    pub parent_state: char,
    /// When first seen so, since the watch started.
    pub first_seen: Duration,
    /// The longest time it was seen in state Z.
    pub age: Duration,
}

/// What a [`ProcWatch`] saw.
#[derive(Clone, Debug, Default)]
pub struct WatchReport {
    pub samples: usize,
    /// Every helper seen, by the parent it had when first seen.
    pub helpers_by_parent: BTreeMap<u32, BTreeSet<u32>>,
    /// Most live helpers one parent had at once.
    pub max_helpers_by_parent: BTreeMap<u32, usize>,
    /// Helpers seen as zombies (exited, not reaped by their parent, which is not the
    /// test process), by pid.
    pub zombie_helpers: BTreeMap<u32, Zombie>,
    /// Orphans (helpers or smbd processes whose parent died) reaped by the test
    /// process as the namespace's init: pid, comm, when (since the watch started).
    pub orphans_reaped: Vec<(u32, String, Duration)>,
    /// Largest VmRSS (KiB) seen per smbd process (main and connections).
    pub rss_max_kib: BTreeMap<u32, u64>,
    /// Largest sum of VmRSS (KiB) of all smbd processes at one instant.
    pub rss_sum_max_kib: u64,
    /// Largest VmRSS (KiB) of any one helper.
    pub helper_rss_max_kib: u64,
}

impl WatchReport {
    /// Helpers seen in state Z for at least `limit`.
    pub fn zombies_longer_than(&self, limit: Duration) -> Vec<(u32, Zombie)> {
        self.zombie_helpers
            .iter()
            .filter(|(_, z)| z.age >= limit)
            .map(|(pid, z)| (*pid, z.clone()))
            .collect()
    }

    /// The longest any helper was seen as a zombie.
    pub fn longest_zombie(&self) -> Duration {
        self.zombie_helpers
            .values()
            .map(|z| z.age)
            .max()
            .unwrap_or_default()
    }

    /// Most live helpers any one connection process had at once.
    pub fn max_helpers_per_connection(&self) -> usize {
        self.max_helpers_by_parent
            .values()
            .copied()
            .max()
            .unwrap_or(0)
    }

    /// Every helper pid seen.
    pub fn all_helpers(&self) -> Vec<u32> {
        self.helpers_by_parent
            .values()
            .flat_map(|s| s.iter().copied())
            .collect()
    }

    /// One line for the test's output.
    pub fn summary(&self) -> String {
        format!(
            "{} samples, {} helpers seen under {} parent(s), at most {} per connection, \
             {} helper(s) seen as zombies (longest {:?}), {} orphan(s) reaped by init",
            self.samples,
            self.all_helpers().len(),
            self.helpers_by_parent.len(),
            self.max_helpers_per_connection(),
            self.zombie_helpers.len(),
            self.longest_zombie(),
            self.orphans_reaped.len()
        )
    }
}

/// Samples /proc every `interval` on a thread: helpers per parent, helper zombies and
/// how long they stay, smbd's RSS (every tenth sample); reaps orphans as init.
pub struct ProcWatch {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<WatchReport>,
}

impl ProcWatch {
    /// `main_pid`: the main smbd (its connection processes are its smbd children).
    pub fn start(main_pid: u32, interval: Duration) -> ProcWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut state = WatchState {
                started: Instant::now(),
                report: WatchReport::default(),
                zombie_since: HashMap::new(),
            };
            while !flag.load(Ordering::Relaxed) {
                state.sample(main_pid);
                thread::sleep(interval);
            }
            state.sample(main_pid);
            state.report
        });
        ProcWatch { stop, handle }
    }

    pub fn finish(self) -> WatchReport {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("process watch thread panicked")
    }
}

struct WatchState {
    started: Instant,
    report: WatchReport,
    /// Zombie helpers now, and when each was first seen so.
    zombie_since: HashMap<u32, Instant>,
}

impl WatchState {
    fn sample(&mut self, main_pid: u32) {
        let me = std::process::id();
        let now = Instant::now();
        let snap = procs::snapshot();
        let mut live_by_parent: BTreeMap<u32, usize> = BTreeMap::new();
        let mut zombies_now = Vec::new();
        for p in &snap {
            let is_helper = p.comm == HELPER_COMM;
            if !p.is_live() {
                // smbd's processes are "smbd", "smbd[addr]", "smbd-notifyd", ...; the
                // module's are the helpers and their zygote.
                let ours = is_helper || p.comm == ZYGOTE_COMM || p.comm.starts_with("smbd");
                if p.ppid == me && p.pid != main_pid && ours {
                    reap(p.pid);
                    let when = now - self.started;
                    self.report
                        .orphans_reaped
                        .push((p.pid, p.comm.clone(), when));
                } else if is_helper {
                    zombies_now.push((p.pid, p.ppid));
                }
                continue;
            }
            // A live helper whose parent is us was orphaned: its zygote, hence its
            // connection, has ended, and it is about to die of its parent-death signal.
            // It belongs to no connection any more and is not counted against one.
            if is_helper && p.ppid != me {
                *live_by_parent.entry(p.ppid).or_default() += 1;
                let known = self
                    .report
                    .helpers_by_parent
                    .values()
                    .any(|s| s.contains(&p.pid));
                if !known {
                    self.report
                        .helpers_by_parent
                        .entry(p.ppid)
                        .or_default()
                        .insert(p.pid);
                }
            }
        }
        for (parent, count) in live_by_parent {
            let max = self.report.max_helpers_by_parent.entry(parent).or_default();
            *max = (*max).max(count);
        }
        self.zombie_since
            .retain(|pid, _| zombies_now.iter().any(|(z, _)| z == pid));
        for (pid, parent) in zombies_now {
            let since = *self.zombie_since.entry(pid).or_insert(now);
            let parent_state = snap
                .iter()
                .find(|p| p.pid == parent)
                .map_or('?', |p| p.state);
            let zombie = self.report.zombie_helpers.entry(pid).or_insert(Zombie {
                parent,
                parent_state,
                first_seen: since - self.started,
                age: Duration::ZERO,
            });
            zombie.age = zombie.age.max(now - since);
            zombie.parent_state = parent_state;
        }
        if self.report.samples % 10 == 0 {
            self.sample_rss(&snap, main_pid);
        }
        self.report.samples += 1;
    }

    fn sample_rss(&mut self, snap: &[Proc], main_pid: u32) {
        let mut sum = 0;
        for p in snap.iter().filter(|p| p.is_live()) {
            let is_smbd = p.pid == main_pid || (p.ppid == main_pid && procs::is_smbd_comm(&p.comm));
            if !is_smbd && p.comm != HELPER_COMM {
                continue;
            }
            let Some(kib) = rss_kib(p.pid) else {
                continue;
            };
            if p.comm == HELPER_COMM {
                self.report.helper_rss_max_kib = self.report.helper_rss_max_kib.max(kib);
                continue;
            }
            sum += kib;
            let max = self.report.rss_max_kib.entry(p.pid).or_default();
            *max = (*max).max(kib);
        }
        self.report.rss_sum_max_kib = self.report.rss_sum_max_kib.max(sum);
    }
}

/// `VmRSS` of `pid` in KiB, from /proc/<pid>/status.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Reaps the zombie child `pid` of this process (never blocks).
fn reap(pid: u32) {
    let mut status = 0;
    // SAFETY: waitpid on one pid with WNOHANG; status is a local int.
    unsafe {
        libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG);
    }
}
