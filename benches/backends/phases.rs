//! The benchmark's phases, each in its own smbd or on its own shares: transfers (one
//! smbclient), scaling curves (1..64 smbload clients), fsync-heavy writes, the memory
//! scenario, the XFS shares, and the cost of forking helpers as smbd grows. Every
//! phase loops repeat → point → backends in a rotated order, so that each repeat
//! compares all backends under the same conditions.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::backends::{
    self, rotated, share_options, sync_share, xfs_share, Backend, BACKENDS, OUR_MODULE,
    XFS_BACKENDS,
};
use crate::common::data;
use crate::common::module::ModuleKind;
use crate::common::smbd::{Smbd, SmbdBuilder};
use crate::common::stats;
use crate::load::{self, RandomSpec};
use crate::plan::Plan;
use crate::report::{self, Metric};
use crate::runner::{Bench, LoadRun, Sources, Transfer, HELPER_SECTION, IDLE_TIMEOUT, PROBE_FILE};
use crate::workloads::*;
use crate::xfs::XfsMount;

/// Samba's C aio_fork fails requests above this; the capped config stays within it.
const CAPPED_REQUEST: &str = "131072";
/// The request size of the middle config.
const MID_REQUEST: &str = "1048576";
const PROBE_SIZE: u64 = 64 * 1024;
const FORK_SECTION: &str =
    "Fork cost as smbd grows (first 4 KiB write on a new connection: fork backends spawn a helper)";
/// A memory-scenario client that has not finished its file by then is stuck.
const MEM_RUN_LIMIT: Duration = Duration::from_secs(120);

impl Sources {
    pub fn create(dir: &Path, plan: &Plan) -> Sources {
        fs::create_dir_all(dir).expect("create data dir");
        let sources = Sources {
            seq: dir.join("seq.bin"),
            rand: dir.join("rand.bin"),
            sync: dir.join("sync.bin"),
            mem: dir.join("mem.bin"),
            probe: dir.join(PROBE_FILE),
        };
        data::write_random_file(&sources.seq, plan.seq_size, 1);
        data::write_random_file(&sources.rand, plan.rand_size, 2);
        data::write_random_file(&sources.sync, plan.sync_size, 3);
        data::write_random_file(&sources.mem, plan.mem_file_size, 5);
        data::write_random_file(&sources.probe, PROBE_SIZE, 4);
        sources
    }
}

/// The read-only file is shared by a hard link; files that get written are copies,
/// so one backend's writes never land in (or get flushed for) another's file.
fn stage(share_dir: &Path, read_only: &[&Path], written: &[&Path]) {
    fs::create_dir_all(share_dir).expect("create share dir");
    for src in read_only {
        let dst = share_dir.join(src.file_name().expect("file name"));
        if fs::hard_link(src, &dst).is_err() {
            fs::copy(src, &dst).expect("copy read-only source");
        }
    }
    for src in written {
        fs::copy(src, share_dir.join(src.file_name().expect("file name"))).expect("copy source");
    }
}

