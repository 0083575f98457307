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

use std::io;

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
    // SAFETY: sched_getcpu takes no arguments.
    match unsafe { libc::sched_getcpu() } {
        cpu if cpu >= 0 => Cpus::One(cpu as usize),
        _ => Cpus::Any,
    }
}

impl Pinning {
    /// Moves helper `pid` to `want` unless it is there. A failure leaves it where it is:
    /// placement is only about speed.
    pub fn place(&mut self, pid: i32, want: Cpus, any: &libc::cpu_set_t) {
        if want == self.now {
            return;
        }
        match set(pid, want, any) {
            Ok(()) => self.now = want,
            Err(e) => tracing::debug!(pid, error = %e, ?want, "helper not moved"),
        }
    }
}

/// The CPUs the calling thread may run on.
pub fn allowed() -> libc::cpu_set_t {
    // SAFETY: an all-zero cpu_set_t is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: reads this thread's affinity into a set of the size given.
    let ok = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) } == 0;
    if !ok {
        // SAFETY: set is a valid cpu_set_t; every CPU the set can name.
        for cpu in 0..libc::CPU_SETSIZE as usize {
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
    }
    set
}

fn set(pid: i32, want: Cpus, any: &libc::cpu_set_t) -> io::Result<()> {
    let set = match want {
        Cpus::Any => *any,
        Cpus::One(cpu) => {
            // SAFETY: an all-zero cpu_set_t is a valid (empty) set.
            let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            // SAFETY: CPU_SET bounds-checks cpu against the set's size.
            unsafe { libc::CPU_SET(cpu, &mut one) };
            one
        }
    };
    // SAFETY: `pid` is a live helper of ours (its socket just took a request, and its pid
    // is not reused before its zygote reaps it); the set is a valid cpu_set_t.
    let rc = unsafe { libc::sched_setaffinity(pid, std::mem::size_of_val(&set), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn affinity_of(pid: i32) -> Vec<usize> {
        // SAFETY: an all-zero cpu_set_t is a valid (empty) set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: reads pid's affinity into a set of the size given.
        assert_eq!(
            unsafe { libc::sched_getaffinity(pid, std::mem::size_of_val(&set), &mut set) },
            0
        );
        // SAFETY: CPU_ISSET bounds-checks against the set's size.
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
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
