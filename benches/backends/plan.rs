//! Sizes, client counts, repeats and durations of one benchmark run (`--quick`: the
//! same phases and functions with smaller numbers), and an estimate of how long the
//! run takes.

use std::fmt::Write as _;
use std::time::Duration;

use crate::backends::{BACKENDS, XFS_BACKENDS};

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

pub struct Plan {
    pub quick: bool,
    /// The file of the sequential transfers and of the streaming reads.
    pub seq_size: u64,
    pub rand_size: u64,
    pub sync_size: u64,
    /// The file every client of the memory scenario gets whole.
    pub mem_file_size: u64,
    pub small_request: u64,
    pub large_request: u64,
    /// Client counts of the scaling curves.
    pub clients: Vec<usize>,
    /// Time per smbload run.
    pub duration: Duration,
    /// Repeats of the 4 KiB random runs (and the XFS and fsync runs).
    pub random_repeats: usize,
    /// Repeats of the long sequential runs (smbclient transfers, streaming reads).
    pub seq_repeats: usize,
    /// The first this many repeats of the scaling runs also measure idle memory (the
    /// clients stay connected `settle` longer).
    pub idle_repeats: usize,
    /// How long after a run idle memory is sampled.
    pub settle: Duration,
    pub fsync_clients: usize,
    pub mem_clients: Vec<usize>,
    pub mem_repeats: usize,
    pub xfs_clients: Vec<usize>,
    pub xfs_image: u64,
    /// smbd sizes (extra MiB) at which helper spawning is timed.
    pub ballast_mib: Vec<u64>,
    /// New connections timed per backend and size.
    pub fork_probes: usize,
    pub drop_caches: bool,
    /// Interval of the memory sampler during runs.
    pub sample_interval: Duration,
}

impl Plan {
    pub fn new(quick: bool, repeats: Option<usize>, drop_caches: bool) -> Plan {
        let mut plan = if quick {
            Plan {
                quick,
                seq_size: 128 * MIB,
                rand_size: 32 * MIB,
                sync_size: 16 * MIB,
                mem_file_size: 16 * MIB,
                small_request: 4096,
                large_request: 8 * MIB,
                clients: vec![1, 8],
                duration: Duration::from_millis(600),
                random_repeats: 3,
                seq_repeats: 2,
                idle_repeats: 1,
                // Past the module's quiet time (1 s), after which it gives its heap back.
                settle: Duration::from_millis(1500),
                fsync_clients: 4,
                mem_clients: vec![4],
                mem_repeats: 2,
                xfs_clients: vec![8],
                xfs_image: GIB,
                ballast_mib: vec![0, 256],
                fork_probes: 2,
                drop_caches,
                sample_interval: Duration::from_millis(200),
            }
        } else {
            Plan {
                quick,
                seq_size: GIB,
                rand_size: 256 * MIB,
                // fsync-heavy load is bound by the disk's flushes, not the file size.
                sync_size: 64 * MIB,
                mem_file_size: 64 * MIB,
                small_request: 4096,
                large_request: 8 * MIB,
                clients: vec![1, 4, 16, 64],
                duration: Duration::from_secs(3),
                random_repeats: 5,
                seq_repeats: 3,
                idle_repeats: 1,
                settle: Duration::from_secs(2),
                fsync_clients: 8,
                mem_clients: vec![16, 32],
                mem_repeats: 3,
                xfs_clients: vec![1, 16],
                // seq.bin, a put of it, a rand.bin per share: with room.
                xfs_image: 4 * GIB,
                ballast_mib: vec![0, 512, 2048],
                fork_probes: 5,
                drop_caches,
                sample_interval: Duration::from_millis(250),
            }
        };
        if let Some(n) = repeats {
            plan.random_repeats = n;
            plan.seq_repeats = n;
            plan.mem_repeats = n;
        }
        plan
    }

