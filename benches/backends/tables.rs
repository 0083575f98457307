//! The printed report: one table per workload (backend × clients: median [95%
//! interval], paired ratio to plain [interval], verdict), the memory scenario, the
//! ext4/XFS side-by-side, and the extra sections.

use std::fmt::Write as _;

use crate::estimate::{Estimate, MIN_RUNS_FOR_VERDICT};
use crate::report::{Comparison, Metric, Results, Workload, REFERENCE};

/// The memory scenario's targets for a fork-based backend.
const IDLE_MIB_PER_CONNECTION: f64 = 1.0;
const PEAK_RATIO: f64 = 1.5;

/// Which workloads get the special tables.
pub struct Layout<'a> {
    /// The memory scenarios' workloads.
    pub memory: Vec<&'a str>,
    /// How long after a run idle memory was sampled.
    pub settle: std::time::Duration,
    /// (ext4 workload, XFS workload, title) pairs printed side by side.
    pub filesystems: Vec<(&'a str, &'a str, &'a str)>,
}

pub fn render(results: &Results, layout: &Layout) -> String {
    let mut out = String::new();
    let side_by_side: Vec<&str> = layout.filesystems.iter().map(|(_, x, _)| *x).collect();
    for w in &results.workloads {
        if layout.memory.contains(&w.id) {
            render_memory(&mut out, results, w, layout);
        } else if !side_by_side.contains(&w.id) {
            render_workload(&mut out, results, w);
        }
    }
    if !layout.filesystems.is_empty() {
        render_filesystems(&mut out, results, layout);
    }
    render_extras(&mut out, results);
    let _ = writeln!(
        out,
        "\nHow to read: median of the runs [bootstrap 95% interval of the median; with 3-5 \
         runs it is about min..max]. x plain: ratio to plain within each repeat (runs paired \
         by repeat), median [95% interval]. A verdict (faster/slower, lower/higher) needs at \
         least {MIN_RUNS_FOR_VERDICT} paired runs, the two medians' intervals apart and the \
         ratio's interval wholly on one side of 1; otherwise \"same (within noise)\". Backends \
         ran interleaved: every repeat runs each backend once, in an order rotated per \
         repeat and point."
    );
    for note in &results.notes {
        let _ = writeln!(out, "{note}");
    }
    out
}

/// 3 significant-ish digits: 12345, 123.4, 1.23.
pub fn num(v: f64) -> String {
    let digits = match v.abs() {
        m if m >= 100.0 => 0,
        m if m >= 10.0 => 1,
        _ => 2,
    };
    format!("{v:.digits$}")
}

/// A reason on one table row: the first lines joined, cut to a readable length (the
/// whole text is in the CSV).
fn one_line(why: &str) -> String {
    const MAX: usize = 120;
    let joined = why.lines().map(str::trim).collect::<Vec<_>>().join(" | ");
    if joined.chars().count() <= MAX {
        joined
    } else {
        format!("{}...", joined.chars().take(MAX).collect::<String>())
    }
}

fn with_interval(e: &Estimate) -> String {
    if e.runs == 1 {
        num(e.median)
    } else {
        format!("{} [{}, {}]", num(e.median), num(e.lo), num(e.hi))
    }
}

fn ratio_text(c: &Comparison) -> String {
    match &c.ratio {
        None => "1 (reference)".to_string(),
        Some(r) if r.runs == 1 => format!("{:.2}", r.median),
        Some(r) => format!("{:.2} [{:.2}, {:.2}]", r.median, r.lo, r.hi),
    }
}

fn verdict_text(c: &Comparison, metric: Metric) -> &'static str {
    c.verdict.map_or("", |v| v.text(metric.higher_is_better()))
}

fn median_or_dash(c: Option<Comparison>) -> String {
    c.map_or("-".to_string(), |c| num(c.own.median))
}

