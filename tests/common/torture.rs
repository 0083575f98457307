//! Running smbtorture suites and reading their per-test results.
//!
//! smbtorture (4.17, `--fullname`) prints, per test:
//! `test: smb2.rw.rw1` ... then one of `success: NAME`, `failure: NAME [`,
//! `error: NAME [`, `skip: NAME [`; a `[` opens a message closed by a line starting
//! with `]`. A test's own output may lack a final newline, so a result keyword can be
//! glued to the end of another line (`0success: ...` has been seen).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::run::{self, Output};
use super::smbd::Smbd;
use super::tools;

/// A test's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Success,
    Failure,
    Error,
    Skip,
    /// Started, and smbtorture was killed at its deadline before it ended.
    Timeout,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Error => "error",
            Outcome::Skip => "skip",
            Outcome::Timeout => "timeout",
        }
    }

    pub fn parse(text: &str) -> Option<Outcome> {
        [
            Outcome::Success,
            Outcome::Failure,
            Outcome::Error,
            Outcome::Skip,
            Outcome::Timeout,
        ]
        .into_iter()
        .find(|o| o.as_str() == text)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One smbtorture run of one suite against one share.
#[derive(Debug)]
pub struct SuiteRun {
    pub share: String,
    pub suite: String,
    /// Full test name -> outcome.
    pub results: BTreeMap<String, Outcome>,
    pub output: Output,
}

impl SuiteRun {
    pub fn count(&self, outcome: Outcome) -> usize {
        self.results.values().filter(|o| **o == outcome).count()
    }
}

/// Runs `smbtorture --fullname --target=samba3 //127.0.0.1/<share> -U.. <suite>`, killing it after
/// `timeout`; a test left unfinished by the kill is recorded as [`Outcome::Timeout`].
pub fn run_suite(smbd: &Smbd, share: &str, suite: &str, timeout: Duration) -> SuiteRun {
    // smbtorture makes a temp dir in its cwd and leaves it when killed: keep it in
    // the test's own directory.
    let cwd = smbd.dir.join("torture");
    std::fs::create_dir_all(&cwd).expect("create smbtorture dir");
    let mut cmd = tools::command("smbtorture");
    cmd.current_dir(&cwd);
    // --target=samba3 as Samba's own selftest: Samba-specific expectations
    // (e.g. smb2.rw.invalid's write just below the 16 TiB file size limit).
    cmd.arg("--fullname")
        .arg("--target=samba3")
        .arg("-s")
        .arg(&smbd.conf)
        .arg(smbd.unc(share))
        .arg(format!("-U{}", smbd.credentials()))
        .arg(suite);
    let output = run::run(&mut cmd, timeout);
    let results = parse_results(&output.combined(), output.timed_out);
    SuiteRun {
        share: share.to_string(),
        suite: suite.to_string(),
        results,
        output,
    }
}

const KEYWORDS: [(&str, Outcome); 4] = [
    ("success: ", Outcome::Success),
    ("failure: ", Outcome::Failure),
    ("error: ", Outcome::Error),
    ("skip: ", Outcome::Skip),
];

/// Parses smbtorture's output. A test that started but has no result line is a
/// Timeout if the run was killed, else an Error (smbtorture died or lost track).
pub fn parse_results(text: &str, killed: bool) -> BTreeMap<String, Outcome> {
    let mut results = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut in_message = false;
    for line in text.lines() {
        if in_message {
            in_message = !line.starts_with(']');
            continue;
        }
        if let Some(name) = line.strip_prefix("test: ") {
            current = Some(name.trim().to_string());
            continue;
        }
        if let Some((name, outcome, opens)) = result_of(line, current.as_deref()) {
            in_message = opens;
            if current.as_deref() == Some(name.as_str()) {
                current = None;
            }
            results.insert(name, outcome);
        }
    }
    if let Some(name) = current {
        let outcome = if killed {
            Outcome::Timeout
        } else {
            Outcome::Error
        };
        results.insert(name, outcome);
    }
    results
}

/// `(name, outcome, opens_message)` if `line` carries a result. The keyword must
/// start the line, or follow a glued prefix without spaces, or name the running test.
fn result_of(line: &str, current: Option<&str>) -> Option<(String, Outcome, bool)> {
    for (keyword, outcome) in KEYWORDS {
        let Some(at) = line.find(keyword) else {
            continue;
        };
        let rest = line[at + keyword.len()..].trim_end();
        let (name, opens) = match rest.strip_suffix('[') {
            Some(n) => (n.trim_end(), true),
            None => (rest, false),
        };
        let glued_ok = !line[..at].contains(char::is_whitespace);
        if !name.is_empty() && (glued_ok || current == Some(name)) {
            return Some((name.to_string(), outcome, opens));
        }
    }
    None
}
