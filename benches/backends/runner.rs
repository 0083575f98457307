//! One measured run at a time: a smbclient transfer or a group of smbload clients on
//! one share, with the server's CPU and memory measured around it and the page cache
//! prepared before it; the result goes into [`Results`].

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::backends::{Backend, BACKENDS};
use crate::common::client;
use crate::common::smbd::Smbd;
use crate::cpu::{self, CpuMeter};
use crate::load::{self, RandomSpec};
use crate::memory::{self, PeakSampler, TreeMemory};
use crate::pagecache;
use crate::plan::{Plan, GIB, MIB};
use crate::report::{Extra, Results, Run};

/// After a run, smbd must be back to no connections within this.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The small file each share serves first, to tell whether its backend works at all.
pub const PROBE_FILE: &str = "probe.bin";
pub const HELPER_SECTION: &str =
    "Helper overhead (processes and memory sampled halfway through the random runs)";

pub struct Bench {
    pub plan: Plan,
    pub smbload: PathBuf,
    pub sources: Sources,
    pub results: Results,
    pub meter: CpuMeter,
    pub scratch: PathBuf,
    pub started: Instant,
}

/// Files every share gets a copy (or hard link) of.
pub struct Sources {
    pub seq: PathBuf,
    pub rand: PathBuf,
    pub sync: PathBuf,
    pub mem: PathBuf,
    pub probe: PathBuf,
}

/// What a group of smbload clients does in one run.
pub struct LoadRun<'a> {
    pub backend: &'a Backend,
    pub share: &'a str,
    pub file: &'a str,
    pub workload: &'static str,
    /// smbload's mode: randread, randwrite, seqread.
    pub mode: &'a str,
    pub request_size: u64,
    pub clients: usize,
    pub duration: Duration,
    pub rep: usize,
    /// Each client stops after this many bytes (the memory scenario: one whole file).
    pub max_bytes: Option<u64>,
    /// Sample idle memory `plan.settle` after the run, clients still connected.
    pub idle: bool,
    /// The local file the clients' file was staged from, read beforehand to be cached.
    pub warm: Option<&'a Path>,
    /// Look at the helpers halfway through (their count and private memory).
    pub look_at_helpers: bool,
}

impl Bench {
    pub fn progress(&self, text: &str) {
        println!("[{:>7.1?}] {text}", self.started.elapsed());
    }

    /// One smbclient get or put of the sequential file (`reading`: get).
    pub fn transfer_run(
        &mut self,
        smbd: &Smbd,
        b: &Backend,
        workload: &'static str,
        reading: bool,
        rep: usize,
    ) {
        if self.results.is_unavailable(workload, b.name) {
            return;
        }
        let remote_put = "put.bin";
        let command = if reading {
            "get seq.bin /dev/null".to_string()
        } else {
            format!("put {} {remote_put}", self.sources.seq.display())
        };
        pagecache::settle_writeback();
        if !reading && self.plan.drop_caches {
            if let Err(e) = pagecache::drop_page_cache() {
                self.note_once(format!("page cache not dropped: {e}"));
            }
        }
        // Both: the get serves it from cache, the put reads it as its local source.
        pagecache::warm(&self.sources.seq);
        let before = self.meter.sample(&[smbd.pid()]);
        let result = load::smbclient_transfer(smbd, b.name, &command);
        smbd.wait_idle(IDLE_TIMEOUT);
        let cpu = self.meter.sample(&[smbd.pid()]) - before;
        // smbclient can report a put as done whose writes failed (Samba's C aio_fork
        // with 8 MiB requests leaves an empty file): check what the server holds.
        let result = result.and_then(|mib_s| {
            if reading {
                return Ok(mib_s);
            }
            let path = smbd.share_path(b.name).join(remote_put);
            let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            // Deleting it drops its dirty pages: no writeback during later runs.
            let _ = fs::remove_file(&path);
            if size == self.plan.seq_size {
                Ok(mib_s)
            } else {
                Err(format!(
                    "put reported success but the server's file has {size} of {} bytes",
                    self.plan.seq_size
                ))
            }
        });
        match result {
            Ok(mib_s) => {
                let gib = self.plan.seq_size as f64 / GIB as f64;
                self.progress(&format!(
                    "rep {} {:<12} {workload:<16} {mib_s:8.1} MiB/s  cpu {:.2} s",
                    rep + 1,
                    b.name,
                    cpu
                ));
                let run = Run {
                    rep,
                    value: mib_s,
                    cpu: cpu / gib,
                    ..Run::default()
                };
                self.results.add_run(workload, b.name, 1, run);
            }
            Err(why) => self.failed(workload, b, rep, why),
        }
    }