fn render_workload(out: &mut String, results: &Results, w: &Workload) {
    let _ = writeln!(out, "\n== {} [{}] ==", w.title, w.id);
    let value_head = format!("{} [95%]", w.unit);
    let mut header = format!(
        "{:>7} {:<12} {:>24} {:>20} {:<20}",
        "clients", "backend", value_head, "x plain [95%]", "verdict"
    );
    if w.latency {
        let _ = write!(header, " {:>8} {:>8}", "p50 us", "p99 us");
    }
    let _ = write!(
        header,
        " {:>10} {:>7} {:>7} {:>7} {:>7} {:>7}",
        w.cpu_unit, "x plain", "conn", "x plain", "main", "helpers"
    );
    let memory = results.client_points(w.id).iter().any(|&c| {
        results
            .compare(w.id, REFERENCE, c, Metric::PssPeak)
            .is_some()
    });
    if memory {
        let _ = write!(header, " {:>9} {:>9}", "PSS peak", "PSS idle");
    }
    let _ = writeln!(out, "{header}");
    for (i, clients) in results.client_points(w.id).into_iter().enumerate() {
        if i > 0 {
            let _ = writeln!(out);
        }
        for backend in &results.backends {
            let _ = write!(out, "{clients:>7} {backend:<12}");
            if let Some(why) = results.unavailable_reason(w.id, backend) {
                let _ = writeln!(out, " unavailable: {}", one_line(why));
                continue;
            }
            let Some(value) = results.compare(w.id, backend, clients, Metric::Value) else {
                let _ = writeln!(out, " (not run)");
                continue;
            };
            let _ = write!(
                out,
                " {:>24} {:>20} {:<20}",
                with_interval(&value.own),
                ratio_text(&value),
                verdict_text(&value, Metric::Value)
            );
            if w.latency {
                for metric in [Metric::P50, Metric::P99] {
                    let m = median_or_dash(results.compare(w.id, backend, clients, metric));
                    let _ = write!(out, " {m:>8}");
                }
            }
            let ratio = |c: Option<Comparison>| {
                c.and_then(|c| c.ratio)
                    .map_or("-".to_string(), |r| format!("{:.2}", r.median))
            };
            let cpu = results.compare(w.id, backend, clients, Metric::Cpu);
            let conn = results.compare(w.id, backend, clients, Metric::ConnCpu);
            let main = results.compare(w.id, backend, clients, Metric::MainCpu);
            let helpers = results.compare(w.id, backend, clients, Metric::HelperCpu);
            let _ = write!(
                out,
                " {:>10} {:>7} {:>7} {:>7} {:>7} {:>7}",
                median_or_dash(cpu),
                ratio(cpu),
                median_or_dash(conn),
                ratio(conn),
                median_or_dash(main),
                median_or_dash(helpers)
            );
            if memory {
                for metric in [Metric::PssPeak, Metric::PssAfter] {
                    let m = median_or_dash(results.compare(w.id, backend, clients, metric));
                    let _ = write!(out, " {m:>9}");
                }
            }
            let _ = writeln!(out);
        }
    }
    let _ = writeln!(
        out,
        "(CPU: server side per unit of work, all of smbd's processes; conn: the connection \
         processes (every thread), main: their main threads, helpers: the processes below \
         them){}",
        if memory {
            "\n(PSS: MiB, smbd and all its descendants; peak sampled during the run, idle \
             while the clients stay connected after it, where measured)"
        } else {
            ""
        }
    );
}

