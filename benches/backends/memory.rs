//! What the server side costs in memory: the proportional set size (PSS) of smbd and
//! every process below it (connection processes, helpers, zygotes), summed.
//!
//! PSS splits each shared page among the processes mapping it, so the sum over a tree
//! counts every page once: a helper's share of smbd's copy-on-write pages and of its
//! shared buffer is counted, and pages shared by all connection processes are not
//! counted many times over (an RSS sum would be).

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::common::module::ModuleKind;
use crate::common::procs::{self, Proc};

/// The smbd tree at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TreeMemory {
    pub pss_kib: u64,
    /// smbd and all its live descendants.
    pub processes: usize,
    /// Of those, the backend's helper processes (zygotes not counted).
    pub helpers: usize,
}

impl TreeMemory {
    pub fn pss_mib(&self) -> f64 {
        self.pss_kib as f64 / 1024.0
    }
}

/// smbd (`root`) and every live process below it.
fn tree(snapshot: &[Proc], root: u32) -> Vec<u32> {
    let mut members = vec![root];
    let mut i = 0;
    while i < members.len() {
        let parent = members[i];
        let children: Vec<u32> = snapshot
            .iter()
            .filter(|p| p.ppid == parent && p.is_live() && !members.contains(&p.pid))
            .map(|p| p.pid)
            .collect();
        members.extend(children);
        i += 1;
    }
    members
}

/// Sums the tree's PSS now. `kind`: which helpers to count (none for backends without).
pub fn sample(root: u32, kind: Option<ModuleKind>) -> TreeMemory {
    let snapshot = procs::snapshot();
    let members = tree(&snapshot, root);
    let helpers = kind.map_or(0, |k| {
        procs::helpers(&snapshot, root, k)
            .iter()
            .filter(|h| members.contains(&h.pid))
            .count()
    });
    TreeMemory {
        // A process that exits between the scan and its read adds nothing.
        pss_kib: members.iter().filter_map(|&pid| pss_kib(pid)).sum(),
        processes: members.len(),
        helpers,
    }
}

fn pss_kib(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Samples the tree on a thread of its own until stopped; keeps the sample with the
/// highest PSS. (Reading smaps_rollup costs the reader, not smbd: the server's CPU
/// figures do not include it.)
pub struct PeakSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<Mutex<TreeMemory>>,
    thread: Option<JoinHandle<()>>,
}

impl PeakSampler {
    pub fn start(root: u32, kind: Option<ModuleKind>, interval: Duration) -> PeakSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(Mutex::new(TreeMemory::default()));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            thread::spawn(move || loop {
                let now = sample(root, kind);
                {
                    let mut best = peak.lock().expect("peak lock");
                    if now.pss_kib > best.pss_kib {
                        *best = now;
                    }
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                thread::sleep(interval);
            })
        };
        PeakSampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    /// Stops sampling (after one last sample) and returns the peak seen.
    pub fn finish(mut self) -> TreeMemory {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        *self.peak.lock().expect("peak lock")
    }
}

impl Drop for PeakSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
