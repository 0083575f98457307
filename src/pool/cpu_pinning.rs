//! Which CPUs a helper may run on: smbd's own CPU while it serves a connection's only
//! small request, every CPU smbd may use otherwise.
//!
//! Waking a task on an idle CPU is slow where idle CPUs sleep deeply. A virtual machine's
//! idle vCPU is halted in its host: on a 2-vCPU guest, a request/reply round trip between
//! two processes over a socket pair took 9 us when both ran on one vCPU and 55 to 90 us
//! across two. The kernel wakes a helper on an idle CPU whenever there is one. A 4 KiB write
//! into the page cache takes a few microseconds, so such a request spent most of its time
//! in the two wake-ups, to the helper and back to smbd. Pinned to the CPU smbd's main thread
//! runs on, the helper runs as soon as smbd waits for its next event, and its reply wakes
//! smbd on the same CPU.
//!
//! A large request, or one among others in flight on the connection, lets the helper run
//! on any CPU: its copy or its I/O then runs beside smbd's work and the other helpers'.

use nix::sched::{sched_getaffinity, sched_getcpu, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// Requests up to this size are served by a pinned helper when they are alone.
pub const SMALL: usize = 256 << 10;

/// Where a helper may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cpus {
    /// Wherever smbd may run (its affinity when the pool started).
    Any,
    /// On this CPU only.
    One(usize),
}

/// A helper's current placement, changed only when a request wants another.
#[derive(Debug)]
pub struct Pinning {
    now: Cpus,
}

impl Default for Pinning {
    /// A new helper inherits its zygote's affinity, which is smbd's.
    fn default() -> Pinning {
        Pinning { now: Cpus::Any }
    }
}

/// Where the helper serving a request of `len` bytes should run; `alone`: no other request
/// of the connection is in a helper.
pub fn wanted(len: usize, alone: bool) -> Cpus {
    if len > SMALL || !alone {
        return Cpus::Any;
    }
    sched_getcpu().map_or(Cpus::Any, Cpus::One)
}

impl Pinning {
    /// Moves helper `pid` to `want` unless it is there. A failure leaves it where it is:
    /// placement is only about speed.
    pub fn place(&mut self, pid: i32, want: Cpus, any: &CpuSet) {
        if want == self.now {
            return;
        }
        match set(pid, want, any) {
            Ok(()) => self.now = want,
            Err(e) => tracing::debug!(pid, error = %e, ?want, "helper not moved"),
        }
    }
}

/// The CPUs the calling thread may run on; every CPU a set can name if that is unknown.
pub fn allowed() -> CpuSet {
    sched_getaffinity(Pid::from_raw(0)).unwrap_or_else(|_| {
        let mut every = CpuSet::new();
        for cpu in 0..CpuSet::count() {
            let _ = every.set(cpu);
        }
        every
    })
}

/// `pid` is a live helper of ours: its socket just took a request, and its pid is not
/// reused before its zygote reaps it.
fn set(pid: i32, want: Cpus, any: &CpuSet) -> nix::Result<()> {
    let set = match want {
        Cpus::Any => *any,
        Cpus::One(cpu) => {
            let mut one = CpuSet::new();
            one.set(cpu)?;
            one
        }
    };
    sched_setaffinity(Pid::from_raw(pid), &set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn affinity_of(pid: i32) -> Vec<usize> {
        let set = sched_getaffinity(Pid::from_raw(pid)).unwrap();
        (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap())
            .collect()
    }

    #[test]
    fn a_lone_small_request_pins_to_this_cpu_anything_else_frees() {
        assert!(matches!(wanted(4096, true), Cpus::One(_)));
        assert_eq!(wanted(4096, false), Cpus::Any);
        assert_eq!(wanted(SMALL + 1, true), Cpus::Any);
    }

    #[test]
    fn a_process_is_pinned_and_freed_again() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let any = allowed();
        let all = affinity_of(pid);
        let mut p = Pinning::default();
        let cpu = *all.last().unwrap();
        p.place(pid, Cpus::One(cpu), &any);
        assert_eq!(affinity_of(pid), [cpu]);
        assert_eq!(p.now, Cpus::One(cpu));
        p.place(pid, Cpus::Any, &any);
        assert_eq!(affinity_of(pid), all);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
