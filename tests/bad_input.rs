//! Bad input: requests a normal client does not send, and share options that make no
//! sense. The module must answer exactly as a share without it does, and never crash.
//!
//! - `bad_input_same_status_as_plain`: in ONE smbd, `tests/clients/bad_input_probe.py` (Samba's
//!   own client library) runs against `plain` (no module), `aio` and `aio_noinline`
//!   (every read in a helper), over SMB2 and SMB1: reads and writes at offsets near and
//!   past the largest off_t, past EOF, of zero length, of sizes just around 128 KiB,
//!   1 MiB, 8 MiB and 16 MiB, on handles without read or write access, closed or of a
//!   directory. Per case the NT status, the bytes returned, a digest of the data read
//!   (or read back after a write) and the file size must equal the plain share's; for
//!   SMB2 also the sequence of error statuses smbd logged (the client library turns
//!   STATUS_END_OF_FILE and a successful zero-byte read both into one error, smbd's log
//!   tells them apart). The files left in the shares must be equal too. The aio shares
//!   must stay up: the last case is a normal read on the same connection, the module
//!   must log no caught panic and count no helper death, and smbd must log no PANIC.
//!   The level-10 request log proves the odd requests reached helpers.
//! - `invalid_option_values_are_logged_and_replaced`: shares with `max helpers = -3`,
//!   `= lots`, `min helpers = 9` with `max helpers = 2`, and `idle timeout = 0` each
//!   serve a put and a get byte for byte through helpers, and the log names the option,
//!   the value and the value used instead; the values used are checked where a client
//!   can see them (min clamped to max: 2 helpers kept; idle timeout 30 s: an idle
//!   helper is not culled at once).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::client::{self, Session};
use common::data;
use common::namespace::{run_in_namespace, NsContext};
use common::procs::{self, HelperSampler};
use common::python;
use common::run;
use common::smbd::{Smbd, SmbdBuilder, PASSWORD, USER};
use common::stats;

const PROBE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/bad_input_probe.py"
);
/// The reference: no VFS module.
const PLAIN: &str = "plain";
/// Reads all in the page cache are served in smbd (the module's default).
const AIO: &str = "aio";
/// Every read goes to a helper.
const AIO_NOINLINE: &str = "aio_noinline";
const SHARES: [&str; 3] = [PLAIN, AIO, AIO_NOINLINE];
const PROBE_TIMEOUT: Duration = Duration::from_secs(300);
/// The probe's last case: a normal 1 MiB read after all the odd ones.
const FINAL_CASE: &str = "final normal read";
/// Cases the probe runs (SMB2 adds lines when smbd drops the connection).
const MIN_CASES: usize = 139;
const OFF_MAX: u64 = i64::MAX as u64;
const MIB: u64 = 1 << 20;

/// Cases whose outcome on an aio share may differ from the plain share's:
/// (protocol, share, case, why). None: the module answers every one as smbd does.
const EXPECTED_DIFFERENCES: &[(&str, &str, &str, &str)] = &[];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Smb2,
    Smb1,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Smb2 => "smb2",
            Protocol::Smb1 => "smb1",
        }
    }
}

#[test]
fn bad_input_same_status_as_plain() {
    run_in_namespace(
        "bad_input_same_status_as_plain",
        Duration::from_secs(15 * 60),
        probe_all,
    );
}

#[test]
fn invalid_option_values_are_logged_and_replaced() {
    run_in_namespace(
        "invalid_option_values_are_logged_and_replaced",
        Duration::from_secs(10 * 60),
        invalid_options,
    );
}

// ---------------------------------------------------------------------------------------
// Odd requests, plain against aio
// ---------------------------------------------------------------------------------------

/// One case's outcome as the probe printed it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Case {
    name: String,
    /// status, bytes, sha, size: what must be equal across shares.
    outcome: BTreeMap<String, String>,
    ms: u64,
}

/// One probe run against one share.
struct ProbeRun {
    share: &'static str,
    protocol: Protocol,
    cases: Vec<Case>,
    /// `status[...] || at <location>` of every SMB2 error smbd logged, in order.
    server_errors: Vec<String>,
    /// (op, offset, len) of every request the module sent to a helper.
    helper_requests: Vec<(String, u64, u64)>,
    /// The log lines of this run (for the crash checks).
    log: String,
    elapsed: Duration,
}

