//! Finding smbd's connection processes and the module's helpers in /proc.
//!
//! Inside the test's PID namespace /proc shows only the test's own processes, so a
//! scan sees exactly this smbd and its children.

use std::collections::BTreeSet;
use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::module::ModuleKind;

/// `/proc/<pid>/comm` of the Rust module's helpers.
pub const HELPER_COMM: &str = "aio_fork_helper";
/// `comm` of smbd's per-connection processes (and of the C module's helpers, which
/// are plain forks of them).
pub const SMBD_COMM: &str = "smbd";

/// Whether `comm` names an smbd connection process (or a C module helper forked from
/// one): Samba 4.17 leaves them "smbd"; 4.22 renames each "smbd[<client address>]"
/// (`process_set_title` in source3/smbd/server.c), truncated to 15 bytes by the kernel.
/// smbd's daemons are "smbd-notifyd", "smbd-cleanupd", ...: not matched.
pub fn is_smbd_comm(comm: &str) -> bool {
    comm == SMBD_COMM || comm.starts_with("smbd[")
}

/// One process, from `/proc/<pid>/stat`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    /// R, S, D, Z, ... as in proc(5).
    pub state: char,
}

impl Proc {
    /// Zombies and dead processes are gone as far as the tests are concerned.
    pub fn is_live(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// `comm` of the Rust module's zygote: a child of the connection process that forks the
/// connection's helpers (so that forking costs the same however big smbd grows).
pub const ZYGOTE_COMM: &str = "aio_fork_zygote";

/// All processes visible now (a process that exits mid-scan is skipped). A helper forked
/// by a zygote is reported with the zygote's parent as its `ppid`: it belongs to that
/// connection process, as a helper smbd forked itself does.
pub fn snapshot() -> Vec<Proc> {
    let Ok(entries) = fs::read_dir("/proc") else {
        panic!("cannot read /proc");
    };
    let mut all: Vec<Proc> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(read_proc)
        .collect();
    let zygotes: Vec<(u32, u32)> = all
        .iter()
        .filter(|p| p.comm == ZYGOTE_COMM)
        .map(|z| (z.pid, z.ppid))
        .collect();
    for p in all.iter_mut().filter(|p| p.comm == HELPER_COMM) {
        if let Some(&(_, owner)) = zygotes.iter().find(|(zygote, _)| *zygote == p.ppid) {
            p.ppid = owner;
        }
    }
    all
}

fn read_proc(pid: u32) -> Option<Proc> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// Parses `pid (comm) state ppid ...`; comm may itself hold spaces and parentheses.
pub fn parse_stat(stat: &str) -> Option<Proc> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let pid = stat[..open].trim().parse().ok()?;
    let comm = stat[open + 1..close].to_string();
    let mut rest = stat[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some(Proc {
        pid,
        ppid,
        comm,
        state,
    })
}

/// Live per-connection smbd processes: children of the main smbd named "smbd" (4.22:
/// "smbd[<address>]", see [`is_smbd_comm`])
/// (its other children are smbd-notifyd and cleanupd).
pub fn connection_pids(procs: &[Proc], main_pid: u32) -> Vec<u32> {
    procs
        .iter()
        .filter(|p| p.is_live() && p.ppid == main_pid && is_smbd_comm(&p.comm))
        .map(|p| p.pid)
        .collect()
}

/// Live helper processes of `kind`, wherever they hang in the tree (callers check
/// parents themselves, so a misplaced helper is seen rather than missed).
/// - Rust: every live process whose comm is [`HELPER_COMM`].
/// - SambaC: live "smbd" children of a connection process (the C module forks the
///   connection process without exec or renaming).
pub fn helpers(procs: &[Proc], main_pid: u32, kind: ModuleKind) -> Vec<Proc> {
    match kind {
        ModuleKind::Rust => procs
            .iter()
            .filter(|p| p.is_live() && p.comm == HELPER_COMM)
            .cloned()
            .collect(),
        ModuleKind::SambaC => {
            let conns = connection_pids(procs, main_pid);
            procs
                .iter()
                .filter(|p| p.is_live() && is_smbd_comm(&p.comm) && conns.contains(&p.ppid))
                .cloned()
                .collect()
        }
    }
}

/// Live helpers whose parent is the connection process `conn_pid`.
pub fn helpers_of(conn_pid: u32, main_pid: u32, kind: ModuleKind) -> Vec<Proc> {
    helpers(&snapshot(), main_pid, kind)
        .into_iter()
        .filter(|p| p.ppid == conn_pid)
        .collect()
}

/// Zombie helpers (exited, not yet reaped by their parent) under `conn_pid`.
pub fn zombie_helpers_of(conn_pid: u32, kind: ModuleKind) -> Vec<Proc> {
    let is_helper = |comm: &str| match kind {
        ModuleKind::Rust => comm == HELPER_COMM,
        ModuleKind::SambaC => is_smbd_comm(comm),
    };
    snapshot()
        .into_iter()
        .filter(|p| !p.is_live() && p.ppid == conn_pid && is_helper(&p.comm))
        .collect()
}

/// What a [`HelperSampler`] saw.
#[derive(Clone, Debug, Default)]
pub struct SamplerReport {
    /// Most live helpers seen at one instant.
    pub max_live: usize,
    /// Every helper pid seen.
    pub distinct: BTreeSet<u32>,
    /// Parent pids of the helpers seen.
    pub parents: BTreeSet<u32>,
    /// Helpers seen whose parent was a live process other than a connection smbd.
    pub misparented: BTreeSet<u32>,
    pub samples: usize,
}

/// Polls /proc on a thread while a workload runs, to see helpers that may be gone
/// by the time the workload ends.
pub struct HelperSampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<SamplerReport>,
}

impl HelperSampler {
    /// Samples helpers of `kind` every `interval`; with `conn_pid`, only that
    /// connection's.
    pub fn start(
        main_pid: u32,
        kind: ModuleKind,
        conn_pid: Option<u32>,
        interval: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut report = SamplerReport::default();
            while !flag.load(Ordering::Relaxed) {
                sample_once(&mut report, main_pid, kind, conn_pid);
                thread::sleep(interval);
            }
            sample_once(&mut report, main_pid, kind, conn_pid);
            report
        });
        HelperSampler { stop, handle }
    }

    pub fn finish(self) -> SamplerReport {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("helper sampler thread panicked")
    }
}