impl Bench {
    /// smbd with SMB2's default maximum request size (8 MiB): transfers, scaling
    /// curves, fsync, memory scenario and (if it could be mounted) the XFS shares.
    pub fn default_config(&mut self, dir: &Path) {
        let xfs = self.mount_xfs();
        let mut builder = SmbdBuilder::without_shares(dir);
        for b in &BACKENDS {
            builder = builder.share(b.name, &share_options(b, false));
            builder = builder.share(&sync_share(b), &share_options(b, true));
        }
        if let Some(mount) = &xfs {
            for name in XFS_BACKENDS {
                let b = backends::by_name(name);
                let share = xfs_share(b);
                let path = mount.dir.join(&share).display().to_string();
                let mut options = share_options(b, false);
                // A later `path` in the section replaces the default one.
                let path: &'static str = Box::leak(path.into_boxed_str());
                options.push(("path", path));
                builder = builder.share(&share, &options);
            }
        }
        let smbd = builder.start();
        let s = &self.sources;
        for b in &BACKENDS {
            stage(
                &smbd.share_path(b.name),
                &[&s.seq, &s.mem, &s.probe],
                &[&s.rand],
            );
            stage(&smbd.share_path(&sync_share(b)), &[&s.probe], &[&s.sync]);
        }
        if let Some(mount) = &xfs {
            // Copies: a hard link cannot cross file systems. The read-only file once, then
            // linked into each share.
            let seq = mount.dir.join(s.seq.file_name().expect("file name"));
            fs::copy(&s.seq, &seq).expect("copy the sequential file to XFS");
            for name in XFS_BACKENDS {
                let share = xfs_share(backends::by_name(name));
                stage(&mount.dir.join(&share), &[&seq], &[&s.probe, &s.rand]);
            }
        }
        // Write the copies back now, not during the measurements.
        // SAFETY: sync(2) has no preconditions.
        unsafe { libc::sync() };
        let all = [
            SEQ_READ,
            SEQ_WRITE,
            COLD_READ,
            RAND_READ,
            RAND_WRITE,
            MIXED,
            STREAM_READ,
            MEM_GET,
            MEM_SMBCLIENT,
        ];
        self.check_backends(&smbd, &|b| Some(b.name.to_string()), &all);
        self.check_backends(&smbd, &|b| Some(sync_share(b)), &[FSYNC_WRITE]);
        if xfs.is_some() {
            let xfs_share_of = |b: &Backend| XFS_BACKENDS.contains(&b.name).then(|| xfs_share(b));
            let xfs_all = [XFS_RAND_READ, XFS_RAND_WRITE, XFS_SEQ_WRITE, XFS_COLD_READ];
            self.check_backends(&smbd, &xfs_share_of, &xfs_all);
        }
        self.warm_up(&smbd);

        self.progress("phase: transfers (8 MiB requests)");
        let transfers = [
            (SEQ_READ, Transfer::WarmRead),
            (SEQ_WRITE, Transfer::Write),
            (COLD_READ, Transfer::ColdRead),
        ];
        self.transfers(
            &smbd,
            &BACKENDS.iter().collect::<Vec<_>>(),
            &transfers,
            |b| b.name.to_string(),
        );
        self.progress("phase: scaling curves");
        self.scaling(&smbd);
        self.progress("phase: fsync-heavy writes");
        self.fsync(&smbd);
        self.progress("phase: memory scenario");
        self.memory_scenario(&smbd);
        self.memory_smbclient(&smbd);
        if xfs.is_some() {
            self.progress("phase: XFS shares");
            self.xfs_runs(&smbd);
            let xfs: Vec<&Backend> = XFS_BACKENDS.iter().map(|n| backends::by_name(n)).collect();
            let transfers = [
                (XFS_SEQ_WRITE, Transfer::Write),
                (XFS_COLD_READ, Transfer::ColdRead),
            ];
            self.transfers(&smbd, &xfs, &transfers, xfs_share);
        }
        self.note_module_stats(&smbd);
        drop(smbd);
        drop(xfs);
    }

    /// The XFS image, or None with the XFS workloads marked unavailable.
    fn mount_xfs(&mut self) -> Option<XfsMount> {
        let image = self.scratch.join("xfs.img");
        let dir = self.scratch.join("xfs");
        match XfsMount::create(&image, &dir, self.plan.xfs_image) {
            Ok(m) => Some(m),
            Err(why) => {
                self.progress(&format!("XFS share unavailable: {why}"));
                for name in XFS_BACKENDS {
                    for w in [XFS_RAND_READ, XFS_RAND_WRITE] {
                        self.results
                            .set_unavailable(w, backends::by_name(name).name, why.clone());
                    }
                }
                None
            }
        }
    }

