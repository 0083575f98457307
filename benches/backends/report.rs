//! The results of one benchmark run: every run of every (workload, backend, clients)
//! point with the repeat it belongs to, the summaries drawn from them (see
//! estimate.rs), and the CSV files.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use crate::estimate::{self, Estimate, Verdict};

/// The backend every ratio is taken against.
pub const REFERENCE: &str = "plain";

/// One run of one workload on one backend with some clients.
#[derive(Clone, Debug, Default)]
pub struct Run {
    /// Which repeat it belongs to: runs of the same repeat are paired for ratios.
    pub rep: usize,
    /// The workload's main number (MiB/s or ops/s): higher is better.
    pub value: f64,
    /// CPU time of smbd and its helpers per unit of work (s/GiB or µs/op).
    pub cpu: f64,
    /// Of which the connection processes (all their threads), their main threads, and
    /// the processes below them (helpers, zygotes), per unit of work.
    pub cpu_conn: Option<f64>,
    pub cpu_main: Option<f64>,
    pub cpu_helpers: Option<f64>,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// PSS of smbd and all its descendants: the highest sample during the run, MiB.
    pub pss_peak_mib: Option<f64>,
    /// The same, a while after the run with the clients still connected, MiB.
    pub pss_after_mib: Option<f64>,
    /// Processes in smbd's tree, and helpers among them, at the peak / after.
    pub procs_peak: Option<f64>,
    pub procs_after: Option<f64>,
    pub helpers_after: Option<f64>,
}

/// A workload, as the tables name it.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Short name, for CSV and charts.
    pub id: &'static str,
    pub title: String,
    pub unit: &'static str,
    pub cpu_unit: &'static str,
    /// Per-request latencies were measured.
    pub latency: bool,
    /// Run with several client counts (a scaling curve).
    pub scaling: bool,
}

/// A further measurement shown in its own section (helper memory, fork cost).
#[derive(Clone, Debug)]
pub struct Extra {
    pub section: &'static str,
    pub backend: String,
    pub metric: String,
    pub unit: &'static str,
    pub values: Vec<f64>,
}

/// The numbers of a [`Run`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    Value,
    Cpu,
    ConnCpu,
    MainCpu,
    HelperCpu,
    P50,
    P99,
    PssPeak,
    PssAfter,
    ProcsPeak,
    ProcsAfter,
    HelpersAfter,
}

impl Metric {
    pub const ALL: [Metric; 12] = [
        Metric::Value,
        Metric::Cpu,
        Metric::ConnCpu,
        Metric::MainCpu,
        Metric::HelperCpu,
        Metric::P50,
        Metric::P99,
        Metric::PssPeak,
        Metric::PssAfter,
        Metric::ProcsPeak,
        Metric::ProcsAfter,
        Metric::HelpersAfter,
    ];

    pub fn of(self, run: &Run) -> Option<f64> {
        match self {
            Metric::Value => Some(run.value),
            Metric::Cpu => Some(run.cpu),
            Metric::ConnCpu => run.cpu_conn,
            Metric::MainCpu => run.cpu_main,
            Metric::HelperCpu => run.cpu_helpers,
            Metric::P50 => run.p50_us,
            Metric::P99 => run.p99_us,
            Metric::PssPeak => run.pss_peak_mib,
            Metric::PssAfter => run.pss_after_mib,
            Metric::ProcsPeak => run.procs_peak,
            Metric::ProcsAfter => run.procs_after,
            Metric::HelpersAfter => run.helpers_after,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::Value => "value",
            Metric::Cpu => "cpu",
            Metric::ConnCpu => "cpu_conn",
            Metric::MainCpu => "cpu_main_thread",
            Metric::HelperCpu => "cpu_helpers",
            Metric::P50 => "p50_us",
            Metric::P99 => "p99_us",
            Metric::PssPeak => "pss_peak_mib",
            Metric::PssAfter => "pss_after_mib",
            Metric::ProcsPeak => "procs_peak",
            Metric::ProcsAfter => "procs_after",
            Metric::HelpersAfter => "helpers_after",
        }
    }

    /// Throughput is better high; latency, CPU and memory low.
    pub fn higher_is_better(self) -> bool {
        self == Metric::Value
    }
}

/// One figure of one point against the reference's.
#[derive(Clone, Copy, Debug)]
pub struct Comparison {
    pub own: Estimate,
    /// Paired ratios own / reference (none for the reference itself).
    pub ratio: Option<Estimate>,
    pub verdict: Option<Verdict>,
}