fn probe_all(ctx: &NsContext) {
    python::check();
    let smbd = SmbdBuilder::without_shares(&ctx.workdir)
        .share(PLAIN, &[])
        .share(AIO, &[("vfs objects", "aio_fork")])
        .share(
            AIO_NOINLINE,
            &[
                ("vfs objects", "aio_fork"),
                ("aio_fork:inline cached reads", "no"),
            ],
        )
        // aio_fork:10: every request sent to a helper; smb2:3: every SMB2 error status.
        .global("log level", "1 aio_fork:10 smb2:3")
        .start();
    let seed = ctx.workdir.join("seed.bin");
    let out = run::run(
        python::command(Path::new(PROBE))
            .arg("--print-seed")
            .arg(&seed),
        Duration::from_secs(60),
    );
    assert!(out.success(), "probe --print-seed:\n{}", out.describe());
    for share in SHARES {
        fs::copy(&seed, smbd.share_path(share).join("seed.bin")).expect("seed share");
    }

    let mut problems = Vec::new();
    let mut runs = Vec::new();
    for protocol in [Protocol::Smb2, Protocol::Smb1] {
        let these: Vec<ProbeRun> = SHARES
            .iter()
            .map(|share| run_probe(&smbd, share, protocol))
            .collect();
        problems.extend(compare_runs(&these));
        problems.extend(compare_share_files(&smbd, protocol));
        runs.extend(these);
    }
    problems.extend(check_helpers_saw_odd_requests(&runs));
    problems.extend(check_health(&smbd, &runs));
    print_summary(&runs);
    problems.extend(stale_expectations(&runs));
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

fn run_probe(smbd: &Smbd, share: &'static str, protocol: Protocol) -> ProbeRun {
    let log_before = smbd.log_text().len();
    let mut cmd = python::command(Path::new(PROBE));
    cmd.args(["--share", share, "--user", USER, "--password", PASSWORD])
        .arg("--conf")
        .arg(&smbd.conf);
    if protocol == Protocol::Smb1 {
        cmd.arg("--smb1");
    }
    let out = run::run(&mut cmd, PROBE_TIMEOUT);
    assert!(
        out.success(),
        "probe on {share} ({}) failed:\n{}\n{}",
        protocol.name(),
        out.describe(),
        smbd.log_tail(30)
    );
    // The connection's tree disconnect (and its stats line) belongs to this run.
    smbd.wait_idle(Duration::from_secs(60));
    let log = smbd.log_text().get(log_before..).unwrap_or("").to_string();
    let cases: Vec<Case> = out
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse_case(l).unwrap_or_else(|e| panic!("probe line {l:?}: {e}")))
        .collect();
    println!(
        "probe {} {share}: {} cases in {:.1?}",
        protocol.name(),
        cases.len(),
        out.elapsed
    );
    ProbeRun {
        share,
        protocol,
        server_errors: server_errors(&log),
        helper_requests: helper_requests(&log),
        cases,
        log,
        elapsed: out.elapsed,
    }
}

