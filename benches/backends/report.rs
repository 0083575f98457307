//! The results: medians over repeated runs, their spread, ratios to the plain share;
//! printed as tables and written as CSV.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

/// The backend every ratio is taken against.
pub const REFERENCE: &str = "plain";
/// A median whose runs spread more than this ((max - min) / median) is flagged noisy.
pub const NOISY_SPREAD: f64 = 0.10;

/// One run of one workload on one backend.
#[derive(Clone, Debug)]
pub struct Run {
    /// The workload's main number (MiB/s or ops/s): higher is better.
    pub value: f64,
    /// CPU time of smbd and its helpers per unit of work (s/GiB or µs/op).
    pub cpu: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
}

/// What one backend gave for one workload.
#[derive(Clone, Debug)]
pub enum Cell {
    Runs(Vec<Run>),
    /// Did not run or failed; the reason is shown instead of numbers.
    Unavailable(String),
}

/// A workload, as the table names it.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Short name, for CSV and chart.
    pub id: &'static str,
    pub title: String,
    pub unit: &'static str,
    pub cpu_unit: &'static str,
    /// Per-request latencies were measured.
    pub latency: bool,
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

/// Median, minimum and maximum of some runs.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Summary {
    pub fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Summary {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            runs: n,
        })
    }

    /// (max - min) / median: 0 for a single run.
    pub fn spread(&self) -> f64 {
        if self.median > 0.0 {
            (self.max - self.min) / self.median
        } else {
            0.0
        }
    }

    pub fn noisy(&self) -> bool {
        self.spread() > NOISY_SPREAD
    }
}

/// Everything measured in one benchmark run.
pub struct Results {
    pub backends: Vec<&'static str>,
    pub workloads: Vec<Workload>,
    cells: Vec<(&'static str, &'static str, Cell)>,
    pub extras: Vec<Extra>,
    /// Free-text lines printed after the tables (what was unavailable and why, etc.).
    pub notes: Vec<String>,
}

impl Results {
    pub fn new(backends: Vec<&'static str>) -> Self {
        Results {
            backends,
            workloads: Vec::new(),
            cells: Vec::new(),
            extras: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn add_workload(&mut self, workload: Workload) {
        self.workloads.push(workload);
    }

    /// Adds a run; ignored if the cell is already unavailable.
    pub fn add_run(&mut self, workload: &'static str, backend: &'static str, run: Run) {
        match self.cell_mut(workload, backend) {
            Some(Cell::Runs(runs)) => runs.push(run),
            Some(Cell::Unavailable(_)) => {}
            None => self.cells.push((workload, backend, Cell::Runs(vec![run]))),
        }
    }

    /// Marks a cell unavailable (its runs so far are dropped: a backend that fails
    /// once is not reported with the numbers of its lucky runs).
    pub fn set_unavailable(&mut self, workload: &'static str, backend: &'static str, why: String) {
        match self.cell_mut(workload, backend) {
            Some(cell) => *cell = Cell::Unavailable(why),
            None => self.cells.push((workload, backend, Cell::Unavailable(why))),
        }
    }

    pub fn is_unavailable(&self, workload: &str, backend: &str) -> bool {
        matches!(self.cell(workload, backend), Some(Cell::Unavailable(_)))
    }

    pub fn cell(&self, workload: &str, backend: &str) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|(w, b, _)| *w == workload && *b == backend)
            .map(|(_, _, c)| c)
    }

    fn cell_mut(&mut self, workload: &str, backend: &str) -> Option<&mut Cell> {
        self.cells
            .iter_mut()
            .find(|(w, b, _)| *w == workload && *b == backend)
            .map(|(_, _, c)| c)
    }

    /// Summary of one metric of a cell.
    pub fn summary(&self, workload: &str, backend: &str, metric: Metric) -> Option<Summary> {
        let Some(Cell::Runs(runs)) = self.cell(workload, backend) else {
            return None;
        };
        let values: Vec<f64> = runs.iter().filter_map(|r| metric.of(r)).collect();
        Summary::of(&values)
    }