    /// Several smbload clients at once on one share.
    pub fn load_run(&mut self, smbd: &Smbd, r: &LoadRun) {
        if self.results.is_unavailable(r.workload, r.backend.name) {
            return;
        }
        let spec = RandomSpec {
            smbload: &self.smbload,
            share: r.share,
            file: r.file,
            mode: r.mode,
            request_size: r.request_size,
            clients: r.clients,
            duration: r.duration,
            // The same offsets for every backend within one repeat.
            seed: 1000 * (r.rep as u64 + 1),
            max_bytes: r.max_bytes,
            hold: r.idle.then_some(self.plan.settle),
            scratch: &self.scratch,
        };
        pagecache::settle_writeback();
        if let Some(path) = r.warm {
            pagecache::warm(path);
        }
        let kind = r.backend.helpers;
        let mut helper_kib = Vec::new();
        let mut look = || {
            if let (Some(kind), true) = (kind, r.look_at_helpers) {
                helper_kib = cpu::helper_private_dirty_kib(smbd.pid(), kind);
            }
        };
        let mut sampler = None;
        let mut start_sampling = || {
            sampler = Some(PeakSampler::start(
                smbd.pid(),
                kind,
                self.plan.sample_interval,
            ))
        };
        let mut idle: Option<TreeMemory> = None;
        let mut sample_idle = || idle = Some(memory::sample(smbd.pid(), kind));
        let before = self.meter.sample(&[smbd.pid()]);
        let result = load::run_random(
            smbd,
            &spec,
            &mut start_sampling,
            &mut look,
            &mut sample_idle,
        );
        // The idle sample is a sample of the run too: the peak is never below it.
        let peak = sampler.map(PeakSampler::finish).map(|p| match idle {
            Some(i) if i.pss_kib > p.pss_kib => i,
            _ => p,
        });
        smbd.wait_idle(IDLE_TIMEOUT);
        let cpu = self.meter.sample(&[smbd.pid()]) - before;
        if r.mode == "randwrite" {
            // Flush this run's writes now rather than during a later run.
            let path = self.share_dir(smbd, r.share).join(r.file);
            if let Ok(f) = File::options().write(true).open(&path) {
                let _ = f.sync_all();
            }
        }
        let res = match result {
            Ok(res) => res,
            Err(why) => return self.failed(r.workload, r.backend, r.rep, why),
        };
        let streaming = r.request_size >= MIB;
        // Streaming: MiB/s and CPU s/GiB; small requests: ops/s and CPU us/op.
        let (value, cpu_per) = if streaming {
            let gib = res.ops as f64 * r.request_size as f64 / GIB as f64;
            (res.mib_per_s, if gib > 0.0 { cpu / gib } else { 0.0 })
        } else {
            let per_op = if res.ops > 0 {
                cpu * 1e6 / res.ops as f64
            } else {
                0.0
            };
            (res.ops_per_s, per_op)
        };
        let mib = |m: &TreeMemory| m.pss_mib();
        self.progress(&format!(
            "rep {} {:<12} {:<16} {:>3} cl {:9.1} {}  p50 {:.0} us  p99 {:.0} us  cpu {:.2}  \
             PSS peak {} MiB{}",
            r.rep + 1,
            r.backend.name,
            r.workload,
            r.clients,
            value,
            if streaming { "MiB/s" } else { "ops/s" },
            res.p50_us,
            res.p99_us,
            cpu_per,
            peak.as_ref()
                .map_or("-".to_string(), |m| format!("{:.0}", mib(m))),
            idle.as_ref().map_or(String::new(), |m| format!(
                ", idle {:.0} MiB ({} procs, {} helpers)",
                mib(m),
                m.processes,
                m.helpers
            ))
        ));
        let run = Run {
            rep: r.rep,
            value,
            cpu: cpu_per,
            p50_us: Some(res.p50_us),
            p99_us: Some(res.p99_us),
            pss_peak_mib: peak.as_ref().map(mib),
            pss_after_mib: idle.as_ref().map(mib),
            procs_peak: peak.as_ref().map(|m| m.processes as f64),
            procs_after: idle.as_ref().map(|m| m.processes as f64),
            helpers_after: idle.as_ref().map(|m| m.helpers as f64),
        };
        self.results
            .add_run(r.workload, r.backend.name, r.clients, run);
        if r.look_at_helpers && kind.is_some() {
            let section = HELPER_SECTION;
            let alive = format!("helpers alive, {} ({} connections)", r.workload, r.clients);
            self.add_extra(
                section,
                r.backend.name,
                &alive,
                "",
                vec![helper_kib.len() as f64],
            );
            let kib: Vec<f64> = helper_kib.iter().map(|k| *k as f64).collect();
            let metric = format!(
                "private dirty per helper, {} ({} cl)",
                r.workload, r.clients
            );
            self.add_extra(section, r.backend.name, &metric, "KiB", kib);
        }
    }