/// Every aio share's run against the plain share's run of the same protocol.
fn compare_runs(runs: &[ProbeRun]) -> Vec<String> {
    let mut problems = Vec::new();
    let reference = &runs[0];
    assert_eq!(reference.share, PLAIN);
    let proto = reference.protocol.name();
    // The probe must have done what it says: all its cases, ending with a good read.
    if reference.cases.len() < MIN_CASES {
        problems.push(format!(
            "{proto} plain: only {} cases reported (the probe stopped early?)",
            reference.cases.len()
        ));
    }
    for run in runs {
        match run.cases.last() {
            Some(c) if c.name == FINAL_CASE && c.outcome["status"] == "NT_STATUS_OK" => {}
            other => problems.push(format!(
                "{proto} {}: the final normal read did not succeed: {other:?}",
                run.share
            )),
        }
    }
    for run in &runs[1..] {
        let share = run.share;
        if run.cases.len() != reference.cases.len() {
            problems.push(format!(
                "{proto} {share}: {} cases, plain {} (first different: {})",
                run.cases.len(),
                reference.cases.len(),
                first_name_difference(&reference.cases, &run.cases)
            ));
        }
        for (want, got) in reference.cases.iter().zip(&run.cases) {
            if want.name != got.name {
                problems.push(format!(
                    "{proto} {share}: case order differs: plain {:?}, {share} {:?}",
                    want.name, got.name
                ));
                break;
            }
            if want.outcome != got.outcome && !expected_difference(run, &got.name) {
                problems.push(format!(
                    "{proto} {share}: case {:?}: plain {:?}, {share} {:?}",
                    got.name, want.outcome, got.outcome
                ));
            }
        }
        if run.server_errors != reference.server_errors {
            let at = reference
                .server_errors
                .iter()
                .zip(&run.server_errors)
                .position(|(a, b)| a != b)
                .unwrap_or(reference.server_errors.len().min(run.server_errors.len()));
            problems.push(format!(
                "{proto} {share}: smbd logged {} error statuses, plain {}; first difference \
                 at #{at}: plain {:?}, {share} {:?}",
                run.server_errors.len(),
                reference.server_errors.len(),
                reference.server_errors.get(at),
                run.server_errors.get(at)
            ));
        }
    }
    if reference.protocol == Protocol::Smb2 && reference.server_errors.len() < 50 {
        problems.push(format!(
            "smb2 plain: only {} error statuses in smbd's log (is `smb2:3` logging?)",
            reference.server_errors.len()
        ));
    }
    problems
}

fn first_name_difference(a: &[Case], b: &[Case]) -> String {
    match a.iter().zip(b).find(|(x, y)| x.name != y.name) {
        Some((x, y)) => format!("plain {:?} vs {:?}", x.name, y.name),
        None => "one list is a prefix of the other".to_string(),
    }
}

fn expected_difference(run: &ProbeRun, case: &str) -> bool {
    EXPECTED_DIFFERENCES
        .iter()
        .any(|(p, s, c, _)| *p == run.protocol.name() && *s == run.share && *c == case)
}

/// An expected difference that did not show up is stale: the list must stay true.
fn stale_expectations(runs: &[ProbeRun]) -> Vec<String> {
    let mut problems = Vec::new();
    for (proto, share, case, why) in EXPECTED_DIFFERENCES {
        let find = |s: &str| {
            runs.iter()
                .find(|r| r.protocol.name() == *proto && r.share == s)
                .and_then(|r| r.cases.iter().find(|c| c.name == *case))
        };
        match (find(PLAIN), find(share)) {
            (Some(a), Some(b)) if a.outcome != b.outcome => {}
            _ => problems.push(format!(
                "expected difference ({proto}, {share}, {case:?}: {why}) did not occur: \
                 remove it from EXPECTED_DIFFERENCES"
            )),
        }
    }
    problems
}

/// The files each share holds after a protocol's runs: same names, sizes and bytes.
fn compare_share_files(smbd: &Smbd, protocol: Protocol) -> Vec<String> {
    let mut problems = Vec::new();
    let listing = |share: &str| -> BTreeMap<String, u64> {
        fs::read_dir(smbd.share_path(share))
            .expect("read share dir")
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .map(|e| {
                let size = e.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
                (e.file_name().to_string_lossy().into_owned(), size)
            })
            .collect()
    };
    let plain = listing(PLAIN);
    for share in [AIO, AIO_NOINLINE] {
        let other = listing(share);
        if other != plain {
            problems.push(format!(
                "{} {share}: files differ from plain's: plain {plain:?}, {share} {other:?}",
                protocol.name()
            ));
            continue;
        }
        for (name, size) in &plain {
            // Sparse files of 16 TiB: their bytes were read back by the probe.
            if *size > 64 * MIB {
                continue;
            }
            let a = smbd.share_path(PLAIN).join(name);
            let b = smbd.share_path(share).join(name);
            if let Err(e) = data::compare_files(&a, &b) {
                problems.push(format!("{} {share}: {e}", protocol.name()));
            }
        }
    }
    problems
}