    /// smbclient gets and puts (`transfers`: workload and kind), each backend once per
    /// repeat, on the share `share_of` names.
    fn transfers(
        &mut self,
        smbd: &Smbd,
        backends: &[&Backend],
        transfers: &[(&'static str, Transfer)],
        share_of: impl Fn(&Backend) -> String,
    ) {
        let cold = transfers.iter().any(|(_, t)| *t == Transfer::ColdRead);
        if cold && !self.plan.drop_caches {
            for (w, _) in transfers.iter().filter(|(_, t)| *t == Transfer::ColdRead) {
                for b in backends {
                    let why = "--no-drop-caches: a cold read needs the page cache dropped";
                    self.results.set_unavailable(w, b.name, why.to_string());
                }
            }
        }
        for rep in 0..self.plan.seq_repeats {
            for b in rotated(backends, rep) {
                for &(workload, kind) in transfers {
                    self.transfer_run(smbd, b, &share_of(b), workload, kind, rep);
                }
            }
        }
    }

    /// The scaling curves: every workload at every client count, all interleaved
    /// within each repeat.
    fn scaling(&mut self, smbd: &Smbd) {
        let plan = &self.plan;
        let (rand, seq) = (self.sources.rand.clone(), self.sources.seq.clone());
        let workloads: [(&'static str, &str, &str, u64, usize, &Path); 4] = [
            (
                RAND_READ,
                "randread",
                "rand.bin",
                plan.small_request,
                plan.random_repeats,
                &rand,
            ),
            (
                RAND_WRITE,
                "randwrite",
                "rand.bin",
                plan.small_request,
                plan.random_repeats,
                &rand,
            ),
            (
                MIXED,
                "randrw",
                "rand.bin",
                plan.small_request,
                plan.random_repeats,
                &rand,
            ),
            (
                STREAM_READ,
                "seqread",
                "seq.bin",
                plan.large_request,
                plan.seq_repeats,
                &seq,
            ),
        ];
        let points = plan.clients.clone();
        let top = points.last().copied().unwrap_or(1);
        let repeats = plan.random_repeats.max(plan.seq_repeats);
        let (duration, idle_repeats) = (plan.duration, plan.idle_repeats);
        for rep in 0..repeats {
            for (workload, mode, file, request_size, reps, source) in workloads {
                if rep >= reps {
                    continue;
                }
                for (i, &clients) in points.iter().enumerate() {
                    // The share's copy of rand.bin (written by the write runs) is what
                    // must be cached, not the source.
                    let warm_of = |b: &Backend| {
                        if mode == "seqread" {
                            source.to_path_buf()
                        } else {
                            smbd.share_path(b.name).join(file)
                        }
                    };
                    let warm: Vec<PathBuf> = BACKENDS.iter().map(warm_of).collect();
                    let run = |at: usize| LoadRun {
                        backend: &BACKENDS[at],
                        share: BACKENDS[at].name,
                        file,
                        workload,
                        mode,
                        request_size,
                        clients,
                        duration,
                        rep,
                        max_bytes: None,
                        idle: rep < idle_repeats,
                        warm: Some(&warm[at]),
                        look_at_helpers: clients == top && mode != "seqread",
                    };
                    let all: Vec<usize> = (0..BACKENDS.len()).collect();
                    let plain = BACKENDS.iter().position(|b| b.name == report::REFERENCE);
                    self.untimed_load(smbd, &run(plain.expect("the plain backend")));
                    for at in rotated(&all, rep + i) {
                        self.load_run(smbd, &run(at));
                    }
                }
            }
        }
    }

    fn fsync(&mut self, smbd: &Smbd) {
        for rep in 0..self.plan.random_repeats {
            for b in rotated(&BACKENDS.iter().collect::<Vec<_>>(), rep) {
                let share = sync_share(b);
                let warm = smbd.share_path(&share).join("sync.bin");
                self.load_run(
                    smbd,
                    &LoadRun {
                        backend: b,
                        share: &share,
                        file: "sync.bin",
                        workload: FSYNC_WRITE,
                        mode: "randwrite",
                        request_size: self.plan.small_request,
                        clients: self.plan.fsync_clients,
                        duration: self.plan.duration,
                        rep,
                        max_bytes: None,
                        idle: false,
                        warm: Some(&warm),
                        look_at_helpers: false,
                    },
                );
            }
        }
    }

    /// N clients each read the cached file whole with 8 MiB requests, then stay
    /// connected: peak memory during, idle memory 2 s after.
    fn memory_scenario(&mut self, smbd: &Smbd) {
        let points = self.plan.mem_clients.clone();
        let mem = self.sources.mem.clone();
        for rep in 0..self.plan.mem_repeats {
            for (i, &clients) in points.iter().enumerate() {
                for b in rotated(&BACKENDS.iter().collect::<Vec<_>>(), rep + i) {
                    self.load_run(
                        smbd,
                        &LoadRun {
                            backend: b,
                            share: b.name,
                            file: "mem.bin",
                            workload: MEM_GET,
                            mode: "seqread",
                            request_size: self.plan.large_request,
                            clients,
                            duration: MEM_RUN_LIMIT,
                            rep,
                            max_bytes: Some(self.plan.mem_file_size),
                            idle: true,
                            warm: Some(&mem),
                            look_at_helpers: false,
                        },
                    );
                }
            }
        }
    }

    /// N smbclient sessions each get the cached file whole (8 MiB requests, two in
    /// flight), then stay connected: what an admin sees after a few users copied a file.
    fn memory_smbclient(&mut self, smbd: &Smbd) {
        let points = self.plan.mem_clients.clone();
        let mem = self.sources.mem.clone();
        for rep in 0..self.plan.mem_repeats {
            for (i, &clients) in points.iter().enumerate() {
                for b in rotated(&BACKENDS.iter().collect::<Vec<_>>(), rep + i) {
                    self.sessions_run(smbd, b, MEM_SMBCLIENT, "mem.bin", &mem, clients, rep);
                }
            }
        }
    }

    fn xfs_runs(&mut self, smbd: &Smbd) {
        let xfs: Vec<&Backend> = XFS_BACKENDS.iter().map(|n| backends::by_name(n)).collect();
        let points = self.plan.xfs_clients.clone();
        for rep in 0..self.plan.random_repeats {
            for (workload, mode) in [(XFS_RAND_READ, "randread"), (XFS_RAND_WRITE, "randwrite")] {
                for (i, &clients) in points.iter().enumerate() {
                    for b in rotated(&xfs, rep + i) {
                        let share = xfs_share(b);
                        let warm = self.share_dir(smbd, &share).join("rand.bin");
                        self.load_run(
                            smbd,
                            &LoadRun {
                                backend: b,
                                share: &share,
                                file: "rand.bin",
                                workload,
                                mode,
                                request_size: self.plan.small_request,
                                clients,
                                duration: self.plan.duration,
                                rep,
                                max_bytes: None,
                                idle: false,
                                warm: Some(&warm),
                                look_at_helpers: false,
                            },
                        );
                    }
                }
            }
        }
    }

    /// smbd with requests of at most 1 MiB (what many clients use): a cold get, with 16
    /// requests in flight, and a put.
    pub fn mid_config(&mut self, dir: &Path) {
        let transfers = [
            (COLD_READ_MID, Transfer::ColdRead),
            (SEQ_WRITE_MID, Transfer::Write),
        ];
        self.capped_transfers(dir, MID_REQUEST, "1 MiB", &transfers);
    }

    /// smbd with requests capped at 128 KiB, so Samba's C aio_fork can take part.
    pub fn capped_config(&mut self, dir: &Path) {
        let transfers = [
            (SEQ_READ_CAPPED, Transfer::WarmRead),
            (SEQ_WRITE_CAPPED, Transfer::Write),
        ];
        self.capped_transfers(dir, CAPPED_REQUEST, "128 KiB", &transfers);
    }

    /// The `transfers` on every backend, in an smbd whose requests are at most `request`
    /// bytes (`size`: the same, for people).
    fn capped_transfers(
        &mut self,
        dir: &Path,
        request: &str,
        size: &str,
        transfers: &[(&'static str, Transfer)],
    ) {
        let mut builder = SmbdBuilder::without_shares(dir)
            .global("smb2 max read", request)
            .global("smb2 max write", request)
            .global("smb2 max trans", request);
        for b in &BACKENDS {
            builder = builder.share(b.name, &share_options(b, false));
        }
        let smbd = builder.start();
        for b in &BACKENDS {
            let s = &self.sources;
            stage(&smbd.share_path(b.name), &[&s.seq, &s.probe], &[]);
        }
        let workloads: Vec<&'static str> = transfers.iter().map(|(w, _)| *w).collect();
        self.check_backends(&smbd, &|b| Some(b.name.to_string()), &workloads);
        self.progress(&format!("phase: transfers ({size} requests)"));
        self.transfers(
            &smbd,
            &BACKENDS.iter().collect::<Vec<_>>(),
            transfers,
            |b| b.name.to_string(),
        );
    }

    /// One untimed get and put on the plain share: the first transfers after smbd
    /// starts pay for things no later run does (first connection, first page-cache
    /// allocations), and would otherwise be charged to whichever backend runs first.
    fn warm_up(&self, smbd: &Smbd) {
        let put = format!("put {} warmup.bin", self.sources.seq.display());
        for command in ["get seq.bin /dev/null", put.as_str()] {
            let _ = load::smbclient_transfer(smbd, report::REFERENCE, command);
        }
        let _ = fs::remove_file(smbd.share_path(report::REFERENCE).join("warmup.bin"));
        smbd.wait_idle(IDLE_TIMEOUT);
        self.progress("warm-up done");
    }

    /// Per-request latency each helper-based backend adds to the plain share's
    /// (difference of medians) with one client, where nothing queues.
    pub fn added_latency(&mut self) {
        for b in BACKENDS.iter().filter(|b| b.helpers.is_some()) {
            for (workload, clients) in [
                (RAND_READ, 1),
                (RAND_WRITE, 1),
                (FSYNC_WRITE, self.plan.fsync_clients),
            ] {
                let p50 = |backend| {
                    self.results
                        .compare(workload, backend, clients, Metric::P50)
                };
                if let (Some(own), Some(plain)) = (p50(b.name), p50(report::REFERENCE)) {
                    let metric = format!("p50 latency minus plain's, {workload} ({clients} cl)");
                    let added = vec![own.own.median - plain.own.median];
                    self.add_extra(HELPER_SECTION, b.name, &metric, "us", added);
                }
            }
        }
    }

    /// How the cost of spawning a helper grows with smbd's size: smbd is made bigger
    /// with an LD_PRELOADed ballast (benches/c/ballast.c); on each new connection the
    /// first 4 KiB write makes a fork-based backend spawn its first helper, so its
    /// latency minus the median of the later writes is the spawn cost. (A write, not
    /// a read: our module serves cached reads without a helper.) The plain share
    /// shows what a first request costs without any fork.
    pub fn fork_cost(&mut self, dir: &Path, ballast: &Path) {
        let backends: Vec<&Backend> = BACKENDS
            .iter()
            // Variants (extra options) spawn helpers the same way: not timed again.
            .filter(|b| {
                b.name == report::REFERENCE || (b.helpers.is_some() && b.options.is_empty())
            })
            .collect();
        for &mib in &self.plan.ballast_mib.clone() {
            let mut builder = SmbdBuilder::without_shares(&dir.join(format!("{mib}")))
                .env("LD_PRELOAD", &ballast.display().to_string())
                .env("SMBD_BALLAST_MIB", &mib.to_string());
            for b in &backends {
                builder = builder.share(b.name, &share_options(b, false));
            }
            let smbd = builder.start();
            for b in &backends {
                stage(&smbd.share_path(b.name), &[&self.sources.probe], &[]);
            }
            let rss = vm_rss_mib(smbd.pid());
            self.progress(&format!(
                "fork cost: smbd with {mib} MiB ballast, RSS {rss} MiB"
            ));
            for _ in 0..self.plan.fork_probes {
                for b in &backends {
                    if self.results.is_unavailable(RAND_WRITE, b.name) {
                        continue;
                    }
                    let spec = RandomSpec {
                        smbload: &self.smbload,
                        share: b.name,
                        file: PROBE_FILE,
                        mode: "randwrite",
                        request_size: self.plan.small_request,
                        clients: 1,
                        duration: Duration::from_millis(300),
                        seed: 7,
                        max_bytes: None,
                        hold: None,
                        scratch: &self.scratch,
                    };
                    let result = load::run_random(&smbd, &spec, load::Hooks::default());
                    smbd.wait_idle(IDLE_TIMEOUT);
                    match result {
                        Ok(r) => {
                            let first = r.first_us.first().copied().unwrap_or(0) as f64;
                            let section = FORK_SECTION;
                            let rss_text = format!("smbd RSS {rss} MiB");
                            self.add_extra(
                                section,
                                b.name,
                                &format!("first request, {rss_text}"),
                                "us",
                                vec![first],
                            );
                            self.add_extra(
                                section,
                                b.name,
                                &format!("first minus later median, {rss_text}"),
                                "us",
                                vec![first - r.p50_us],
                            );
                        }
                        Err(why) => {
                            self.progress(&format!("fork cost {}: FAILED: {why}", b.name));
                        }
                    }
                }
            }
        }
    }

    /// Our module's own counters (its tree-disconnect stats lines): proof that its
    /// helpers served the I/O, and whether any request fell back to the next module
    /// (which would make its numbers partly another backend's).
    fn note_module_stats(&mut self, smbd: &Smbd) {
        let all = smbd.stats();
        let ours = BACKENDS
            .iter()
            .filter(|b| b.helpers == Some(ModuleKind::Rust));
        let mut shares: Vec<String> = ours
            .flat_map(|b| [b.name.to_string(), sync_share(b)])
            .collect();
        shares.push(xfs_share(backends::by_name(OUR_MODULE)));
        for share in shares {
            let t = stats::total_for(&all, &share);
            self.results.notes.push(format!(
                "{OUR_MODULE} counters, share {share}, all runs ({} tree connects): preads={} \
                 (inline={}) pwrites={} fsyncs={} helpers spawned={} retries={} fallbacks={} \
                 queue_max={}",
                t.lines,
                t.preads,
                t.other("inline_preads"),
                t.pwrites,
                t.fsyncs,
                t.spawned,
                t.retries,
                t.fallbacks,
                t.queue_max
            ));
        }
    }
}

/// Resident memory of a process, in MiB (0 if unknown).
fn vm_rss_mib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}
