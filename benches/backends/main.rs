//! Side-by-side benchmark of smbd's asynchronous I/O backends: the plain
//! share (Samba's default pthreadpool), `aio_pthread`, `io_uring`, Samba's C
//! `aio_fork` and this project's module, in one private smbd, on the same workloads.
//!
//!     cargo bench --bench backends -- [--quick] [--repeats N] [--csv PATH] [--png PATH]
//!
//! Runs as root inside `unshare --net --mount --pid` (the integration-test harness,
//! tests/common): loopback only, the host's Samba untouched (our module is added as
//! `vfs/aio_fork_rs.so` in a bind-mounted copy of Samba's vfs directory, beside the C
//! `aio_fork.so`), nothing left running. Relative --csv/--png paths are relative to
//! the package root (cargo runs benches there).

#[path = "../../tests/common/mod.rs"]
mod common;

mod chart;
mod cpu;
mod load;
mod report;

use std::env;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process;
use std::time::{Duration, Instant};

use common::client;
use common::data;
use common::module::ModuleKind;
use common::namespace::{run_program_in_namespace, Install, NsContext};
use common::smbd::{Smbd, SmbdBuilder};
use common::stats;
use cpu::CpuMeter;
use load::RandomSpec;
use report::{Extra, Metric, Results, Run, Workload};

/// Our module's name in the benchmark's smbd (`vfs objects = aio_fork_rs`).
const OUR_MODULE: &str = "aio_fork_rs";
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Samba's C aio_fork fails requests above this; the capped config stays within it.
const CAPPED_REQUEST: &str = "131072";
/// After a run, smbd must be back to no connections within this.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The small file each share serves first, to tell whether its backend works at all.
const PROBE_FILE: &str = "probe.bin";
const PROBE_SIZE: u64 = 64 * 1024;
const HELPER_SECTION: &str =
    "Helper overhead (processes and memory sampled halfway through the random runs)";
const FORK_SECTION: &str =
    "Fork cost as smbd grows (first 4 KiB write on a new connection: fork backends spawn a helper)";

/// One async I/O backend and how a share selects it.
struct Backend {
    name: &'static str,
    vfs_objects: Option<&'static str>,
    /// Further share options (a variant of a module).
    options: &'static [(&'static str, &'static str)],
    /// Which helper processes it forks, if any (for the helper-memory section).
    helpers: Option<ModuleKind>,
}

const BACKENDS: [Backend; 6] = [
    Backend {
        name: report::REFERENCE,
        vfs_objects: None,
        options: &[],
        helpers: None,
    },
    Backend {
        name: "aio_pthread",
        vfs_objects: Some("aio_pthread"),
        options: &[],
        helpers: None,
    },
    Backend {
        name: "io_uring",
        vfs_objects: Some("io_uring"),
        options: &[],
        helpers: None,
    },
    Backend {
        name: "aio_fork_c",
        vfs_objects: Some("aio_fork"),
        options: &[],
        helpers: Some(ModuleKind::SambaC),
    },
    Backend {
        name: OUR_MODULE,
        vfs_objects: Some(OUR_MODULE),
        options: &[],
        helpers: Some(ModuleKind::Rust),
    },
    // Ours with every read sent to a helper (no inline preadv2(RWF_NOWAIT) of cached
    // data): what the inline path is worth, and what a helper round trip costs.
    Backend {
        name: "rs_noinline",
        vfs_objects: Some(OUR_MODULE),
        options: &[("aio_fork:inline cached reads", "no")],
        helpers: Some(ModuleKind::Rust),
    },
];

// Workload ids (CSV, chart and table columns).
const SEQ_READ: &str = "seq_read_8m";
const SEQ_WRITE: &str = "seq_write_8m";
const SEQ_READ_CAPPED: &str = "seq_read_128k";
const SEQ_WRITE_CAPPED: &str = "seq_write_128k";
const RAND_READ: &str = "rand_read_4k";
const RAND_WRITE: &str = "rand_write_4k";
const FSYNC_WRITE: &str = "fsync_write_4k";

struct Options {
    quick: bool,
    repeats: Option<usize>,
    csv: Option<PathBuf>,
    png: Option<PathBuf>,
}