/// Everything measured in one benchmark run.
pub struct Results {
    pub backends: Vec<&'static str>,
    pub workloads: Vec<Workload>,
    /// (workload, backend, clients) and its runs.
    points: Vec<(&'static str, &'static str, usize, Vec<Run>)>,
    unavailable: Vec<(&'static str, &'static str, String)>,
    pub extras: Vec<Extra>,
    /// Free-text lines printed after the tables (what was unavailable and why, etc.).
    pub notes: Vec<String>,
}

impl Results {
    pub fn new(backends: Vec<&'static str>) -> Self {
        Results {
            backends,
            workloads: Vec::new(),
            points: Vec::new(),
            unavailable: Vec::new(),
            extras: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn add_workload(&mut self, workload: Workload) {
        self.workloads.push(workload);
    }

    pub fn workload(&self, id: &str) -> Option<&Workload> {
        self.workloads.iter().find(|w| w.id == id)
    }

    /// Adds a run; ignored if the backend is unavailable for the workload.
    pub fn add_run(
        &mut self,
        workload: &'static str,
        backend: &'static str,
        clients: usize,
        run: Run,
    ) {
        if self.is_unavailable(workload, backend) {
            return;
        }
        match self
            .points
            .iter_mut()
            .find(|(w, b, c, _)| *w == workload && *b == backend && *c == clients)
        {
            Some((_, _, _, runs)) => runs.push(run),
            None => self.points.push((workload, backend, clients, vec![run])),
        }
    }

    /// Marks a backend unavailable for a workload (its runs so far are dropped: a
    /// backend that fails once is not reported with the numbers of its lucky runs).
    pub fn set_unavailable(&mut self, workload: &'static str, backend: &'static str, why: String) {
        if self.is_unavailable(workload, backend) {
            return;
        }
        self.points
            .retain(|(w, b, _, _)| !(*w == workload && *b == backend));
        self.unavailable.push((workload, backend, why));
    }

    pub fn unavailable_reason(&self, workload: &str, backend: &str) -> Option<&str> {
        self.unavailable
            .iter()
            .find(|(w, b, _)| *w == workload && *b == backend)
            .map(|(_, _, why)| why.as_str())
    }

    pub fn is_unavailable(&self, workload: &str, backend: &str) -> bool {
        self.unavailable_reason(workload, backend).is_some()
    }

    pub fn runs(&self, workload: &str, backend: &str, clients: usize) -> &[Run] {
        self.points
            .iter()
            .find(|(w, b, c, _)| *w == workload && *b == backend && *c == clients)
            .map_or(&[], |(_, _, _, runs)| runs.as_slice())
    }

    /// The client counts a workload was run with, ascending.
    pub fn client_points(&self, workload: &str) -> Vec<usize> {
        let mut points: Vec<usize> = self
            .points
            .iter()
            .filter(|(w, _, _, _)| *w == workload)
            .map(|(_, _, c, _)| *c)
            .collect();
        points.sort_unstable();
        points.dedup();
        points
    }

    fn values(
        &self,
        workload: &str,
        backend: &str,
        clients: usize,
        metric: Metric,
    ) -> Vec<(usize, f64)> {
        self.runs(workload, backend, clients)
            .iter()
            .filter_map(|r| Some((r.rep, metric.of(r)?)))
            .collect()
    }

    /// The median, interval, paired ratio to plain and verdict of one figure.
    pub fn compare(
        &self,
        workload: &str,
        backend: &str,
        clients: usize,
        metric: Metric,
    ) -> Option<Comparison> {
        let own_values = self.values(workload, backend, clients, metric);
        let seed = seed_of(workload, backend, clients, metric);
        let own = Estimate::of(&plain(&own_values), seed)?;
        if backend == REFERENCE {
            return Some(Comparison {
                own,
                ratio: None,
                verdict: None,
            });
        }
        let ref_values = self.values(workload, REFERENCE, clients, metric);
        let reference = Estimate::of(
            &plain(&ref_values),
            seed_of(workload, REFERENCE, clients, metric),
        );
        let ratios = estimate::paired_ratios(&own_values, &ref_values);
        let ratio = Estimate::of(&ratios, seed ^ 0x5555);
        let verdict = match (&reference, &ratio) {
            (Some(r), Some(q)) => Some(estimate::verdict(&own, r, q, metric.higher_is_better())),
            _ => None,
        };
        Some(Comparison {
            own,
            ratio,
            verdict,
        })
    }
}

fn plain(values: &[(usize, f64)]) -> Vec<f64> {
    values.iter().map(|(_, v)| *v).collect()
}

/// A seed per figure, so that every figure's interval is reproducible on its own.
fn seed_of(workload: &str, backend: &str, clients: usize, metric: Metric) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in workload
        .bytes()
        .chain(backend.bytes())
        .chain(metric.name().bytes())
        .chain(clients.to_le_bytes())
    {
        h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The summary CSV: one row per workload, backend, clients and metric; then the
/// extras. Beside it `<stem>.runs.csv` holds every run.
pub fn write_csv(results: &Results, path: &Path) -> std::io::Result<()> {
    let mut text = String::from(
        "workload,backend,clients,metric,unit,median,min,max,ci95_lo,ci95_hi,ratio_to_plain,\
         ratio_ci95_lo,ratio_ci95_hi,verdict,runs,note\n",
    );
    let mut runs = String::from(
        "workload,backend,clients,rep,value,cpu,cpu_conn,cpu_main_thread,cpu_helpers,p50_us,\
         p99_us,pss_peak_mib,pss_after_mib,procs_peak,procs_after,helpers_after\n",
    );
    for w in &results.workloads {
        for backend in &results.backends {
            if let Some(why) = results.unavailable_reason(w.id, backend) {
                let _ = writeln!(
                    text,
                    "{},{backend},,value,{},,,,,,,,,,0,{}",
                    w.id,
                    csv_field(w.unit),
                    csv_field(&format!("unavailable: {why}"))
                );
                continue;
            }
            for clients in results.client_points(w.id) {
                for metric in Metric::ALL {
                    let Some(c) = results.compare(w.id, backend, clients, metric) else {
                        continue;
                    };
                    let unit = match metric {
                        Metric::Value => w.unit,
                        Metric::Cpu | Metric::ConnCpu | Metric::MainCpu | Metric::HelperCpu => {
                            w.cpu_unit
                        }
                        Metric::P50 | Metric::P99 => "us",
                        Metric::PssPeak | Metric::PssAfter => "MiB",
                        _ => "",
                    };
                    let (r, rlo, rhi) =
                        c.ratio
                            .map_or((String::new(), String::new(), String::new()), |r| {
                                (
                                    format!("{:.4}", r.median),
                                    format!("{:.4}", r.lo),
                                    format!("{:.4}", r.hi),
                                )
                            });
                    let verdict = c.verdict.map_or("", |v| v.text(metric.higher_is_better()));
                    let o = c.own;
                    let _ = writeln!(
                        text,
                        "{},{backend},{clients},{},{},{:.4},{:.4},{:.4},{:.4},{:.4},{r},{rlo},{rhi},{},{},",
                        w.id,
                        metric.name(),
                        csv_field(unit),
                        o.median,
                        o.min,
                        o.max,
                        o.lo,
                        o.hi,
                        csv_field(verdict),
                        o.runs
                    );
                }
                for run in results.runs(w.id, backend, clients) {
                    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.4}"));
                    let _ = writeln!(
                        runs,
                        "{},{backend},{clients},{},{:.4},{:.4},{},{},{},{},{},{},{},{},{},{}",
                        w.id,
                        run.rep,
                        run.value,
                        run.cpu,
                        opt(run.cpu_conn),
                        opt(run.cpu_main),
                        opt(run.cpu_helpers),
                        opt(run.p50_us),
                        opt(run.p99_us),
                        opt(run.pss_peak_mib),
                        opt(run.pss_after_mib),
                        opt(run.procs_peak),
                        opt(run.procs_after),
                        opt(run.helpers_after)
                    );
                }
            }
        }
    }
    for e in &results.extras {
        if let Some(s) = Estimate::of(&e.values, 1) {
            let _ = writeln!(
                text,
                "{},{},,{},{},{:.4},{:.4},{:.4},{:.4},{:.4},,,,,{},",
                csv_field(e.section),
                e.backend,
                csv_field(&e.metric),
                csv_field(e.unit),
                s.median,
                s.min,
                s.max,
                s.lo,
                s.hi,
                s.runs
            );
        }
    }
    fs::write(path, text)?;
    fs::write(runs_csv_path(path), runs)
}

/// `bench.csv` → `bench.runs.csv`.
pub fn runs_csv_path(path: &Path) -> std::path::PathBuf {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("bench");
    path.with_file_name(format!("{stem}.runs.csv"))
}

/// Quotes a CSV field when it holds a comma, quote or newline.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}