/// The odd requests must have reached helpers, or the comparison proves little.
fn check_helpers_saw_odd_requests(runs: &[ProbeRun]) -> Vec<String> {
    type Want = (&'static str, fn(&(String, u64, u64)) -> bool);
    let smb2_noinline: [Want; 6] = [
        ("a read at offset 2^62", |(op, off, _)| {
            op == "Read" && *off == 1 << 62
        }),
        ("a read at offset 2^63-2", |(op, off, _)| {
            op == "Read" && *off == OFF_MAX - 1
        }),
        ("a 64 KiB read ending at 2^63-1", |(op, off, len)| {
            op == "Read" && *off == OFF_MAX - 65536 && *len == 65536
        }),
        ("a read of 8 MiB", |(op, _, len)| {
            op == "Read" && *len == 8 * MIB
        }),
        ("a write of 8 MiB", |(op, _, len)| {
            op == "Write" && *len == 8 * MIB
        }),
        ("a write at offset 0xfffffff0000-1", |(op, off, _)| {
            op == "Write" && *off == 0xFFF_FFFF_0000 - 1
        }),
    ];
    let smb2_aio: [Want; 1] = [("a write of 8 MiB", |(op, _, len)| {
        op == "Write" && *len == 8 * MIB
    })];
    let smb1_noinline: [Want; 2] = [
        ("a read at offset 2^62", |(op, off, _)| {
            op == "Read" && *off == 1 << 62
        }),
        ("a write at offset 2^32", |(op, off, _)| {
            op == "Write" && *off == 1 << 32
        }),
    ];
    let mut problems = Vec::new();
    for run in runs {
        let wants: &[Want] = match (run.protocol, run.share) {
            (Protocol::Smb2, AIO_NOINLINE) => &smb2_noinline,
            (Protocol::Smb2, AIO) => &smb2_aio,
            (Protocol::Smb1, AIO_NOINLINE) => &smb1_noinline,
            (_, PLAIN) => {
                if !run.helper_requests.is_empty() {
                    problems.push(format!(
                        "{} plain: {} helper requests logged during the plain share's run",
                        run.protocol.name(),
                        run.helper_requests.len()
                    ));
                }
                &[]
            }
            _ => &[],
        };
        for (what, pred) in wants {
            if !run.helper_requests.iter().any(pred) {
                problems.push(format!(
                    "{} {}: no helper request was {what} ({} helper requests logged): the \
                     odd requests did not reach the module",
                    run.protocol.name(),
                    run.share,
                    run.helper_requests.len()
                ));
            }
        }
    }
    problems
}

/// No crash, no caught panic, no helper lost, smbd still serving.
fn check_health(smbd: &Smbd, runs: &[ProbeRun]) -> Vec<String> {
    let mut problems = Vec::new();
    for run in runs {
        for bad in [
            "PANIC",
            "smb_panic",
            "internal error caught",
            "panic while starting a request",
            "Segmentation fault",
        ] {
            if let Some(line) = run.log.lines().find(|l| l.contains(bad)) {
                problems.push(format!(
                    "{} {}: smbd log has {bad:?}: {line}",
                    run.protocol.name(),
                    run.share
                ));
            }
        }
    }
    let all = smbd.stats();
    for share in [AIO, AIO_NOINLINE] {
        let total = stats::total_for(&all, share);
        println!("stats {share}: {total:?}");
        if total.lines == 0 {
            problems.push(format!("{share}: no stats line at tree disconnect"));
        }
        if total.helper_deaths != 0 || total.hung != 0 {
            problems.push(format!(
                "{share}: helper_deaths={} hung={} after the odd requests (expected 0)",
                total.helper_deaths, total.hung
            ));
        }
        if total.spawned == 0 || total.pwrites == 0 {
            problems.push(format!(
                "{share}: stats show spawned={} pwrites={}: helpers did not serve the share",
                total.spawned, total.pwrites
            ));
        }
    }
    let alive = procs::snapshot()
        .iter()
        .any(|p| p.pid == smbd.pid() && p.is_live());
    if !alive {
        problems.push("the main smbd is gone".to_string());
    }
    problems
}

fn print_summary(runs: &[ProbeRun]) {
    let mut text = String::from("\nprotocol share         cases  ok  errors(by status)  time\n");
    for run in runs {
        let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
        for c in &run.cases {
            *by_status.entry(c.outcome["status"].as_str()).or_default() += 1;
        }
        let ok = by_status.get("NT_STATUS_OK").copied().unwrap_or(0);
        let errors: Vec<String> = by_status
            .iter()
            .filter(|(s, _)| **s != "NT_STATUS_OK")
            .map(|(s, n)| format!("{}={n}", s.trim_start_matches("NT_STATUS_")))
            .collect();
        let slowest = run.cases.iter().max_by_key(|c| c.ms);
        let _ = writeln!(
            text,
            "{:<8} {:<13} {:>5} {:>3}  {}  {:.1?} (slowest case: {})",
            run.protocol.name(),
            run.share,
            run.cases.len(),
            ok,
            errors.join(" "),
            run.elapsed,
            slowest.map_or(String::new(), |c| format!("{} {} ms", c.name, c.ms)),
        );
        let _ = writeln!(
            text,
            "{:<8} {:<13} server error statuses: {}, helper requests: {}",
            "",
            "",
            run.server_errors.len(),
            run.helper_requests.len()
        );
    }
    println!("{text}");
}

/// `status[NT_STATUS_X] || at ../../source3/smbd/...:N` of each
/// `smbd_smb2_request_error_ex` line (debug class smb2, level 3).
fn server_errors(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("smbd_smb2_request_error_ex: idx["))
        .filter_map(|l| l.find("status[").map(|i| l[i..].trim().to_string()))
        .collect()
}