fn render_memory(out: &mut String, results: &Results, w: &Workload, layout: &Layout) {
    let _ = writeln!(out, "\n== {} [{}] ==", w.title, w.id);
    let _ = writeln!(
        out,
        "{:>7} {:<12} {:>6} {:>7} {:>22} {:>18} {:>22} {:>10} {:<22}",
        "clients",
        "backend",
        "procs",
        "helpers",
        "PSS peak MiB [95%]",
        "x plain [95%]",
        "PSS idle MiB [95%]",
        "idle/conn",
        "targets"
    );
    for (i, clients) in results.client_points(w.id).into_iter().enumerate() {
        if i > 0 {
            let _ = writeln!(out);
        }
        let plain_idle = results
            .compare(w.id, REFERENCE, clients, Metric::PssAfter)
            .map(|c| c.own.median);
        for backend in &results.backends {
            let _ = write!(out, "{clients:>7} {backend:<12}");
            if let Some(why) = results.unavailable_reason(w.id, backend) {
                let _ = writeln!(out, " unavailable: {}", one_line(why));
                continue;
            }
            let get = |m| results.compare(w.id, backend, clients, m);
            let (Some(peak), after) = (get(Metric::PssPeak), get(Metric::PssAfter)) else {
                let _ = writeln!(out, " (not run)");
                continue;
            };
            let count = |m| get(m).map_or("-".to_string(), |c| format!("{:.0}", c.own.median));
            let procs = count(Metric::ProcsAfter);
            let helpers = count(Metric::HelpersAfter);
            // Idle memory above plain's, per connection: what each idle client costs.
            let per_conn = match (after, plain_idle) {
                (Some(a), Some(p)) => Some((a.own.median - p) / clients as f64),
                _ => None,
            };
            let targets = if backend == &REFERENCE {
                String::new()
            } else {
                let peak_ok = peak.ratio.map(|r| r.median <= PEAK_RATIO);
                let idle_ok = per_conn.map(|d| d <= IDLE_MIB_PER_CONNECTION);
                let word = |ok: Option<bool>| match ok {
                    Some(true) => "ok",
                    Some(false) => "OVER",
                    None => "?",
                };
                format!("peak {} idle {}", word(peak_ok), word(idle_ok))
            };
            let _ = writeln!(
                out,
                " {procs:>6} {helpers:>7} {:>22} {:>18} {:>22} {:>10} {targets:<22}",
                with_interval(&peak.own),
                ratio_text(&peak),
                after.map_or("-".to_string(), |a| with_interval(&a.own)),
                per_conn.map_or("-".to_string(), |d| format!("{d:+.2}")),
            );
        }
    }
    let _ = writeln!(
        out,
        "(PSS of smbd and all its descendants; idle: {:.1} s after every client finished, \
         clients still connected; procs/helpers counted then. idle/conn: (idle - plain's \
         idle) / clients, MiB. Targets: peak <= {PEAK_RATIO}x plain, idle/conn <= \
         {IDLE_MIB_PER_CONNECTION} MiB)",
        layout.settle.as_secs_f64()
    );
}

/// The same workload on ext4 and on XFS, one row per backend and clients.
fn render_filesystems(out: &mut String, results: &Results, layout: &Layout) {
    for (ext4, xfs, title) in &layout.filesystems {
        let Some(w) = results.workload(xfs) else {
            continue;
        };
        let _ = writeln!(
            out,
            "\n== {title}: ext4 | XFS ({}) [{ext4} | {xfs}] ==",
            w.unit
        );
        let _ = writeln!(
            out,
            "{:>7} {:<12} | {:>22} {:>18} {:<20} | {:>22} {:>18} {:<20}",
            "clients",
            "backend",
            "ext4 [95%]",
            "x plain",
            "verdict",
            "XFS [95%]",
            "x plain",
            "verdict"
        );
        for clients in results.client_points(xfs) {
            for backend in &results.backends {
                let cell = |workload: &str| -> Option<String> {
                    if let Some(why) = results.unavailable_reason(workload, backend) {
                        return Some(format!("unavailable: {}", one_line(why)));
                    }
                    let c = results.compare(workload, backend, clients, Metric::Value)?;
                    Some(format!(
                        "{:>22} {:>18} {:<20}",
                        with_interval(&c.own),
                        ratio_text(&c),
                        verdict_text(&c, Metric::Value)
                    ))
                };
                let x = cell(xfs);
                if x.is_none() && !results.is_unavailable(xfs, backend) {
                    continue;
                }
                let e = cell(ext4).unwrap_or_else(|| format!("{:>22} {:>18} {:<20}", "-", "", ""));
                let _ = writeln!(
                    out,
                    "{clients:>7} {backend:<12} | {e} | {}",
                    x.unwrap_or_default()
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "(ext4 columns: the scaling runs at the same client count; XFS: runs of their own, \
         interleaved the same way; ratios are to plain on the same file system)"
    );
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
            let Some(s) = Estimate::of(&e.values, 1) else {
                let _ = writeln!(out, "{:<12} {:<52} (none seen)", e.backend, e.metric);
                continue;
            };
            let _ = writeln!(
                out,
                "{:<12} {:<52} {:>10} {:<6} (min {}, max {}, {} values)",
                e.backend,
                e.metric,
                num(s.median),
                e.unit,
                num(s.min),
                num(s.max),
                s.runs
            );
        }
    }
}