    /// Median of `metric` divided by the plain share's median.
    pub fn ratio(&self, workload: &str, backend: &str, metric: Metric) -> Option<f64> {
        let own = self.summary(workload, backend, metric)?.median;
        let reference = self.summary(workload, REFERENCE, metric)?.median;
        (reference > 0.0).then(|| own / reference)
    }
}

/// The numbers of a [`Run`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    Value,
    Cpu,
    P50,
    P99,
}

impl Metric {
    fn of(self, run: &Run) -> Option<f64> {
        match self {
            Metric::Value => Some(run.value),
            Metric::Cpu => Some(run.cpu),
            Metric::P50 => run.p50_us,
            Metric::P99 => run.p99_us,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Metric::Value => "value",
            Metric::Cpu => "cpu",
            Metric::P50 => "p50_us",
            Metric::P99 => "p99_us",
        }
    }
}

/// Median with a `!` when the runs behind it are noisy.
fn fmt_median(s: &Summary) -> String {
    let digits = match s.median.abs() {
        m if m >= 100.0 => 0,
        m if m >= 10.0 => 1,
        _ => 2,
    };
    let flag = if s.noisy() { "!" } else { "" };
    format!("{:.*}{flag}", digits, s.median)
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_string(), |r| format!("{r:.2}"))
}

/// The tables, as printed at the end of a run.
pub fn render(results: &Results) -> String {
    let mut out = String::new();
    for workload in &results.workloads {
        render_workload(&mut out, results, workload);
    }
    render_matrix(&mut out, results);
    render_extras(&mut out, results);
    let _ = writeln!(
        out,
        "\n! = noisy: the runs behind this median spread by more than {:.0}% \
         ((max - min) / median); the spread column gives it for the main number.",
        NOISY_SPREAD * 100.0
    );
    for note in &results.notes {
        let _ = writeln!(out, "{note}");
    }
    out
}

fn render_workload(out: &mut String, results: &Results, w: &Workload) {
    let _ = writeln!(out, "\n== {} ==", w.title);
    let mut header = format!(
        "{:<12} {:>10} {:>7} {:>7}",
        "backend", w.unit, "xplain", "spread"
    );
    if w.latency {
        let _ = write!(header, " {:>8} {:>8}", "p50 us", "p99 us");
    }
    let _ = write!(header, " {:>12} {:>7}", w.cpu_unit, "xplain");
    let _ = writeln!(out, "{header}");
    for backend in &results.backends {
        let _ = write!(out, "{backend:<12}");
        match results.cell(w.id, backend) {
            None => {
                let _ = writeln!(out, " (not run)");
            }
            Some(Cell::Unavailable(why)) => {
                let _ = writeln!(out, " unavailable: {why}");
            }
            Some(Cell::Runs(_)) => {
                let value = results.summary(w.id, backend, Metric::Value);
                let cpu = results.summary(w.id, backend, Metric::Cpu);
                let v = value.expect("a cell with runs has values");
                let _ = write!(
                    out,
                    " {:>10} {:>7} {:>6.0}%",
                    fmt_median(&v),
                    fmt_ratio(results.ratio(w.id, backend, Metric::Value)),
                    v.spread() * 100.0
                );
                if w.latency {
                    for metric in [Metric::P50, Metric::P99] {
                        let s = results.summary(w.id, backend, metric);
                        let _ =
                            write!(out, " {:>8}", s.map_or("-".to_string(), |s| fmt_median(&s)));
                    }
                }
                let _ = writeln!(
                    out,
                    " {:>12} {:>7}",
                    cpu.map_or("-".to_string(), |s| fmt_median(&s)),
                    fmt_ratio(results.ratio(w.id, backend, Metric::Cpu))
                );
            }
        }
    }
}

