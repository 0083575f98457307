//! Side-by-side benchmark of smbd's asynchronous I/O backends: the plain
//! share (Samba's default pthreadpool), `aio_pthread`, `io_uring`, Samba's C
//! `aio_fork` and this project's module, in one private smbd, on the same workloads.
//!
//!     cargo bench --bench backends -- [--quick] [--repeats N] [--no-drop-caches]
//!                                       [--csv PATH] [--png DIR] [--plan]
//!                                       [--only WORKLOAD,...] [--backends NAME,...]
//!
//! `--plan`: print the plan and its estimated run time, run nothing. `--quick`: every phase with smaller files, fewer client counts and repeats (a few
//! minutes). `--repeats N`: N repeats of every phase. `--no-drop-caches`: do not drop
//! the machine's clean page cache before each sequential write (see pagecache.rs).
//! `--csv PATH`: summary CSV (every figure: median, min, max, 95% interval, paired
//! ratio to plain and its interval, verdict) and `<stem>.runs.csv` beside it (every
//! run). `--png DIR`: charts: `transfers.png` (ratios to plain) and, per scaling
//! workload, `<workload>_throughput.png`, `_p99.png`, `_memory.png`.
//! `--only`: run only these workloads (ids as in the tables, e.g. `cold_read_8m`; the
//! fork-cost phase is `fork_cost`); `--backends`: only these backends (plain always runs,
//! every ratio is to it). Both are for looking at one thing quickly: the tables list what
//! was left out as not run.
//!
//! Runs as root inside `unshare --net --mount --pid` (the integration-test harness,
//! tests/common): loopback only, the host's Samba untouched (our module is added as
//! `vfs/aio_fork_rs.so` in a bind-mounted copy of Samba's vfs directory, beside the C
//! `aio_fork.so`), nothing left running; the XFS image is loop-mounted in there too.
//! Relative --csv/--png paths are relative to the package root (cargo runs benches
//! there).

#[path = "../../tests/common/mod.rs"]
mod common;

mod backends;
mod chart;
mod cpu;
mod curves;
mod estimate;
mod load;
mod memory;
mod pagecache;
mod phases;
mod plan;
mod report;
mod runner;
mod tables;
mod workloads;
mod xfs;

use std::env;
use std::fs;
use std::path::PathBuf;
use std::process;
use std::time::{Duration, Instant};

use backends::{BACKENDS, OUR_MODULE};
use common::namespace::{run_program_in_namespace, Install, NsContext};
use cpu::CpuMeter;
use plan::Plan;
use report::{Results, Workload};
use runner::{Bench, Sources};
use tables::Layout;

struct Options {
    plan_only: bool,
    quick: bool,
    repeats: Option<usize>,
    drop_caches: bool,
    csv: Option<PathBuf>,
    png: Option<PathBuf>,
    only: Option<Vec<String>>,
    backends: Option<Vec<String>>,
}

const USAGE: &str = "usage: cargo bench --bench backends -- [--quick] [--repeats N] \
                     [--no-drop-caches] [--csv PATH] [--png DIR] [--plan] \
                     [--only WORKLOAD,...] [--backends NAME,...]";

