//! One measured run at a time: a smbclient transfer or a group of smbload clients on
//! one share, with the server's CPU and memory measured around it and the page cache
//! prepared before it; the result goes into [`Results`].

use std::cell::RefCell;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::backends::{Backend, BACKENDS};
use crate::common::client;
use crate::common::module::ModuleKind;
use crate::common::smbd::Smbd;
use crate::cpu::{self, ConnCpu, CpuMeter};
use crate::load::{self, RandomSpec};
use crate::memory::{self, PeakSampler, TreeMemory};
use crate::pagecache;
use crate::plan::{Plan, GIB, MIB};
use crate::report::{Extra, Results, Run};

/// After a run, smbd must be back to no connections within this.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the untimed load before each point of a curve runs.
const UNTIMED_LOAD: Duration = Duration::from_secs(1);
/// The small file each share serves first, to tell whether its backend works at all.
pub const PROBE_FILE: &str = "probe.bin";
pub const COLD_SECTION: &str =
    "Cold reads (page cache dropped before each get): where our module's reads were served";
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

/// A smbclient session of the memory scenario tells the bench what it did.
enum Event {
    /// Connected; its get waits for the others.
    Connected,
    /// Its get finished; it waits to be released.
    Done,
}

/// A memory-scenario session that has not finished its get by then is stuck.
const MEM_SESSION_LIMIT: Duration = Duration::from_secs(300);