/// Backend x workload: the main number's ratio to plain, one table for all.
fn render_matrix(out: &mut String, results: &Results) {
    let _ = writeln!(
        out,
        "\n== Ratio to plain (main number of each workload; higher is better) =="
    );
    let _ = write!(out, "{:<12}", "backend");
    for w in &results.workloads {
        let _ = write!(out, " {:>12}", w.id);
    }
    let _ = writeln!(out);
    for backend in &results.backends {
        let _ = write!(out, "{backend:<12}");
        for w in &results.workloads {
            let text = match results.cell(w.id, backend) {
                Some(Cell::Unavailable(_)) => "n/a".to_string(),
                _ => {
                    let noisy = results
                        .summary(w.id, backend, Metric::Value)
                        .is_some_and(|s| s.noisy());
                    let r = fmt_ratio(results.ratio(w.id, backend, Metric::Value));
                    if noisy {
                        format!("{r}!")
                    } else {
                        r
                    }
                }
            };
            let _ = write!(out, " {text:>12}");
        }
        let _ = writeln!(out);
    }
}

fn render_extras(out: &mut String, results: &Results) {
    let mut sections: Vec<&str> = Vec::new();
    for e in &results.extras {
        if !sections.contains(&e.section) {
            sections.push(e.section);
        }
    }
    for section in sections {
        let _ = writeln!(out, "\n== {section} ==");
        for e in results.extras.iter().filter(|e| e.section == section) {
            let Some(s) = Summary::of(&e.values) else {
                let _ = writeln!(out, "{:<12} {:<44} (none seen)", e.backend, e.metric);
                continue;
            };
            let _ = writeln!(
                out,
                "{:<12} {:<44} {:>10} {:<6} (min {:.0}, max {:.0}, {} values)",
                e.backend,
                e.metric,
                fmt_median(&s),
                e.unit,
                s.min,
                s.max,
                s.runs
            );
        }
    }
}

/// One row per workload, backend and metric; then the extras.
pub fn write_csv(results: &Results, path: &Path) -> std::io::Result<()> {
    let mut text = String::from(
        "workload,backend,metric,unit,median,min,max,spread_pct,ratio_to_plain,noisy,runs,note\n",
    );
    for w in &results.workloads {
        for backend in &results.backends {
            match results.cell(w.id, backend) {
                None => {}
                Some(Cell::Unavailable(why)) => {
                    let _ = writeln!(
                        text,
                        "{},{backend},{},{},,,,,,,0,{}",
                        w.id,
                        Metric::Value.name(),
                        csv_field(w.unit),
                        csv_field(&format!("unavailable: {why}"))
                    );
                }
                Some(Cell::Runs(_)) => {
                    for (metric, unit) in [
                        (Metric::Value, w.unit),
                        (Metric::P50, "us"),
                        (Metric::P99, "us"),
                        (Metric::Cpu, w.cpu_unit),
                    ] {
                        let Some(s) = results.summary(w.id, backend, metric) else {
                            continue;
                        };
                        let ratio = results
                            .ratio(w.id, backend, metric)
                            .map_or(String::new(), |r| format!("{r:.4}"));
                        let _ = writeln!(
                            text,
                            "{},{backend},{},{},{:.4},{:.4},{:.4},{:.1},{ratio},{},{},",
                            w.id,
                            metric.name(),
                            csv_field(unit),
                            s.median,
                            s.min,
                            s.max,
                            s.spread() * 100.0,
                            s.noisy(),
                            s.runs
                        );
                    }
                }
            }
        }
    }
    for e in &results.extras {
        if let Some(s) = Summary::of(&e.values) {
            let _ = writeln!(
                text,
                "{},{},{},{},{:.4},{:.4},{:.4},{:.1},,{},{},",
                csv_field(e.section),
                e.backend,
                csv_field(&e.metric),
                csv_field(e.unit),
                s.median,
                s.min,
                s.max,
                s.spread() * 100.0,
                s.noisy(),
                s.runs
            );
        }
    }
    fs::write(path, text)
}

/// Quotes a CSV field when it holds a comma, quote or newline.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}