/// The module's level-10 line `request sent to helper op=Read offset=N len=N helper=N`.
fn helper_requests(log: &str) -> Vec<(String, u64, u64)> {
    log.lines()
        .filter(|l| l.contains("request sent to helper"))
        .filter_map(|l| {
            let field = |key: &str| -> Option<&str> {
                let start = l.find(&format!(" {key}="))? + key.len() + 2;
                l[start..].split_whitespace().next()
            };
            Some((
                field("op")?.to_string(),
                field("offset")?.parse().ok()?,
                field("len")?.parse().ok()?,
            ))
        })
        .collect()
}

/// Parses the probe's flat JSON object: string keys; string, integer or null values.
fn parse_case(line: &str) -> Result<Case, String> {
    let fields = parse_flat_json(line)?;
    let name = fields.get("case").cloned().ok_or("no \"case\"")?;
    let ms = fields.get("ms").and_then(|v| v.parse().ok()).unwrap_or(0);
    let outcome = ["status", "bytes", "sha", "size"]
        .iter()
        .map(|k| (k.to_string(), fields.get(*k).cloned().unwrap_or_default()))
        .collect();
    Ok(Case { name, outcome, ms })
}

fn parse_flat_json(line: &str) -> Result<BTreeMap<String, String>, String> {
    let mut chars = line.trim().chars().peekable();
    let mut map = BTreeMap::new();
    let expect = |c: Option<char>, want: char| {
        if c == Some(want) {
            Ok(())
        } else {
            Err(format!("expected {want:?}, found {c:?}"))
        }
    };
    expect(chars.next(), '{')?;
    loop {
        skip_spaces(&mut chars);
        if chars.peek() == Some(&'}') {
            break;
        }
        let key = json_string(&mut chars)?;
        skip_spaces(&mut chars);
        expect(chars.next(), ':')?;
        skip_spaces(&mut chars);
        let value = match chars.peek() {
            Some('"') => json_string(&mut chars)?,
            _ => {
                let mut v = String::new();
                while let Some(&c) = chars.peek() {
                    if c == ',' || c == '}' || c.is_whitespace() {
                        break;
                    }
                    v.push(c);
                    chars.next();
                }
                if v == "null" {
                    String::new()
                } else {
                    v
                }
            }
        };
        map.insert(key, value);
        skip_spaces(&mut chars);
        match chars.next() {
            Some(',') => continue,
            Some('}') => break,
            other => return Err(format!("expected ',' or '}}', found {other:?}")),
        }
    }
    Ok(map)
}

fn skip_spaces(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while chars.peek().is_some_and(|c| c.is_whitespace()) {
        chars.next();
    }
}