const USAGE: &str = "usage: cargo bench --bench backends -- [--quick] [--repeats N] \
                     [--csv PATH] [--png PATH]";

fn parse_args() -> Options {
    let mut opts = Options {
        quick: false,
        repeats: None,
        csv: None,
        png: None,
    };
    let mut args = env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => opts.quick = true,
            "--repeats" => {
                let n = args.next().and_then(|v| v.parse().ok()).filter(|n| *n > 0);
                opts.repeats = Some(n.unwrap_or_else(|| usage_exit("--repeats needs N >= 1")));
            }
            "--csv" => opts.csv = Some(path_arg(args.next(), "--csv")),
            "--png" => opts.png = Some(path_arg(args.next(), "--png")),
            // cargo bench passes --bench to every bench target.
            "--bench" => {}
            "-h" | "--help" => {
                println!("{USAGE}");
                process::exit(0);
            }
            other => usage_exit(&format!("unknown argument {other:?}")),
        }
    }
    opts
}

fn path_arg(value: Option<String>, flag: &str) -> PathBuf {
    let value = value.unwrap_or_else(|| usage_exit(&format!("{flag} needs a path")));
    // Absolute now: the same path must work inside the namespace (it does, the file
    // system is shared, but the working directory is worth pinning).
    env::current_dir()
        .map(|d| d.join(&value))
        .unwrap_or_else(|_| PathBuf::from(value))
}

fn usage_exit(problem: &str) -> ! {
    eprintln!("backends: {problem}\n{USAGE}");
    process::exit(2);
}

/// Sizes and durations of one benchmark run.
struct Plan {
    seq_size: u64,
    rand_size: u64,
    sync_size: u64,
    request_size: u64,
    clients: usize,
    duration: Duration,
    repeats: usize,
    /// smbd sizes (extra MiB) at which helper spawning is timed.
    ballast_mib: Vec<u64>,
    /// New connections timed per backend and size.
    fork_probes: usize,
}

impl Plan {
    fn new(opts: &Options) -> Plan {
        let mut plan = if opts.quick {
            Plan {
                seq_size: 128 * MIB,
                rand_size: 64 * MIB,
                sync_size: 16 * MIB,
                request_size: 4096,
                clients: 8,
                duration: Duration::from_secs(2),
                repeats: 1,
                ballast_mib: vec![0, 256],
                fork_probes: 3,
            }
        } else {
            Plan {
                seq_size: GIB,
                rand_size: 256 * MIB,
                // fsync-heavy load is bound by the disk's flushes, not the file size.
                sync_size: 64 * MIB,
                request_size: 4096,
                clients: 8,
                duration: Duration::from_secs(10),
                repeats: 3,
                ballast_mib: vec![0, 512, 2048],
                fork_probes: 10,
            }
        };
        if let Some(n) = opts.repeats {
            plan.repeats = n;
        }
        plan
    }
}

/// Where the inner side (in the namespace) leaves the final tables for the outer side
/// to print: the harness echoes the inner side's output indented, which is right for
/// progress lines but not for tables meant to be copied.
const ENV_REPORT: &str = "AIO_FORK_BENCH_REPORT";

fn main() {
    let opts = parse_args();
    // A hard bound on the whole run (the namespace is killed after it).
    let limit = if opts.quick {
        Duration::from_secs(15 * 60)
    } else {
        Duration::from_secs(90 * 60)
    };
    let outer = env::var_os(ENV_REPORT).is_none();
    let report = env::temp_dir().join(format!("aio_fork_bench_report.{}", process::id()));
    if outer {
        // Inherited by the re-executed program inside the namespace. Nothing else
        // runs yet, so changing the environment is safe.
        env::set_var(ENV_REPORT, &report);
    }
    run_program_in_namespace(limit, Install::Beside(OUR_MODULE.to_string()), |ctx| {
        bench(ctx, &opts)
    });
    if outer {
        match fs::read_to_string(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("backends: no report at {}: {e}", report.display()),
        }
        let _ = fs::remove_file(&report);
    }
}

