//! CPU time of smbd and everything it started, and the private memory of helpers,
//! read from /proc of the benchmark's own PID namespace.
//!
//! Inside the namespace /proc shows only this program (PID 1), its clients, and smbd
//! with its children, so "smbd plus helpers" is: every process except this program
//! and the clients. A process that exits is counted through whoever reaps it: smbd
//! reaps its connection processes (their time moves into smbd's cutime/cstime), a
//! connection process reaps its helpers; a helper orphaned by its connection (Samba's
//! C module does not wait for its children) is re-parented to this program, PID 1,
//! which reaps it here and adds its rusage. So the sum below only grows, and the
//! difference of two samples is the CPU used in between.

use std::fs;

use crate::common::module::ModuleKind;
use crate::common::procs;

/// Client programs: their CPU is not the server's.
const CLIENT_COMMS: [&str; 2] = ["smbclient", "smbload"];

/// Running total of the server side's CPU time.
pub struct CpuMeter {
    /// Seconds of orphans reaped by this program so far.
    reaped: f64,
    /// Seconds per clock tick (the unit of /proc/<pid>/stat times).
    tick: f64,
}

impl CpuMeter {
    pub fn new() -> Self {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        CpuMeter {
            reaped: 0.0,
            tick: 1.0 / if hz > 0 { hz as f64 } else { 100.0 },
        }
    }

    /// Seconds of user+system CPU used so far by all server processes, dead or alive.
    /// `keep` are children of this program that must not be reaped here (smbd itself,
    /// whose `Child` the harness waits for).
    pub fn sample(&mut self, keep: &[u32]) -> f64 {
        self.reap_orphans(keep);
        let me = std::process::id();
        let mut ticks: u64 = 0;
        for pid in proc_pids() {
            if pid == me {
                continue;
            }
            let Some(stat) = read_stat(pid) else {
                continue;
            };
            if CLIENT_COMMS.contains(&stat.comm.as_str()) {
                continue;
            }
            ticks += stat.utime + stat.stime + stat.cutime + stat.cstime;
        }
        ticks as f64 * self.tick + self.reaped
    }

    /// Reaps zombies re-parented to this program (orphaned helpers) and adds their
    /// CPU time; also stops them piling up, since PID 1 must reap what it inherits.
    fn reap_orphans(&mut self, keep: &[u32]) {
        let me = std::process::id();
        for proc in procs::snapshot() {
            if proc.ppid != me || proc.is_live() || keep.contains(&proc.pid) {
                continue;
            }
            let mut status = 0;
            // SAFETY: an all-zero rusage is a valid value of this plain C struct.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: wait4 writes only to the two pointers, both valid for writes.
            let rc = unsafe {
                libc::wait4(
                    proc.pid as libc::pid_t,
                    &mut status,
                    libc::WNOHANG,
                    &mut usage,
                )
            };
            if rc == proc.pid as libc::pid_t {
                self.reaped += timeval_secs(usage.ru_utime) + timeval_secs(usage.ru_stime);
            }
        }
    }
}

fn timeval_secs(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6
}

fn proc_pids() -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .collect()
}

/// The fields of /proc/<pid>/stat used here.
struct Stat {
    comm: String,
    ppid: u32,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
}

fn read_stat(pid: u32) -> Option<Stat> {
    read_stat_path(&format!("/proc/{pid}/stat"))
}

fn read_stat_path(path: &str) -> Option<Stat> {
    let text = fs::read_to_string(path).ok()?;
    // comm may hold spaces and parentheses: it ends at the last ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    // After ')': field 3 (state) is index 0, so field N is index N - 3.
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { rest.get(n - 3)?.parse().ok() };
    Some(Stat {
        comm,
        ppid: rest.get(1)?.parse().ok()?,
        utime: field(14)?,
        stime: field(15)?,
        cutime: field(16)?,
        cstime: field(17)?,
    })
}

/// Where a connection's CPU time went: its smbd process (every thread), of that its main
/// thread (the one that receives every request and sends every reply), and the processes
/// below it (helpers, zygotes: those alive now and those it or they reaped), in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ConnCpu {
    pub process: f64,
    pub main: f64,
    pub helpers: f64,
}

impl std::ops::Sub for ConnCpu {
    type Output = ConnCpu;
    fn sub(self, rhs: ConnCpu) -> ConnCpu {
        ConnCpu {
            process: self.process - rhs.process,
            main: self.main - rhs.main,
            helpers: self.helpers - rhs.helpers,
        }
    }
}

/// CPU time used so far by each live connection process of the smbd `main_pid`.
pub fn connections(main_pid: u32) -> Vec<(u32, ConnCpu)> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let tick = 1.0 / if hz > 0 { hz as f64 } else { 100.0 };
    let stats: Vec<(u32, Stat)> = proc_pids()
        .into_iter()
        .filter_map(|pid| Some((pid, read_stat(pid)?)))
        .collect();
    let below = |root: u32| -> u64 {
        let mut members = vec![root];
        let mut ticks = 0;
        let mut i = 0;
        while i < members.len() {
            let parent = members[i];
            for (pid, st) in stats.iter().filter(|(_, st)| st.ppid == parent) {
                members.push(*pid);
                ticks += st.utime + st.stime + st.cutime + st.cstime;
            }
            i += 1;
        }
        ticks
    };
    stats
        .iter()
        .filter(|(_, st)| st.ppid == main_pid && procs::is_smbd_comm(&st.comm))
        .map(|(pid, st)| {
            let main = read_stat_path(&format!("/proc/{pid}/task/{pid}/stat"))
                .map_or(0, |t| t.utime + t.stime);
            let cpu = ConnCpu {
                process: (st.utime + st.stime) as f64 * tick,
                main: main as f64 * tick,
                helpers: (below(*pid) + st.cutime + st.cstime) as f64 * tick,
            };
            (*pid, cpu)
        })
        .collect()
}

/// What the connections of `now` used since `before` (a connection new since then counts
/// from zero); connections gone meanwhile are not counted, so the caller keeps them open.
pub fn used_since(before: &[(u32, ConnCpu)], now: &[(u32, ConnCpu)]) -> ConnCpu {
    let mut total = ConnCpu::default();
    for (pid, cpu) in now {
        let start = before
            .iter()
            .find(|(p, _)| p == pid)
            .map_or(ConnCpu::default(), |(_, c)| *c);
        let d = *cpu - start;
        total.process += d.process;
        total.main += d.main;
        total.helpers += d.helpers;
    }
    total
}

/// Private_Dirty (KiB) of each live helper process now: memory a helper holds for
/// itself alone, i.e. what each extra helper costs. Rust helpers are found by their
/// comm, the C module's as smbd children of a connection process.
pub fn helper_private_dirty_kib(main_pid: u32, kind: ModuleKind) -> Vec<u64> {
    procs::helpers(&procs::snapshot(), main_pid, kind)
        .iter()
        .filter_map(|p| private_dirty_kib(p.pid))
        .collect()
}

fn private_dirty_kib(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Private_Dirty:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