fn json_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<String, String> {
    if chars.next() != Some('"') {
        return Err("expected a string".into());
    }
    let mut s = String::new();
    loop {
        match chars.next() {
            Some('"') => return Ok(s),
            Some('\\') => match chars.next() {
                Some('u') => {
                    let hex: String = chars.by_ref().take(4).collect();
                    let c = u32::from_str_radix(&hex, 16)
                        .ok()
                        .and_then(char::from_u32)
                        .unwrap_or('?');
                    s.push(c);
                }
                Some('n') => s.push('\n'),
                Some('t') => s.push('\t'),
                Some(c) => s.push(c),
                None => return Err("unterminated escape".into()),
            },
            Some(c) => s.push(c),
            None => return Err("unterminated string".into()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Invalid option values
// ---------------------------------------------------------------------------------------

/// A share with invalid option values, and the log lines they must produce:
/// (option, value given, value used).
struct BadShare {
    name: &'static str,
    options: &'static [(&'static str, &'static str)],
    rejected: &'static [(&'static str, &'static str, &'static str)],
}

const BAD_SHARES: [BadShare; 4] = [
    BadShare {
        name: "bad_negative",
        options: &[("aio_fork:max helpers", "-3")],
        rejected: &[("max helpers", "-3", "8")],
    },
    BadShare {
        name: "bad_word",
        options: &[("aio_fork:max helpers", "lots")],
        rejected: &[("max helpers", "lots", "8")],
    },
    BadShare {
        name: "bad_min_over_max",
        options: &[("aio_fork:min helpers", "9"), ("aio_fork:max helpers", "2")],
        rejected: &[("min helpers", "9", "2")],
    },
    BadShare {
        name: "bad_idle",
        options: &[("aio_fork:idle timeout", "0")],
        rejected: &[("idle timeout", "0", "30")],
    },
];

/// Crosses the 8 MiB request size (so more than one helper request per SMB2 request
/// at the client's largest size).
const OPTION_FILE_SIZE: u64 = 9 * MIB + 3;
/// How long an idle helper must survive on the share whose idle timeout became 30 s.
const IDLE_SURVIVAL: Duration = Duration::from_secs(3);

fn invalid_options(ctx: &NsContext) {
    let mut builder = SmbdBuilder::without_shares(&ctx.workdir);
    for share in &BAD_SHARES {
        let mut options = vec![
            ("vfs objects", "aio_fork"),
            // Reads through helpers too, not served from the page cache in smbd.
            ("aio_fork:inline cached reads", "no"),
        ];
        options.extend_from_slice(share.options);
        builder = builder.share(share.name, &options);
    }
    let smbd = builder.start();
    let source = ctx.workdir.join("source.bin");
    data::write_random_file(&source, OPTION_FILE_SIZE, 77);
    let mut problems = Vec::new();
    for share in &BAD_SHARES {
        problems.extend(put_get(&smbd, share.name, &source, &ctx.workdir));
    }
    problems.extend(check_min_clamped(&smbd, &ctx.workdir));
    problems.extend(check_idle_not_zero(&smbd, &ctx.workdir));
    smbd.wait_idle(Duration::from_secs(60));
    let log = smbd.log_text();
    for share in &BAD_SHARES {
        for (option, given, used) in share.rejected {
            match rejection_line(&log, option, given, used) {
                Some(line) => println!("{}: logged: {}", share.name, line.trim()),
                None => problems.push(format!(
                    "{}: no log line \"invalid value '{given}' for 'aio_fork:{option}' \
                     (<why>): using {used}\"; lines mentioning the option:\n    {}",
                    share.name,
                    log.lines()
                        .filter(|l| l.contains(option))
                        .collect::<Vec<_>>()
                        .join("\n    ")
                )),
            }
        }
        let total = stats::total_for(&smbd.stats(), share.name);
        if total.spawned == 0
            || total.pwrite_bytes < OPTION_FILE_SIZE
            || total.pread_bytes < OPTION_FILE_SIZE
        {
            problems.push(format!(
                "{}: the module did not serve the share through helpers: {total:?}",
                share.name
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

/// `invalid value '<given>' for 'aio_fork:<option>' (<why>): using <used>`, why not empty.
fn rejection_line<'a>(log: &'a str, option: &str, given: &str, used: &str) -> Option<&'a str> {
    let head = format!("invalid value '{given}' for 'aio_fork:{option}' (");
    let tail = format!("): using {used}");
    log.lines().find(|l| {
        let Some(i) = l.find(&head) else {
            return false;
        };
        let rest = &l[i + head.len()..];
        let Some(j) = rest.find(&tail) else {
            return false;
        };
        // A reason is given, and the value used is the whole number (not "80").
        j > 0
            && rest[j + tail.len()..]
                .chars()
                .next()
                .map_or(true, |c| !c.is_ascii_digit())
    })
}

fn put_get(smbd: &Smbd, share: &str, source: &Path, workdir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let timeout = Duration::from_secs(120);
    let out = client::put(smbd, share, source, "put.bin", timeout);
    if let Err(e) = data::compare_files(source, &smbd.share_path(share).join("put.bin")) {
        problems.push(format!("{share}: put: {e}\n{}", out.describe()));
    }
    let back = workdir.join(format!("back_{share}.bin"));
    let out = client::get(smbd, share, "put.bin", &back, timeout);
    match data::compare_files(source, &back) {
        Ok(()) => println!(
            "{share}: put and get of {OPTION_FILE_SIZE} bytes identical ({:.1?} for the get)",
            out.elapsed
        ),
        Err(e) => problems.push(format!("{share}: get: {e}\n{}", out.describe())),
    }
    let _ = fs::remove_file(&back);
    problems
}

/// `min helpers = 9` with `max helpers = 2` became min 2: a new connection forks two
/// helpers before any I/O, and never has more than two.
fn check_min_clamped(smbd: &Smbd, workdir: &Path) -> Vec<String> {
    let share = "bad_min_over_max";
    let kind = common::module::ModuleKind::Rust;
    let mut problems = Vec::new();
    let mut session = Session::open(smbd, share, Duration::from_secs(60));
    let conn = session.server_pid;
    let count = || procs::helpers_of(conn, smbd.pid(), kind).len();
    // Nothing runs before the first request; the minimum holds once one was served.
    let at_connect = count();
    let sampler = HelperSampler::start(
        smbd.pid(),
        kind,
        Some(session.server_pid),
        Duration::from_millis(10),
    );
    let local = workdir.join("min_clamped.bin");
    // The put's writes need helpers (a read of cached data may be served inline).
    session.run(
        &format!("get put.bin {0}; put {0} min_clamped.bin", local.display()),
        Duration::from_secs(120),
    );
    let report = sampler.finish();
    let _ = fs::remove_file(&local);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after_io = count();
    while after_io < 2 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        after_io = count();
    }
    // More would come late, if at all: look again a little later.
    thread::sleep(Duration::from_millis(300));
    let after_io = after_io.max(count());
    println!(
        "{share}: {at_connect} helpers after connect (no I/O yet), at most {} during a get and a put, \
         {after_io} after it",
        report.max_live
    );
    if at_connect != 0 {
        problems.push(format!("{share}: {at_connect} helpers before any I/O"));
    }
    if after_io != 2 {
        problems.push(format!(
            "{share}: {after_io} helpers after the first I/O; min helpers 9 should have become 2"
        ));
    }
    if report.max_live > 2 {
        problems.push(format!(
            "{share}: {} helpers at once, but max helpers is 2",
            report.max_live
        ));
    }
    let _ = session.close(Duration::from_secs(30));
    problems
}

/// `idle timeout = 0` became 30 s: a helper idle for a few seconds is still there.
fn check_idle_not_zero(smbd: &Smbd, workdir: &Path) -> Vec<String> {
    let share = "bad_idle";
    let kind = common::module::ModuleKind::Rust;
    let mut session = Session::open(smbd, share, Duration::from_secs(60));
    let local = workdir.join("idle.bin");
    session.run(
        &format!("get put.bin {}", local.display()),
        Duration::from_secs(120),
    );
    let _ = fs::remove_file(&local);
    let after_get: BTreeSet<u32> = procs::helpers_of(session.server_pid, smbd.pid(), kind)
        .iter()
        .map(|p| p.pid)
        .collect();
    thread::sleep(IDLE_SURVIVAL);
    let later: BTreeSet<u32> = procs::helpers_of(session.server_pid, smbd.pid(), kind)
        .iter()
        .map(|p| p.pid)
        .collect();
    let _ = session.close(Duration::from_secs(30));
    println!("{share}: helpers after the get {after_get:?}, {IDLE_SURVIVAL:?} later {later:?}");
    if after_get.is_empty() || !after_get.is_subset(&later) {
        return vec![format!(
            "{share}: helpers {after_get:?} after a get, {later:?} {IDLE_SURVIVAL:?} later: \
             idle helpers must live 30 s (the default that replaces 0)"
        )];
    }
    Vec::new()
}