    /// What will run, with the estimate, for the start of the output.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let secs = self.duration.as_secs_f64();
        let _ = writeln!(
            out,
            "plan{}: {} backends, interleaved (each repeat runs every backend once, order \
             rotated per repeat)",
            if self.quick { " (--quick)" } else { "" },
            BACKENDS.len()
        );
        let _ = writeln!(
            out,
            "  transfers: smbclient get (cached, and cold: page cache dropped before) and put \
             of a {} MiB file, with 8 MiB, 1 MiB and 128 KiB requests, {} repeats",
            self.seq_size / MIB,
            self.seq_repeats
        );
        let _ = writeln!(
            out,
            "  scaling: clients {:?}, {secs:.1} s per run: 4 KiB random reads, writes and \
             both mixed of a cached {} MiB file x{} repeats, 8 MiB streaming reads of the {} \
             MiB file x{}; idle memory in the first {} repeat(s)",
            self.clients,
            self.rand_size / MIB,
            self.random_repeats,
            self.seq_size / MIB,
            self.seq_repeats,
            self.idle_repeats
        );
        let _ = writeln!(
            out,
            "  fsync: {} clients, 4 KiB writes on sync-always shares x{}",
            self.fsync_clients, self.random_repeats
        );
        let _ = writeln!(
            out,
            "  memory: clients {:?} (libsmbclient, then smbclient sessions) each read a cached \
             {} MiB file whole (8 MiB requests), idle sample {:.1} s later x{}",
            self.mem_clients,
            self.mem_file_size / MIB,
            self.settle.as_secs_f64(),
            self.mem_repeats
        );
        let _ = writeln!(
            out,
            "  XFS: {:?} on a loop-mounted {} MiB XFS image, clients {:?}, 4 KiB random \
             reads/writes x{}; put and cold get, 8 MiB requests",
            XFS_BACKENDS,
            self.xfs_image / MIB,
            self.xfs_clients,
            self.random_repeats
        );
        let _ = writeln!(
            out,
            "  fork cost: smbd ballast {:?} MiB, {} probes",
            self.ballast_mib, self.fork_probes
        );
        let est = self.estimate();
        let _ = write!(
            out,
            "  estimated run time: {:.0} min ({:.0} s)",
            est.as_secs_f64() / 60.0,
            est.as_secs_f64()
        );
        out
    }

    /// Rough wall-clock time of the whole plan on the 2-core machine it was tuned on:
    /// each smbload run costs its duration plus setup (start, connect, wait for smbd
    /// to be idle, sync), which grows with clients.
    pub fn estimate(&self) -> Duration {
        let backends = BACKENDS.len() as f64;
        let secs = self.duration.as_secs_f64();
        let run = |clients: usize, hold: bool| {
            secs + RUN_OVERHEAD_S
                + CONNECT_S * clients as f64
                + if hold { self.settle.as_secs_f64() } else { 0.0 }
        };
        let mut total = SETUP_S + self.seq_size as f64 / MIB as f64 / FILE_WRITE_MIB_S * 1.5;
        // Transfers: warm get, put and cold get with 8 MiB requests, cold get and put with
        // 1 MiB, get and put with 128 KiB (each with a cache drop or pre-read); put and
        // cold get on XFS.
        let transfer = self.seq_size as f64 / MIB as f64 / TRANSFER_MIB_S + TRANSFER_OVERHEAD_S;
        // Five of the seven (and both on XFS) drop the page cache and let it settle.
        let settle = if self.drop_caches {
            FREE_MEMORY_SETTLE_S
        } else {
            0.0
        };
        total += backends * self.seq_repeats as f64 * (7.0 * transfer + 5.0 * settle);
        total += 2.0 * XFS_BACKENDS.len() as f64 * self.seq_repeats as f64 * (transfer + settle);
        for &c in &self.clients {
            let reps = |n: usize| {
                let held = n.min(self.idle_repeats) as f64;
                held * run(c, true) + (n as f64 - held) * run(c, false)
            };
            total += backends * (3.0 * reps(self.random_repeats) + reps(self.seq_repeats));
        }
        total += backends * self.random_repeats as f64 * run(self.fsync_clients, false);
        for &c in &self.mem_clients {
            let read = (c as u64 * self.mem_file_size) as f64 / MIB as f64 / TRANSFER_MIB_S;
            // libsmbclient clients, then smbclient sessions (slower to connect).
            let sessions = read + self.settle.as_secs_f64() + SESSION_S * c as f64;
            total += backends * self.mem_repeats as f64 * (read + run(c, true) - secs + sessions);
        }
        for &c in &self.xfs_clients {
            total += 2.0 * XFS_BACKENDS.len() as f64 * self.random_repeats as f64 * run(c, false);
        }
        let fork_backends = 3.0;
        let probe = FORK_PROBE_S + RUN_OVERHEAD_S + CONNECT_S;
        total += self.ballast_mib.len() as f64
            * (SMBD_START_S + self.fork_probes as f64 * fork_backends * probe);
        Duration::from_secs_f64(total)
    }
}

// Calibrated on the 2-core Debian 12 machine (see README): per-run setup, per-client
// connection cost, transfer rates.
const RUN_OVERHEAD_S: f64 = 0.2;
const CONNECT_S: f64 = 0.03;
const TRANSFER_MIB_S: f64 = 400.0;
const TRANSFER_OVERHEAD_S: f64 = 0.3;
/// The wait after a page-cache drop on a VM with free page reporting (pagecache.rs).
const FREE_MEMORY_SETTLE_S: f64 = 3.0;
const FILE_WRITE_MIB_S: f64 = 300.0;
const SETUP_S: f64 = 10.0;
const SMBD_START_S: f64 = 2.0;
/// An smbclient session's start (process, connect, authenticate).
const SESSION_S: f64 = 0.1;
/// A fork-cost probe runs this long (phases.rs).
const FORK_PROBE_S: f64 = 0.3;