/// Files every share gets a copy (or hard link) of.
struct Sources {
    seq: PathBuf,
    rand: PathBuf,
    sync: PathBuf,
    probe: PathBuf,
}

impl Sources {
    fn create(dir: &Path, plan: &Plan) -> Sources {
        fs::create_dir_all(dir).expect("create data dir");
        let sources = Sources {
            seq: dir.join("seq.bin"),
            rand: dir.join("rand.bin"),
            sync: dir.join("sync.bin"),
            probe: dir.join(PROBE_FILE),
        };
        data::write_random_file(&sources.seq, plan.seq_size, 1);
        data::write_random_file(&sources.rand, plan.rand_size, 2);
        data::write_random_file(&sources.sync, plan.sync_size, 3);
        data::write_random_file(&sources.probe, PROBE_SIZE, 4);
        sources
    }
}

/// The read-only file is shared by a hard link; files that get written are copies,
/// so one backend's writes never land in (or get flushed for) another's file.
fn stage(share_dir: &Path, read_only: &[&Path], written: &[&Path]) {
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

fn share_options(backend: &Backend, sync_always: bool) -> Vec<(&'static str, &'static str)> {
    let mut options = Vec::new();
    if let Some(module) = backend.vfs_objects {
        options.push(("vfs objects", module));
    }
    options.extend_from_slice(backend.options);
    if sync_always {
        // smbd then follows every write with an fsync through the VFS (strict sync
        // is the default; set anyway, since without it "sync always" does nothing).
        options.push(("sync always", "yes"));
        options.push(("strict sync", "yes"));
    }
    options
}

fn sync_share(backend: &Backend) -> String {
    format!("{}_sync", backend.name)
}

fn bench(ctx: &NsContext, opts: &Options) {
    let started = Instant::now();
    let plan = Plan::new(opts);
    println!(
        "plan: sequential {} MiB; random {} KiB requests, {} clients, {} MiB file, {:?} per run; \
         fsync file {} MiB; {} repeat(s), median reported",
        plan.seq_size / MIB,
        plan.request_size / 1024,
        plan.clients,
        plan.rand_size / MIB,
        plan.duration,
        plan.sync_size / MIB,
        plan.repeats
    );
    // Built into the namespace's scratch directory, removed with it.
    let smbload = load::build_smbload(&ctx.workdir);
    let sources = Sources::create(&ctx.workdir.join("data"), &plan);
    let mut bench = Bench {
        plan,
        smbload,
        sources,
        results: Results::new(BACKENDS.iter().map(|b| b.name).collect()),
        meter: CpuMeter::new(),
        scratch: ctx.workdir.join("scratch"),
        started,
    };
    fs::create_dir_all(&bench.scratch).expect("create scratch dir");
    bench.declare_workloads();
    bench.default_config(&ctx.workdir.join("smbd-default"));
    bench.capped_config(&ctx.workdir.join("smbd-capped"));
    let ballast = load::build_ballast(&ctx.workdir);
    bench.fork_cost(&ctx.workdir.join("smbd-ballast"), &ballast);
    bench.finish(opts);
}

struct Bench {
    plan: Plan,
    smbload: PathBuf,
    sources: Sources,
    results: Results,
    meter: CpuMeter,
    scratch: PathBuf,
    started: Instant,
}

impl Bench {
    fn declare_workloads(&mut self) {
        let seq = self.plan.seq_size / MIB;
        let rand = self.plan.rand_size / MIB;
        let secs = self.plan.duration.as_secs_f64();
        let clients = self.plan.clients;
        let seq_workload = |id, what: &str, requests: &str| Workload {
            id,
            title: format!(
                "{what} of a {seq} MiB file, {requests} requests (one smbclient): MiB/s"
            ),
            unit: "MiB/s",
            cpu_unit: "CPU s/GiB",
            latency: false,
        };
        let rand_workload = |id, what: &str| Workload {
            id,
            title: format!(
                "{what}, {clients} libsmbclient clients, {secs:.0} s: ops/s (all clients)"
            ),
            unit: "ops/s",
            cpu_unit: "CPU us/op",
            latency: true,
        };
        let workloads = [
            seq_workload(SEQ_READ, "Sequential read (get)", "8 MiB"),
            seq_workload(SEQ_WRITE, "Sequential write (put)", "8 MiB"),
            seq_workload(SEQ_READ_CAPPED, "Sequential read (get)", "128 KiB"),
            seq_workload(SEQ_WRITE_CAPPED, "Sequential write (put)", "128 KiB"),
            rand_workload(
                RAND_READ,
                &format!("4 KiB random reads of a cached {rand} MiB file"),
            ),
            rand_workload(
                RAND_WRITE,
                &format!("4 KiB random writes to a {rand} MiB file"),
            ),
            rand_workload(
                FSYNC_WRITE,
                &format!(
                    "4 KiB random writes each followed by an fsync (share: sync always = yes), \
                     {} MiB file",
                    self.plan.sync_size / MIB
                ),
            ),
        ];
        for w in workloads {
            self.results.add_workload(w);
        }
    }

    fn progress(&self, text: &str) {
        println!("[{:>6.1?}] {text}", self.started.elapsed());
    }

    /// smbd with SMB2's default maximum request size (8 MiB): sequential, random
    /// and fsync workloads.
    fn default_config(&mut self, dir: &Path) {
        let mut builder = SmbdBuilder::without_shares(dir);
        for b in &BACKENDS {
            builder = builder.share(b.name, &share_options(b, false));
            builder = builder.share(&sync_share(b), &share_options(b, true));
        }
        let smbd = builder.start();
        for b in &BACKENDS {
            let s = &self.sources;
            stage(&smbd.share_path(b.name), &[&s.seq, &s.probe], &[&s.rand]);
            stage(&smbd.share_path(&sync_share(b)), &[&s.probe], &[&s.sync]);
        }
        // Write the copies back now, not during the measurements.
        // SAFETY: sync(2) has no preconditions.
        unsafe { libc::sync() };
        let workloads = [SEQ_READ, SEQ_WRITE, RAND_READ, RAND_WRITE, FSYNC_WRITE];
        self.check_backends(&smbd, &workloads);
        self.warm_up(&smbd);

        for rep in 0..self.plan.repeats {
            for b in &BACKENDS {
                self.seq_run(&smbd, b, SEQ_READ, rep);
                self.seq_run(&smbd, b, SEQ_WRITE, rep);
            }
        }
        for (workload, mode) in [(RAND_READ, "randread"), (RAND_WRITE, "randwrite")] {
            for rep in 0..self.plan.repeats {
                for b in &BACKENDS {
                    self.random_run(&smbd, b, b.name, "rand.bin", workload, mode, rep);
                }
            }
        }
        for rep in 0..self.plan.repeats {
            for b in &BACKENDS {
                let share = sync_share(b);
                self.random_run(&smbd, b, &share, "sync.bin", FSYNC_WRITE, "randwrite", rep);
            }
        }
        self.note_module_stats(&smbd);
    }

    /// Our module's own counters (its tree-disconnect stats lines): proof that its
    /// helpers served the I/O, and whether any request fell back to the next module
    /// (which would make its numbers partly another backend's).
    fn note_module_stats(&mut self, smbd: &Smbd) {
        let all = smbd.stats();
        let ours = BACKENDS
            .iter()
            .filter(|b| b.helpers == Some(ModuleKind::Rust));
        for share in ours.flat_map(|b| [b.name.to_string(), sync_share(b)]) {
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

    /// smbd with requests capped at 128 KiB, so Samba's C aio_fork can take part.
    fn capped_config(&mut self, dir: &Path) {
        let mut builder = SmbdBuilder::without_shares(dir)
            .global("smb2 max read", CAPPED_REQUEST)
            .global("smb2 max write", CAPPED_REQUEST)
            .global("smb2 max trans", CAPPED_REQUEST);
        for b in &BACKENDS {
            builder = builder.share(b.name, &share_options(b, false));
        }
        let smbd = builder.start();
        for b in &BACKENDS {
            let s = &self.sources;
            stage(&smbd.share_path(b.name), &[&s.seq, &s.probe], &[]);
        }
        self.check_backends(&smbd, &[SEQ_READ_CAPPED, SEQ_WRITE_CAPPED]);
        for rep in 0..self.plan.repeats {
            for b in &BACKENDS {
                self.seq_run(&smbd, b, SEQ_READ_CAPPED, rep);
                self.seq_run(&smbd, b, SEQ_WRITE_CAPPED, rep);
            }
        }
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

    /// How the cost of spawning a helper grows with smbd's size: smbd is made bigger
    /// with an LD_PRELOADed ballast (benches/c/ballast.c); on each new connection the
    /// first 4 KiB write makes a fork-based backend spawn its first helper, so its
    /// latency minus the median of the later writes is the spawn cost. (A write, not
    /// a read: our module serves cached reads without a helper.) The plain share
    /// shows what a first request costs without any fork.
    fn fork_cost(&mut self, dir: &Path, ballast: &Path) {
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
                        request_size: self.plan.request_size,
                        clients: 1,
                        duration: Duration::from_millis(300),
                        seed: 7,
                        scratch: &self.scratch,
                    };
                    let result = load::run_random(&smbd, &spec, &mut || {});
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

    /// A backend whose share cannot serve a small file (module fails to load, or
    /// its I/O fails) is marked unavailable for `workloads`, with the reason.
    fn check_backends(&mut self, smbd: &Smbd, workloads: &[&'static str]) {
        for b in &BACKENDS {
            let command = format!("get {PROBE_FILE} /dev/null");
            let out = client::smbclient(smbd, b.name, &command, Duration::from_secs(60));
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
            let why = format!("share does not work ({status}); smbd log: {log_lines:?}");
            self.progress(&format!("{}: unavailable: {why}", b.name));
            self.results
                .notes
                .push(format!("{}: unavailable: {why}", b.name));
            for w in workloads {
                self.results.set_unavailable(w, b.name, why.clone());
            }
        }
    }

    /// One smbclient get or put of the sequential file.
    fn seq_run(&mut self, smbd: &Smbd, b: &Backend, workload: &'static str, rep: usize) {
        if self.results.is_unavailable(workload, b.name) {
            return;
        }
        let reading = workload == SEQ_READ || workload == SEQ_READ_CAPPED;
        let remote_put = "put.bin";
        let command = if reading {
            "get seq.bin /dev/null".to_string()
        } else {
            format!("put {} {remote_put}", self.sources.seq.display())
        };
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
                    "rep {} {:<12} {workload:<15} {mib_s:8.1} MiB/s  cpu {:.2} s",
                    rep + 1,
                    b.name,
                    cpu
                ));
                self.results.add_run(
                    workload,
                    b.name,
                    Run {
                        value: mib_s,
                        cpu: cpu / gib,
                        p50_us: None,
                        p99_us: None,
                    },
                );
            }
            Err(why) => {
                self.progress(&format!(
                    "rep {} {} {workload}: FAILED: {why}",
                    rep + 1,
                    b.name
                ));
                self.results.set_unavailable(workload, b.name, why);
            }
        }
    }

    /// Several smbload clients at once on one share.
    #[allow(clippy::too_many_arguments)]
    fn random_run(
        &mut self,
        smbd: &Smbd,
        b: &Backend,
        share: &str,
        file: &str,
        workload: &'static str,
        mode: &str,
        rep: usize,
    ) {
        if self.results.is_unavailable(workload, b.name) {
            return;
        }
        let spec = RandomSpec {
            smbload: &self.smbload,
            share,
            file,
            mode,
            request_size: self.plan.request_size,
            clients: self.plan.clients,
            duration: self.plan.duration,
            // The same offsets for every backend within one repeat.
            seed: 1000 * (rep as u64 + 1),
            scratch: &self.scratch,
        };
        // Helpers are looked at halfway through the random reads and writes, while
        // every client's connection has its pool. (Reads may need none: our module
        // serves page-cache hits inline; writes always go to helpers.)
        let mut helper_kib = Vec::new();
        let mut helper_count = None;
        let sampled = workload == RAND_READ || workload == RAND_WRITE;
        let mut look = || {
            if let (Some(kind), true) = (b.helpers, sampled) {
                let kib = cpu::helper_private_dirty_kib(smbd.pid(), kind);
                helper_count = Some(kib.len() as f64);
                helper_kib = kib;
            }
        };
        let before = self.meter.sample(&[smbd.pid()]);
        let result = load::run_random(smbd, &spec, &mut look);
        smbd.wait_idle(IDLE_TIMEOUT);
        let cpu = self.meter.sample(&[smbd.pid()]) - before;
        if workload != RAND_READ {
            // Flush this run's writes now rather than during a later run.
            let path = smbd.share_path(share).join(file);
            if let Ok(f) = File::options().write(true).open(&path) {
                let _ = f.sync_all();
            }
        }
        match result {
            Ok(r) => {
                let cpu_us_per_op = if r.ops > 0 {
                    cpu * 1e6 / r.ops as f64
                } else {
                    0.0
                };
                self.progress(&format!(
                    "rep {} {:<12} {workload:<15} {:8.0} ops/s  p50 {:.0} us  p99 {:.0} us  \
                     cpu {:.1} us/op",
                    rep + 1,
                    b.name,
                    r.ops_per_s,
                    r.p50_us,
                    r.p99_us,
                    cpu_us_per_op
                ));
                self.results.add_run(
                    workload,
                    b.name,
                    Run {
                        value: r.ops_per_s,
                        cpu: cpu_us_per_op,
                        p50_us: Some(r.p50_us),
                        p99_us: Some(r.p99_us),
                    },
                );
                if let Some(count) = helper_count {
                    let section = HELPER_SECTION;
                    let clients = self.plan.clients;
                    let alive = format!("helpers alive, {workload} ({clients} connections)");
                    self.add_extra(section, b.name, &alive, "", vec![count]);
                    let kib: Vec<f64> = helper_kib.iter().map(|k| *k as f64).collect();
                    let metric = format!("private dirty memory per helper, {workload}");
                    self.add_extra(section, b.name, &metric, "KiB", kib);
                }
            }
            Err(why) => {
                self.progress(&format!(
                    "rep {} {} {workload}: FAILED: {why}",
                    rep + 1,
                    b.name
                ));
                self.results.set_unavailable(workload, b.name, why);
            }
        }
    }

    /// Adds values to an extra section, merging repeats into one entry.
    fn add_extra(
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

    /// Per-request latency each helper-based backend adds to the plain share's
    /// (difference of medians), from the random workloads.
    fn added_latency(&mut self) {
        for b in BACKENDS.iter().filter(|b| b.helpers.is_some()) {
            for workload in [RAND_READ, RAND_WRITE, FSYNC_WRITE] {
                let p50 = |backend| self.results.summary(workload, backend, Metric::P50);
                if let (Some(own), Some(plain)) = (p50(b.name), p50(report::REFERENCE)) {
                    let metric = format!("p50 latency minus plain's, {workload}");
                    let added = vec![own.median - plain.median];
                    self.add_extra(HELPER_SECTION, b.name, &metric, "us", added);
                }
            }
        }
    }

    /// Prints the tables; writes CSV and PNG if asked.
    fn finish(mut self, opts: &Options) {
        self.added_latency();
        let title = format!(
            "smbd async I/O backends: ratio to plain (median of {} run(s))",
            self.plan.repeats
        );
        if let Some(path) = &opts.png {
            match chart::write_png(&self.results, path, &title) {
                Ok(note) => {
                    self.results
                        .notes
                        .push(format!("chart written to {}", path.display()));
                    self.results.notes.extend(note);
                }
                Err(e) => self.results.notes.push(format!("chart not written: {e}")),
            }
        }
        if let Some(path) = &opts.csv {
            match report::write_csv(&self.results, path) {
                Ok(()) => self
                    .results
                    .notes
                    .push(format!("CSV written to {}", path.display())),
                Err(e) => self
                    .results
                    .notes
                    .push(format!("CSV not written to {}: {e}", path.display())),
            }
        }
        self.results.notes.push(format!(
            "benchmark runtime: {:.0} s",
            self.started.elapsed().as_secs_f64()
        ));
        let text = report::render(&self.results);
        match env::var_os(ENV_REPORT) {
            Some(path) => fs::write(&path, text).expect("write the report for the outer side"),
            None => println!("{text}"),
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