fn parse_args() -> Options {
    let mut opts = Options {
        plan_only: false,
        quick: false,
        repeats: None,
        drop_caches: true,
        csv: None,
        png: None,
        only: None,
        backends: None,
    };
    let mut args = env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => opts.quick = true,
            "--plan" => opts.plan_only = true,
            "--repeats" => {
                let n = args.next().and_then(|v| v.parse().ok()).filter(|n| *n > 0);
                opts.repeats = Some(n.unwrap_or_else(|| usage_exit("--repeats needs N >= 1")));
            }
            "--no-drop-caches" => opts.drop_caches = false,
            "--csv" => opts.csv = Some(path_arg(args.next(), "--csv")),
            "--png" => opts.png = Some(path_arg(args.next(), "--png")),
            "--only" => opts.only = Some(list_arg(args.next(), "--only")),
            "--backends" => opts.backends = Some(list_arg(args.next(), "--backends")),
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

fn list_arg(value: Option<String>, flag: &str) -> Vec<String> {
    let value = value.unwrap_or_else(|| usage_exit(&format!("{flag} needs a list")));
    value.split(',').map(str::to_string).collect()
}

fn usage_exit(problem: &str) -> ! {
    eprintln!("backends: {problem}\n{USAGE}");
    process::exit(2);
}

/// Where the inner side (in the namespace) leaves the final tables for the outer side
/// to print: the harness echoes the inner side's output indented, which is right for
/// progress lines but not for tables meant to be copied.
const ENV_REPORT: &str = "AIO_FORK_BENCH_REPORT";

fn main() {
    let opts = parse_args();
    let plan = Plan::new(opts.quick, opts.repeats, opts.drop_caches);
    // A hard bound on the whole run (the namespace is killed after it): twice the
    // estimate, at least 15 minutes.
    let limit = (plan.estimate() * 2).max(Duration::from_secs(15 * 60));
    let outer = env::var_os(ENV_REPORT).is_none();
    let report = env::temp_dir().join(format!("aio_fork_bench_report.{}", process::id()));
    if outer {
        println!("{}", plan.describe());
        if opts.plan_only {
            return;
        }
        // Inherited by the re-executed program inside the namespace. Nothing else
        // runs yet, so changing the environment is safe.
        env::set_var(ENV_REPORT, &report);
    }
    run_program_in_namespace(limit, Install::Beside(OUR_MODULE.to_string()), |ctx| {
        bench(ctx, &opts, plan)
    });
    if outer {
        match fs::read_to_string(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("backends: no report at {}: {e}", report.display()),
        }
        let _ = fs::remove_file(&report);
    }
}

fn bench(ctx: &NsContext, opts: &Options, plan: Plan) {
    let started = Instant::now();
    let fairness = pagecache::describe(plan.seq_size, plan.drop_caches);
    println!("{fairness}");
    // Built into the namespace's scratch directory, removed with it.
    let smbload = load::build_smbload(&ctx.workdir);
    let sources = Sources::create(&ctx.workdir.join("data"), &plan);
    let mut results = Results::new(BACKENDS.iter().map(|b| b.name).collect());
    workloads::declare(&mut results, &plan);
    for (backend, workloads, why) in backends::KNOWN_LIMITS {
        for w in workloads {
            results.set_unavailable(w, backend, why.to_string());
        }
    }
    leave_out(&mut results, opts);
    results.notes.push(fairness);
    let mut bench = Bench {
        plan,
        smbload,
        sources,
        results,
        meter: CpuMeter::new(),
        scratch: ctx.workdir.join("scratch"),
        started,
    };
    fs::create_dir_all(&bench.scratch).expect("create scratch dir");
    bench.default_config(&ctx.workdir.join("smbd-default"));
    bench.mid_config(&ctx.workdir.join("smbd-mid"));
    bench.capped_config(&ctx.workdir.join("smbd-capped"));
    if selected(&opts.only, "fork_cost") {
        let ballast = load::build_ballast(&ctx.workdir);
        bench.fork_cost(&ctx.workdir.join("smbd-ballast"), &ballast);
    }
    finish(bench, opts);
}

fn selected(list: &Option<Vec<String>>, name: &str) -> bool {
    list.as_ref().map_or(true, |l| l.iter().any(|n| n == name))
}

/// Marks what `--only` and `--backends` leave out as not run.
fn leave_out(results: &mut Results, opts: &Options) {
    let ids: Vec<&'static str> = results.workloads.iter().map(|w| w.id).collect();
    for id in ids {
        for b in &BACKENDS {
            let backend_out = b.name != report::REFERENCE && !selected(&opts.backends, b.name);
            if !selected(&opts.only, id) || backend_out {
                results.set_unavailable(id, b.name, "not run (--only, --backends)".to_string());
            }
        }
    }
}

/// Prints the tables; writes CSV and PNGs if asked.
fn finish(mut bench: Bench, opts: &Options) {
    bench.added_latency();
    let results = &mut bench.results;
    if let Some(dir) = &opts.png {
        let notes = write_charts(results, dir);
        results.notes.extend(notes);
    }
    if let Some(path) = &opts.csv {
        let note = match report::write_csv(results, path) {
            Ok(()) => format!(
                "CSV written to {} (every run: {})",
                path.display(),
                report::runs_csv_path(path).display()
            ),
            Err(e) => format!("CSV not written to {}: {e}", path.display()),
        };
        results.notes.push(note);
    }
    let elapsed = bench.started.elapsed().as_secs_f64();
    results.notes.push(format!(
        "benchmark runtime: {elapsed:.0} s ({:.1} min; estimated {:.1} min)",
        elapsed / 60.0,
        bench.plan.estimate().as_secs_f64() / 60.0
    ));
    let layout = Layout {
        memory: workloads::MEMORY.to_vec(),
        settle: bench.plan.settle,
        filesystems: workloads::FILESYSTEM_PAIRS.to_vec(),
    };
    let text = tables::render(results, &layout);
    match env::var_os(ENV_REPORT) {
        Some(path) => fs::write(&path, text).expect("write the report for the outer side"),
        None => println!("{text}"),
    }
}

/// The transfer chart and every scaling workload's curves; returns notes for the
/// report.
fn write_charts(results: &Results, dir: &std::path::Path) -> Vec<String> {
    let mut notes = Vec::new();
    if let Err(e) = fs::create_dir_all(dir) {
        return vec![format!("charts not written to {}: {e}", dir.display())];
    }
    let single: Vec<&Workload> = results
        .workloads
        .iter()
        .filter(|w| !w.scaling && results.client_points(w.id).len() == 1)
        .collect();
    let path = dir.join("transfers.png");
    let title =
        "Transfers and single-point workloads: ratio to plain (paired median, 95% interval)";
    match chart::write_png(results, &single, &path, title) {
        Ok(note) => {
            notes.push(format!("chart written to {}", path.display()));
            notes.extend(note);
        }
        Err(e) => notes.push(format!("chart not written: {e}")),
    }
    for w in results.workloads.iter().filter(|w| w.scaling) {
        match curves::write_scaling(results, w, dir) {
            Ok(files) if !files.is_empty() => {
                notes.push(format!("charts written: {}", files.join(", ")))
            }
            Ok(_) => {}
            Err(e) => notes.push(format!("chart not written: {e}")),
        }
    }
    notes
}