/// What a smbclient transfer does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transfer {
    /// Get a file read beforehand (in the page cache).
    WarmRead,
    /// Get a file after the page cache was dropped.
    ColdRead,
    /// Put a file (read beforehand on the client side).
    Write,
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

    /// One smbclient get or put of the sequential file on `share` (one of `b`'s), on a
    /// connection of its own, held open until its CPU time is read.
    pub fn transfer_run(
        &mut self,
        smbd: &Smbd,
        b: &Backend,
        share: &str,
        workload: &'static str,
        kind: Transfer,
        rep: usize,
    ) {
        if self.results.is_unavailable(workload, b.name) {
            return;
        }
        let remote_put = "put.bin";
        let command = match kind {
            Transfer::Write => format!("put {} {remote_put}", self.sources.seq.display()),
            Transfer::WarmRead | Transfer::ColdRead => "get seq.bin /dev/null".to_string(),
        };
        pagecache::settle_writeback();
        if kind != Transfer::WarmRead && self.plan.drop_caches {
            if let Err(e) = pagecache::drop_page_cache() {
                self.note_once(format!("page cache not dropped: {e}"));
            }
        }
        match kind {
            // A get served from the cache; a put reads its local source from the cache.
            Transfer::WarmRead | Transfer::Write => pagecache::warm(&self.sources.seq),
            Transfer::ColdRead => {}
        }
        if kind != Transfer::WarmRead && self.plan.drop_caches && pagecache::settle_free_memory() {
            self.note_once(
                "free page reporting (a VM giving freed memory back to its host): after each \
                 page-cache drop, runs wait 3 s for it to settle"
                    .to_string(),
            );
        }
        let lines_before = smbd.stats().len();
        let before = self.meter.sample(&[smbd.pid()]);
        let conn_before = RefCell::new(Vec::new());
        let mut conn_used = ConnCpu::default();
        let main_pid = smbd.pid();
        let result = load::smbclient_held(
            smbd,
            share,
            &command,
            &mut |_| *conn_before.borrow_mut() = cpu::connections(main_pid),
            &mut |_| {
                conn_used = cpu::used_since(&conn_before.borrow(), &cpu::connections(main_pid))
            },
        );
        smbd.wait_idle(IDLE_TIMEOUT);
        let cpu = self.meter.sample(&[smbd.pid()]) - before;
        // smbclient can report a put as done whose writes failed (Samba's C aio_fork
        // with 8 MiB requests leaves an empty file): check what the server holds.
        let result = result.and_then(|mib_s| {
            if kind != Transfer::Write {
                return Ok(mib_s);
            }
            let path = self.share_dir(smbd, share).join(remote_put);
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
        if b.helpers == Some(ModuleKind::Rust) && kind == Transfer::ColdRead {
            self.note_cold_reads(smbd, b, workload, lines_before);
        }
        match result {
            Ok(mib_s) => {
                let gib = self.plan.seq_size as f64 / GIB as f64;
                self.progress(&format!(
                    "rep {} {:<12} {workload:<16} {mib_s:8.1} MiB/s  cpu {:.2} s (conn {:.2}, \
                     main {:.2}, helpers {:.2})",
                    rep + 1,
                    b.name,
                    cpu,
                    conn_used.process,
                    conn_used.main,
                    conn_used.helpers
                ));
                let run = Run {
                    rep,
                    value: mib_s,
                    cpu: cpu / gib,
                    cpu_conn: Some(conn_used.process / gib),
                    cpu_main: Some(conn_used.main / gib),
                    cpu_helpers: Some(conn_used.helpers / gib),
                    ..Run::default()
                };
                self.results.add_run(workload, b.name, 1, run);
            }
            Err(why) => self.failed(workload, b, rep, why),
        }
    }

    /// Proof that a cold read was cold: of our module's reads in the run's connection, how
    /// many a helper served and how many were found in the page cache (its stats line).
    fn note_cold_reads(&mut self, smbd: &Smbd, b: &Backend, workload: &str, skip: usize) {
        let lines = smbd.stats();
        let new = lines.get(skip..).unwrap_or(&[]);
        let (reads, inline) = new.iter().fold((0, 0), |(r, i), s| {
            (r + s.preads, i + s.other("inline_preads"))
        });
        let metric = |what: &str| format!("{workload}: reads {what} per get");
        self.add_extra(
            COLD_SECTION,
            b.name,
            &metric("served by helpers"),
            "",
            vec![(reads - inline.min(reads)) as f64],
        );
        self.add_extra(
            COLD_SECTION,
            b.name,
            &metric("found in the page cache (readahead)"),
            "",
            vec![inline as f64],
        );
    }

    /// An untimed run of `r`'s load on the plain share, before the backends' runs at one
    /// point of a curve. A run with many clients starts as many connection processes,
    /// whose memory the host of a virtual machine may have taken back since it was last
    /// used (free page reporting); the first run after a pause would pay for faulting it
    /// in again, and the backend that runs first in a repeat would be charged for it.
    pub fn untimed_load(&mut self, smbd: &Smbd, r: &LoadRun) {
        let spec = RandomSpec {
            duration: UNTIMED_LOAD,
            hold: None,
            ..prepare_load(&self.smbload, &self.scratch, self.plan.settle, r)
        };
        let hooks = load::Hooks {
            ready: None,
            started: None,
            halfway: None,
            held: None,
        };
        if let Err(why) = load::run_random(smbd, &spec, hooks) {
            self.note_once(format!("untimed load before the runs failed: {why}"));
        }
        smbd.wait_idle(IDLE_TIMEOUT);
    }

    /// Several smbload clients at once on one share.
    pub fn load_run(&mut self, smbd: &Smbd, r: &LoadRun) {
        if self.results.is_unavailable(r.workload, r.backend.name) {
            return;
        }
        let spec = prepare_load(&self.smbload, &self.scratch, self.plan.settle, r);
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
        let main_pid = smbd.pid();
        let conn_before = RefCell::new(Vec::new());
        let mut conn_used = None;
        let mut ready = || *conn_before.borrow_mut() = cpu::connections(main_pid);
        let mut held = || {
            conn_used = Some(cpu::used_since(
                &conn_before.borrow(),
                &cpu::connections(main_pid),
            ));
            if r.idle {
                idle = Some(memory::sample(main_pid, kind));
            }
        };
        let before = self.meter.sample(&[smbd.pid()]);
        let hooks = load::Hooks {
            ready: Some(&mut ready),
            started: Some(&mut start_sampling),
            halfway: Some(&mut look),
            held: Some(&mut held),
        };
        let result = load::run_random(smbd, &spec, hooks);
        // The idle sample is a sample of the run too: the peak is never below it.
        let peak = sampler.map(PeakSampler::finish).map(|p| match idle {
            Some(i) if i.pss_kib > p.pss_kib => i,
            _ => p,
        });
        smbd.wait_idle(IDLE_TIMEOUT);
        let cpu = self.meter.sample(&[smbd.pid()]) - before;
        if r.mode != "randread" && r.mode != "seqread" {
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
        let gib = res.ops as f64 * r.request_size as f64 / GIB as f64;
        let per_unit = |seconds: f64| {
            if streaming {
                if gib > 0.0 {
                    seconds / gib
                } else {
                    0.0
                }
            } else if res.ops > 0 {
                seconds * 1e6 / res.ops as f64
            } else {
                0.0
            }
        };
        let value = if streaming {
            res.mib_per_s
        } else {
            res.ops_per_s
        };
        let cpu_per = per_unit(cpu);
        let mib = |m: &TreeMemory| m.pss_mib();
        self.progress(&format!(
            "rep {} {:<12} {:<16} {:>3} cl {:9.1} {}  p50 {:.0} us  p99 {:.0} us  cpu {:.2} \
             (conn {}, main {})  PSS peak {} MiB{}",
            r.rep + 1,
            r.backend.name,
            r.workload,
            r.clients,
            value,
            if streaming { "MiB/s" } else { "ops/s" },
            res.p50_us,
            res.p99_us,
            cpu_per,
            conn_used.map_or("-".to_string(), |c| format!("{:.2}", per_unit(c.process))),
            conn_used.map_or("-".to_string(), |c| format!("{:.2}", per_unit(c.main))),
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
            cpu_conn: conn_used.map(|c| per_unit(c.process)),
            cpu_main: conn_used.map(|c| per_unit(c.main)),
            cpu_helpers: conn_used.map(|c| per_unit(c.helpers)),
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

    /// `clients` smbclient sessions on `b`'s share each get `file` at once, then stay
    /// connected: peak memory during, idle memory `plan.settle` after the last get.
    #[allow(clippy::too_many_arguments)]
    pub fn sessions_run(
        &mut self,
        smbd: &Smbd,
        b: &Backend,
        workload: &'static str,
        file: &str,
        local: &Path,
        clients: usize,
        rep: usize,
    ) {
        if self.results.is_unavailable(workload, b.name) {
            return;
        }
        pagecache::settle_writeback();
        pagecache::warm(local);
        let kind = b.helpers;
        let main_pid = smbd.pid();
        let before = self.meter.sample(&[main_pid]);
        let command = format!("get {file} /dev/null");
        // Write-locked until every session connected (they connect one after the other:
        // a session finds its connection process as the one new process), and until the
        // idle sample is taken (they stay connected).
        let go = RwLock::new(());
        let release = RwLock::new(());
        let go_guard = go.write().expect("go lock");
        let hold = release.write().expect("release lock");
        let (tx, rx) = mpsc::channel::<Event>();
        let mut sample: Option<(TreeMemory, TreeMemory, ConnCpu, f64)> = None;
        let rates = thread::scope(|scope| {
            let deadline = Instant::now() + MEM_SESSION_LIMIT;
            let mut sessions = Vec::new();
            let mut conn_before = Vec::new();
            let mut connected = 0;
            while connected < clients {
                let (tx, go, release, command) = (tx.clone(), &go, &release, &command);
                sessions.push(scope.spawn(move || {
                    let connected = tx.clone();
                    load::smbclient_held(
                        smbd,
                        b.name,
                        command,
                        &mut |_| {
                            let _ = connected.send(Event::Connected);
                            drop(go.read());
                        },
                        &mut |_| {
                            let _ = tx.send(Event::Done);
                            drop(release.read());
                        },
                    )
                }));
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(Event::Connected) => connected += 1,
                    _ => break,
                }
            }
            drop(tx);
            if connected == clients {
                conn_before = cpu::connections(main_pid);
            }
            let mut sampler = Some(PeakSampler::start(
                main_pid,
                kind,
                self.plan.sample_interval,
            ));
            let started = Instant::now();
            drop(go_guard);
            let mut done = 0;
            while connected == clients && done < clients {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(Event::Done) => done += 1,
                    Ok(Event::Connected) => {}
                    Err(_) => break,
                }
            }
            if connected == clients && done == clients {
                let elapsed = started.elapsed().as_secs_f64();
                thread::sleep(self.plan.settle);
                let idle = memory::sample(main_pid, kind);
                let used = cpu::used_since(&conn_before, &cpu::connections(main_pid));
                let peak = sampler.take().map(PeakSampler::finish).unwrap_or_default();
                let peak = if idle.pss_kib > peak.pss_kib {
                    idle
                } else {
                    peak
                };
                sample = Some((peak, idle, used, elapsed));
            }
            drop(sampler);
            drop(hold);
            sessions
                .into_iter()
                .map(|t| t.join().unwrap_or_else(|_| Err("session panicked".into())))
                .collect::<Vec<_>>()
        });
        smbd.wait_idle(IDLE_TIMEOUT);
        let cpu = self.meter.sample(&[main_pid]) - before;
        if let Some(Err(why)) = rates.iter().find(|r| r.is_err()) {
            return self.failed(workload, b, rep, why.clone());
        }
        let Some((peak, idle, conn_used, elapsed)) = sample else {
            let why = format!("not every session finished within {MEM_SESSION_LIMIT:?}");
            return self.failed(workload, b, rep, why);
        };
        let gib = (clients as u64 * self.plan.mem_file_size) as f64 / GIB as f64;
        let value = gib * 1024.0 / elapsed;
        self.progress(&format!(
            "rep {} {:<12} {workload:<16} {clients:>3} cl {value:9.1} MiB/s  PSS peak {:.0} MiB, \
             idle {:.0} MiB ({} procs, {} helpers)",
            rep + 1,
            b.name,
            peak.pss_mib(),
            idle.pss_mib(),
            idle.processes,
            idle.helpers
        ));
        let run = Run {
            rep,
            value,
            cpu: cpu / gib,
            cpu_conn: Some(conn_used.process / gib),
            cpu_main: Some(conn_used.main / gib),
            cpu_helpers: Some(conn_used.helpers / gib),
            pss_peak_mib: Some(peak.pss_mib()),
            pss_after_mib: Some(idle.pss_mib()),
            procs_peak: Some(peak.processes as f64),
            procs_after: Some(idle.processes as f64),
            helpers_after: Some(idle.helpers as f64),
            ..Run::default()
        };
        self.results.add_run(workload, b.name, clients, run);
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

/// What smbload runs for `r`, once writeback has settled and `r`'s file is cached; `settle`:
/// how long the clients stay connected after an idle run.
fn prepare_load<'a>(
    smbload: &'a Path,
    scratch: &'a Path,
    settle: Duration,
    r: &LoadRun<'a>,
) -> RandomSpec<'a> {
    pagecache::settle_writeback();
    if let Some(path) = r.warm {
        pagecache::warm(path);
    }
    RandomSpec {
        smbload,
        share: r.share,
        file: r.file,
        mode: r.mode,
        request_size: r.request_size,
        clients: r.clients,
        duration: r.duration,
        // The same offsets for every backend within one repeat.
        seed: 1000 * (r.rep as u64 + 1),
        max_bytes: r.max_bytes,
        hold: r.idle.then_some(settle),
        scratch,
    }
}
