//! Samba's own smbtorture suites against the `aio` and `aio_erratic` shares must give
//! the same per-test results as against the `plain` share of the same smbd, except
//! for the entries of tests/expected/expected.txt; and the aio shares' requests must have gone
//! through helper processes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::expected::{self, Expected};
use common::module::ModuleKind;
use common::namespace::{run_in_namespace, NsContext};
use common::procs::{HelperSampler, SamplerReport};
use common::smbd::{Smbd, SmbdBuilder};
use common::stats;
use common::torture::{self, Outcome, SuiteRun};

const SHARES: [&str; 3] = ["plain", "aio", "aio_erratic"];
const AIO_SHARES: [&str; 2] = ["aio", "aio_erratic"];
const SUITES: [&str; 10] = [
    "smb2.rw",
    "smb2.read",
    "smb2.aio_delay",
    "smb2.compound_async",
    "smb2.compound",
    "smb2.lock",
    "smb2.ioctl",
    // SMB1
    "raw.read",
    "raw.write",
    "base.rw1",
];
/// smb2.aio_delay never ends without erratic mode's delay: a short deadline there.
const AIO_DELAY_TIMEOUT: Duration = Duration::from_secs(20);
/// The other suites take seconds; this only bounds a hang.
const SUITE_TIMEOUT: Duration = Duration::from_secs(180);
const EXPECTED_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/expected/expected.txt");

#[test]
fn smbtorture_suites_match_plain_share() {
    run_in_namespace(
        "smbtorture_suites_match_plain_share",
        Duration::from_secs(20 * 60),
        run_all,
    );
}