fn sample_once(report: &mut SamplerReport, main_pid: u32, kind: ModuleKind, conn: Option<u32>) {
    let snap = snapshot();
    let conns = connection_pids(&snap, main_pid);
    let found: Vec<Proc> = helpers(&snap, main_pid, kind)
        .into_iter()
        .filter(|p| conn.map_or(true, |c| p.ppid == c))
        .collect();
    report.max_live = report.max_live.max(found.len());
    for helper in &found {
        report.distinct.insert(helper.pid);
        report.parents.insert(helper.ppid);
        if is_misparented(helper, &snap, &conns) {
            report.misparented.insert(helper.pid);
        }
    }
    report.samples += 1;
}

/// A helper whose live parent is not a connection smbd. A helper whose connection
/// process has just exited (a zombie, or reparented to the namespace's init, PID 1)
/// is on its way out, not misplaced; one that stays is caught by `Smbd::wait_idle`.
fn is_misparented(helper: &Proc, snap: &[Proc], conns: &[u32]) -> bool {
    let parent_live = snap.iter().any(|p| p.pid == helper.ppid && p.is_live());
    parent_live && helper.ppid != 1 && !conns.contains(&helper.ppid)
}

/// The live module processes (helpers and zygotes) of `main_pid`'s connections in `procs`
/// (a [`snapshot`], which reports a zygote-born helper as its connection's child).
pub fn module_processes(procs: &[Proc], main_pid: u32) -> Vec<Proc> {
    let conns = connection_pids(procs, main_pid);
    procs
        .iter()
        .filter(|p| {
            p.is_live()
                && (p.comm == HELPER_COMM || p.comm == ZYGOTE_COMM)
                && conns.contains(&p.ppid)
        })
        .cloned()
        .collect()
}

/// The module's helpers in uninterruptible sleep (waiting in the kernel).
pub fn helpers_in_d() -> Vec<u32> {
    snapshot()
        .into_iter()
        .filter(|p| p.comm == HELPER_COMM && p.state == 'D')
        .map(|p| p.pid)
        .collect()
}