    /// Where a share's files are: XFS shares are not under smbd's directory.
    pub fn share_dir(&self, smbd: &Smbd, share: &str) -> PathBuf {
        if share.ends_with("_xfs") {
            self.scratch.join("xfs").join(share)
        } else {
            smbd.share_path(share)
        }
    }

    fn failed(&mut self, workload: &'static str, b: &Backend, rep: usize, why: String) {
        self.progress(&format!(
            "rep {} {} {workload}: FAILED: {why}",
            rep + 1,
            b.name
        ));
        self.results.set_unavailable(workload, b.name, why);
    }

    fn note_once(&mut self, note: String) {
        if !self.results.notes.contains(&note) {
            self.progress(&note);
            self.results.notes.push(note);
        }
    }

    /// A backend whose share cannot serve a small file (module fails to load, or its
    /// I/O fails) is marked unavailable for `workloads`, with the reason.
    pub fn check_backends(
        &mut self,
        smbd: &Smbd,
        share_of: &dyn Fn(&Backend) -> Option<String>,
        workloads: &[&'static str],
    ) {
        for b in &BACKENDS {
            let Some(share) = share_of(b) else {
                continue;
            };
            let command = format!("get {PROBE_FILE} /dev/null");
            let out = client::smbclient(smbd, &share, &command, Duration::from_secs(60));
            let text = out.combined();
            if out.success() && !text.contains("NT_STATUS_") {
                continue;
            }
            let status = text
                .split_whitespace()
                .find(|w| w.starts_with("NT_STATUS_"))
                .unwrap_or("smbclient failed");
            let module = b.vfs_objects.unwrap_or("smbd");
            let log = smbd.log_text();
            let log_lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains(module) && !l.starts_with('['))
                .take(3)
                .map(str::trim)
                .collect();
            let why = format!("share {share} does not work ({status}); smbd log: {log_lines:?}");
            self.progress(&format!("{}: unavailable: {why}", b.name));
            self.results
                .notes
                .push(format!("{}: unavailable: {why}", b.name));
            for w in workloads {
                self.results.set_unavailable(w, b.name, why.clone());
            }
        }
    }

    /// Adds values to an extra section, merging repeats into one entry.
    pub fn add_extra(
        &mut self,
        section: &'static str,
        backend: &str,
        metric: &str,
        unit: &'static str,
        values: Vec<f64>,
    ) {
        let existing = self
            .results
            .extras
            .iter_mut()
            .find(|e| e.section == section && e.backend == backend && e.metric == metric);
        match existing {
            Some(e) => e.values.extend(values),
            None => self.results.extras.push(Extra {
                section,
                backend: backend.to_string(),
                metric: metric.to_string(),
                unit,
                values,
            }),
        }
    }
}