fn run_all(ctx: &NsContext) {
    let started = Instant::now();
    let expected = load_expected();
    let smbd = SmbdBuilder::new(&ctx.workdir)
        // Selftest-only FSCTLs that smb2.ioctl.bug14607/bug14769 need.
        .global("smbd:FSCTL_SMBTORTURE", "yes")
        .start();
    let mut runs = Vec::new();
    let mut helpers = BTreeMap::new();
    for share in SHARES {
        let (share_runs, report) = run_share(&smbd, share, ctx.module.kind);
        runs.extend(share_runs);
        helpers.insert(share, report);
    }
    let mut problems = compare_with_plain(&runs, &expected);
    problems.extend(check_helpers(&smbd, ctx.module.kind, &helpers));
    print_summary(&runs, &expected, &helpers, started.elapsed());
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

/// Runs every suite against one share, sampling helper processes meanwhile; then
/// waits until all of the share's connections are gone (and their stats logged).
fn run_share(smbd: &Smbd, share: &str, kind: ModuleKind) -> (Vec<SuiteRun>, SamplerReport) {
    let sampler = HelperSampler::start(smbd.pid(), kind, None, Duration::from_millis(20));
    let mut runs = Vec::new();
    for suite in SUITES {
        let timeout = if suite == "smb2.aio_delay" {
            AIO_DELAY_TIMEOUT
        } else {
            SUITE_TIMEOUT
        };
        let run = torture::run_suite(smbd, share, suite, timeout);
        println!(
            "[{share}] {suite}: {} success, {} failure, {} error, {} skip, {} timeout ({:.1?})",
            run.count(Outcome::Success),
            run.count(Outcome::Failure),
            run.count(Outcome::Error),
            run.count(Outcome::Skip),
            run.count(Outcome::Timeout),
            run.output.elapsed
        );
        runs.push(run);
    }
    smbd.wait_idle(Duration::from_secs(60));
    (runs, sampler.finish())
}

/// The expectations file in use, for messages: tests/expected/expected.txt or a release's variant.
fn expected_label() -> String {
    let file = common::samba_root::expected_file(EXPECTED_FILE);
    let name = file.file_name().map_or("".into(), |n| n.to_string_lossy());
    format!("tests/{name}")
}

fn load_expected() -> BTreeMap<String, Expected> {
    // Against another release's smbd (AIO_FORK_SAMBA_ROOT): tests/expected/expected-<release>.txt.
    let file = common::samba_root::expected_file(EXPECTED_FILE);
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    expected::parse(&text, &SHARES).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Test name -> outcome, per share.
fn by_share(runs: &[SuiteRun]) -> BTreeMap<&str, BTreeMap<&str, Outcome>> {
    let mut map: BTreeMap<&str, BTreeMap<&str, Outcome>> = BTreeMap::new();
    for run in runs {
        let share = map.entry(run.share.as_str()).or_default();
        for (name, outcome) in &run.results {
            share.insert(name.as_str(), *outcome);
        }
    }
    map
}

fn compare_with_plain(runs: &[SuiteRun], expected: &BTreeMap<String, Expected>) -> Vec<String> {
    let mut problems = empty_runs(runs);
    let results = by_share(runs);
    let names: BTreeSet<&str> = results.values().flat_map(|m| m.keys().copied()).collect();
    for name in &names {
        let entry = expected.get(*name);
        let plain = results.get("plain").and_then(|m| m.get(name)).copied();
        for share in SHARES {
            let actual = results.get(share).and_then(|m| m.get(name)).copied();
            let agrees = match entry.and_then(|e| e.allows(share, actual)) {
                Some(allowed) => allowed,
                None => actual.is_some() && actual == plain,
            };
            if !agrees {
                problems.push(mismatch(name, share, actual, plain, entry));
            }
        }
    }
    for name in expected.keys() {
        if !names.contains(name.as_str()) {
            problems.push(format!(
                "{name}: listed in {} but did not run (stale entry?)",
                expected_label()
            ));
        }
    }
    problems
}

fn mismatch(
    name: &str,
    share: &str,
    actual: Option<Outcome>,
    plain: Option<Outcome>,
    entry: Option<&Expected>,
) -> String {
    let show = |o: Option<Outcome>| o.map_or("missing".to_string(), |o| o.to_string());
    let (source, wanted) = match entry.filter(|e| e.outcomes.contains_key(share)) {
        Some(e) => (expected_label(), e.show(share)),
        None => ("the plain share".to_string(), show(plain)),
    };
    format!(
        "{name} on {share}: {} but {source} says {wanted}",
        show(actual)
    )
}

/// A suite that produced no result at all (e.g. could not connect) is a problem on
/// its own, even if it did so on every share alike.
fn empty_runs(runs: &[SuiteRun]) -> Vec<String> {
    runs.iter()
        .filter(|r| r.results.is_empty())
        .map(|r| {
            format!(
                "{} on {}: no test results\n{}",
                r.suite,
                r.share,
                r.output.describe()
            )
        })
        .collect()
}

/// Proof that the aio shares' requests went through helpers: helper processes seen
/// while their suites ran (none for plain), and for our module the stats lines.
fn check_helpers(
    smbd: &Smbd,
    kind: ModuleKind,
    helpers: &BTreeMap<&str, SamplerReport>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (share, report) in helpers {
        let seen = report.max_live;
        let is_aio = AIO_SHARES.contains(share);
        if is_aio && seen == 0 {
            problems.push(format!("{share}: no helper process seen during its suites"));
        }
        if !is_aio && seen != 0 {
            problems.push(format!(
                "{share}: {seen} helper process(es) seen, expected none"
            ));
        }
        if !report.misparented.is_empty() {
            problems.push(format!(
                "{share}: helpers {:?} were not children of a connection smbd",
                report.misparented
            ));
        }
    }
    match kind {
        ModuleKind::Rust => problems.extend(check_stats(smbd)),
        ModuleKind::SambaC => {
            let lines = smbd.all_stats().len();
            if lines != 0 {
                problems.push(format!("Samba's C module printed {lines} stats line(s)?"));
            }
        }
    }
    problems
}

fn check_stats(smbd: &Smbd) -> Vec<String> {
    let all = smbd.stats();
    let mut problems = Vec::new();
    for share in SHARES {
        let total = stats::total_for(&all, share);
        println!("stats {share}: {total:?}");
        let is_aio = AIO_SHARES.contains(&share);
        if !is_aio && total.lines != 0 {
            problems.push(format!(
                "{share}: {} stats line(s), expected none",
                total.lines
            ));
        }
        // The suites read, write and flush (SMB2 FLUSH is served by fsync_send).
        let served = total.preads > 0
            && total.pread_bytes > 0
            && total.pwrites > 0
            && total.pwrite_bytes > 0
            && total.fsyncs > 0
            && total.spawned > 0;
        if is_aio && !served {
            problems.push(format!(
                "{share}: stats do not show reads, writes, fsyncs and spawned helpers: \
                 {total:?}"
            ));
        }
    }
    if let Some(other) = all.iter().find(|s| !SHARES.contains(&s.share.as_str())) {
        problems.push(format!("stats line for unknown share: {other:?}"));
    }
    problems
}

fn print_summary(
    runs: &[SuiteRun],
    expected: &BTreeMap<String, Expected>,
    helpers: &BTreeMap<&str, SamplerReport>,
    elapsed: Duration,
) {
    println!("\nsmbtorture results (success/total; F failure, E error, T timeout):");
    print!("{:<22}", "suite");
    for share in SHARES {
        print!("{share:>22}");
    }
    println!();
    for suite in SUITES {
        print!("{suite:<22}");
        for share in SHARES {
            let run = runs.iter().find(|r| r.suite == suite && r.share == share);
            print!("{:>22}", run.map_or("-".to_string(), cell));
        }
        println!();
    }
    print!("{:<22}", "max live helpers");
    for share in SHARES {
        print!("{:>22}", helpers.get(share).map_or(0, |r| r.max_live));
    }
    println!("\nexpected differences ({}):", expected_label());
    for (name, entry) in expected {
        let outcomes: Vec<String> = entry
            .outcomes
            .keys()
            .map(|share| format!("{share}={}", entry.show(share)))
            .collect();
        println!("  {name} [{}]: {}", outcomes.join(" "), entry.reason);
    }
    println!("total time {elapsed:.1?}");
}

fn cell(run: &SuiteRun) -> String {
    let mut text = format!("{}/{}", run.count(Outcome::Success), run.results.len());
    for (outcome, letter) in [
        (Outcome::Failure, 'F'),
        (Outcome::Error, 'E'),
        (Outcome::Timeout, 'T'),
    ] {
        let n = run.count(outcome);
        if n > 0 {
            text.push_str(&format!(" {n}{letter}"));
        }
    }
    text
}

#[test]
fn expected_file_is_well_formed() {
    let entries = load_expected();
    assert!(!entries.is_empty(), "{EXPECTED_FILE} lists nothing");
    for (name, entry) in &entries {
        assert!(
            SUITES.iter().any(|s| name.starts_with(&format!("{s}."))),
            "{name}: not a test of the suites this file runs"
        );
        assert!(entry.reason.len() > 10, "{name}: reason too short");
    }
}
