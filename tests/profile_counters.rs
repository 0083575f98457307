//! Samba's own profile counters (`smbd profiling level = on`, read by `smbstatus -P`):
//! the async reads, writes and fsyncs a module share serves are counted as a plain
//! share's are (`syscall_asys_pread`, `_pwrite`, `_fsync`: count, time, idle, bytes), by
//! whoever serves each request and never twice.
//!
//! Each case is its own smbd with two shares configured alike: `data` (a 32 MiB put, a
//! get of it from the page cache, and a get after its pages were dropped but the first
//! MiB) and `sync` (`sync always = yes`: a 1 MiB put, each write followed by an fsync).
//! Cases: `plain` (no module: the reference), `aio` (cached reads in smbd, the rest
//! through helpers), `noinline` (every read through a helper) and `fallback` (no helper
//! can start: what cannot be done at once goes to the next module, which counts it).
//! Every module case must give the plain case's counts and the bytes transferred, with
//! non-zero times; where the release keeps per-share profiles (4.23+, `smbd profiling
//! share = yes`, read with `smbstatus -P --json` while the shares are connected), per
//! share too. With profiling off (case `aio_off`), a module share's transfers leave every
//! counter at 0.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Stdio;
use std::thread;
use std::time::Duration;

use common::client::Session;
use common::data;
use common::module::ModuleKind;
use common::namespace::{run_in_namespace, NsContext};
use common::python;
use common::run;
use common::samba_root;
use common::smbd::{Smbd, SmbdBuilder};
use common::stats::{self, Stats};

const MIB: u64 = 1 << 20;
const TIMEOUT: Duration = Duration::from_secs(120);
const BIG: u64 = 32 * MIB;
const SMALL: u64 = MIB;
/// Both gets read the whole big file; the puts write both files.
const READ_BYTES: u64 = 2 * BIG;
const WRITE_BYTES: u64 = BIG + SMALL;
/// smbd stores a process's counters a second after they change (smbprofile_dump_schedule).
const DUMP_WAIT: Duration = Duration::from_millis(2500);
const JSON_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/profile_json.py");
const COUNTERS: [&str; 3] = [
    "syscall_asys_pread",
    "syscall_asys_pwrite",
    "syscall_asys_fsync",
];
const FIELDS: [&str; 4] = ["count", "time", "idle", "bytes"];

/// A share configuration, given to both `data` and `sync`.
struct Case {
    name: &'static str,
    options: &'static [(&'static str, &'static str)],
}

const PLAIN: Case = Case {
    name: "plain",
    options: &[],
};
/// The `aio` case with `smbd profiling level = off`.
const OFF: Case = Case {
    name: "aio_off",
    options: &[("vfs objects", "aio_fork")],
};
const MODULE_CASES: [Case; 3] = [
    Case {
        name: "aio",
        options: &[("vfs objects", "aio_fork")],
    },
    Case {
        name: "noinline",
        options: &[
            ("vfs objects", "aio_fork"),
            ("aio_fork:inline cached reads", "no"),
        ],
    },
    Case {
        name: "fallback",
        options: &[
            ("vfs objects", "aio_fork"),
            ("aio_fork:fail fork testing mode", "yes"),
        ],
    },
];

/// `(counter, field)` → value, e.g. `("syscall_asys_pread", "count")`.
type Counters = BTreeMap<(String, String), u64>;

/// What one case's smbd counted.
struct Outcome {
    name: &'static str,
    /// The whole profile (`smbstatus -P`), once every connection had ended.
    global: Counters,
    /// `smbstatus -P`'s lines of the async counters, as printed.
    lines: Vec<String>,
    /// Per share (4.23+), while the shares were connected.
    shares: BTreeMap<String, Counters>,
    /// The module's own `aio_fork stats` lines, per share.
    module: BTreeMap<String, Stats>,
    /// The module's log line on smbd's profile (`profile counters found ...`), if any.
    found: Option<String>,
}

#[test]
fn async_counters() {
    run_in_namespace("async_counters", TIMEOUT * 10, |ctx| {
        let plain = run_case(ctx, &PLAIN, true);
        let mut problems = check_plain(&plain);
        let mut outcomes = Vec::new();
        for case in &MODULE_CASES {
            let outcome = run_case(ctx, case, true);
            problems.extend(compare(&plain, &outcome));
            problems.extend(check_module_served(ctx, &outcome));
            outcomes.push(outcome);
        }
        let off = run_case(ctx, &OFF, false);
        problems.extend(check_off(ctx, &off));
        print_outcomes(std::iter::once(&plain).chain(&outcomes).chain([&off]));
        assert!(
            problems.is_empty(),
            "{} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
    });
}

/// With profiling off, the module's transfers leave every counter at 0.
fn check_off(ctx: &NsContext, off: &Outcome) -> Vec<String> {
    let mut problems = check_module_served(ctx, off);
    for ((counter, field), value) in &off.global {
        if *value != 0 {
            problems.push(format!(
                "{}: {counter}_{field} = {value}, expected 0",
                off.name
            ));
        }
    }
    if !off.shares.is_empty() {
        problems.push(format!("{}: per-share profiles {:?}", off.name, off.shares));
    }
    problems
}

/// Whether the release under test keeps per-share profiles (4.23 on); the host's Samba
/// is 4.17.
fn per_share() -> bool {
    samba_root::release().is_some_and(|r| {
        let mut parts = r.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (4, 23)
    })
}

fn run_case(ctx: &NsContext, case: &Case, profiling: bool) -> Outcome {
    let dir = ctx.workdir.join(case.name);
    let mut data_opts: Vec<(&str, &str)> = case.options.to_vec();
    if per_share() {
        data_opts.push(("smbd profiling share", "yes"));
    }
    let mut sync_opts = data_opts.clone();
    sync_opts.push(("sync always", "yes"));
    let smbd = SmbdBuilder::without_shares(&dir)
        .global("smbd profiling level", if profiling { "on" } else { "off" })
        .share("data", &data_opts)
        .share("sync", &sync_opts)
        .start();
    let shares = transfer(&smbd, &dir);
    smbd.wait_idle(TIMEOUT);
    let text = smbstatus(&smbd, &["-P"]);
    let module = ["data", "sync"]
        .iter()
        .map(|s| (s.to_string(), stats::total_for(&smbd.stats(), s)))
        .collect();
    let log = smbd.log_text();
    let found = log
        .lines()
        .find(|l| l.contains("profile counters found"))
        .map(|l| l.trim().to_string());
    Outcome {
        name: case.name,
        found,
        global: parse_text(&text),
        lines: text
            .lines()
            .filter(|l| COUNTERS.iter().any(|c| l.starts_with(&format!("{c}_"))))
            .map(str::to_string)
            .collect(),
        shares,
        module,
    }
}

/// The transfers, on one connection per share; returns the per-share profiles read
/// while both are connected (empty where the release keeps none).
fn transfer(smbd: &Smbd, dir: &Path) -> BTreeMap<String, Counters> {
    let big = dir.join("big.src");
    let small = dir.join("small.src");
    data::write_random_file(&big, BIG, 20);
    data::write_random_file(&small, SMALL, 21);
    let mut data = Session::open(smbd, "data", TIMEOUT);
    let mut sync = Session::open(smbd, "sync", TIMEOUT);
    data.run(&format!("put {} big.bin", big.display()), TIMEOUT);
    let stored = smbd.share_path("data").join("big.bin");
    expect_same(&big, &stored);
    let got = dir.join("big.got1");
    data.run(&format!("get big.bin {}", got.display()), TIMEOUT);
    expect_same(&big, &got);
    // Reads that need the disk: the file's pages dropped, all but its first MiB (so a
    // read starts in the page cache and ends in a helper or the next module).
    drop_cache_but_head(&stored, MIB);
    let got = dir.join("big.got2");
    data.run(&format!("get big.bin {}", got.display()), TIMEOUT);
    expect_same(&big, &got);
    sync.run(&format!("put {} small.bin", small.display()), TIMEOUT);
    expect_same(&small, &smbd.share_path("sync").join("small.bin"));

    let shares = if per_share() {
        thread::sleep(DUMP_WAIT);
        parse_json(&smbstatus(smbd, &["-P", "--json"]))
    } else {
        BTreeMap::new()
    };
    for session in [data, sync] {
        let out = session.close(TIMEOUT);
        assert!(out.success(), "smbclient session:\n{}", out.describe());
    }
    shares
}

fn expect_same(expected: &Path, actual: &Path) {
    if let Err(e) = data::compare_files(expected, actual) {
        panic!("transfer damaged: {e}");
    }
}

/// Drops `path`'s pages from the page cache, then reads its first `head` bytes back in.
fn drop_cache_but_head(path: &Path, head: u64) {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.sync_all().expect("fsync");
    // SAFETY: a valid descriptor; the call only advises the kernel.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise DONTNEED");
    let mut buf = vec![0u8; head as usize];
    file.read_exact_at(&mut buf, 0).expect("read the head");
}

/// `smbstatus -s <conf> <args>` of the Samba under test.
fn smbstatus(smbd: &Smbd, args: &[&str]) -> String {
    let out = run::run(
        samba_root::command("smbstatus")
            .arg("-s")
            .arg(&smbd.conf)
            .args(args),
        TIMEOUT,
    );
    assert!(out.success(), "smbstatus {args:?}:\n{}", out.describe());
    out.stdout
}

/// The async counters of `smbstatus -P`: lines `syscall_asys_pread_count:   4`.
fn parse_text(text: &str) -> Counters {
    let mut counters = Counters::new();
    for line in text.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        for counter in COUNTERS {
            for field in FIELDS {
                if name == format!("{counter}_{field}") {
                    let value = value
                        .trim()
                        .parse()
                        .unwrap_or_else(|_| panic!("smbstatus line {line:?}: not a number"));
                    counters.insert((counter.to_string(), field.to_string()), value);
                }
            }
        }
    }
    assert_eq!(
        counters.len(),
        COUNTERS.len() * FIELDS.len(),
        "smbstatus -P lacks async counters:\n{text}"
    );
    counters
}

/// Per-share async counters of `smbstatus -P --json`, by share name.
fn parse_json(json: &str) -> BTreeMap<String, Counters> {
    let out = run::run_with_input(
        std::process::Command::new(python::PYTHON)
            .arg(JSON_SCRIPT)
            .stdin(Stdio::piped()),
        TIMEOUT,
        json.as_bytes(),
    );
    assert!(out.success(), "{JSON_SCRIPT}:\n{}", out.describe());
    let mut shares: BTreeMap<String, Counters> = BTreeMap::new();
    for line in out.stdout.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let [scope, counter, field, value] = words[..] else {
            panic!("{JSON_SCRIPT}: odd line {line:?}");
        };
        if let Some(share) = scope.strip_prefix("share:") {
            shares.entry(share.to_string()).or_default().insert(
                (counter.to_string(), field.to_string()),
                value.parse().expect("number"),
            );
        }
    }
    shares
}

fn get(c: &Counters, counter: &str, field: &str) -> u64 {
    c.get(&(counter.to_string(), field.to_string()))
        .copied()
        .unwrap_or(0)
}

/// Bytes each share's transfers ask for: (pread, pwrite).
fn expected_bytes(share: &str) -> (u64, u64) {
    match share {
        "data" => (READ_BYTES, BIG),
        "sync" => (0, SMALL),
        _ => (READ_BYTES, WRITE_BYTES),
    }
}

/// The counters of one scope (`global` or a share) against the plain case's: the same
/// counts, the bytes transferred, times where something was counted.
fn compare_scope(case: &str, scope: &str, plain: &Counters, ours: &Counters) -> Vec<String> {
    let mut problems = Vec::new();
    let (read, write) = expected_bytes(scope);
    for (counter, bytes) in [
        ("syscall_asys_pread", read),
        ("syscall_asys_pwrite", write),
        ("syscall_asys_fsync", 0),
    ] {
        let (count, plain_count) = (get(ours, counter, "count"), get(plain, counter, "count"));
        if count != plain_count {
            problems.push(format!(
                "{case} {scope}: {counter}_count {count}, the plain share's {plain_count}"
            ));
        }
        if get(ours, counter, "bytes") != bytes {
            problems.push(format!(
                "{case} {scope}: {counter}_bytes {}, expected {bytes}",
                get(ours, counter, "bytes")
            ));
        }
        let (time, idle) = (get(ours, counter, "time"), get(ours, counter, "idle"));
        if count > 0 && time == 0 {
            problems.push(format!(
                "{case} {scope}: {counter}_time 0 for {count} requests"
            ));
        }
        if idle > time {
            problems.push(format!(
                "{case} {scope}: {counter}_idle {idle} > _time {time}"
            ));
        }
    }
    problems
}

fn compare(plain: &Outcome, ours: &Outcome) -> Vec<String> {
    let mut problems = compare_scope(ours.name, "global", &plain.global, &ours.global);
    if per_share() {
        for share in ["data", "sync"] {
            match (plain.shares.get(share), ours.shares.get(share)) {
                (Some(p), Some(o)) => problems.extend(compare_scope(ours.name, share, p, o)),
                _ => problems.push(format!(
                    "{}: no per-share profile of {share} (plain: {:?}, ours: {:?})",
                    ours.name,
                    plain.shares.keys(),
                    ours.shares.keys()
                )),
            }
        }
    }
    problems
}

/// The reference itself: every counter used, fsyncs on the `sync` share only.
fn check_plain(plain: &Outcome) -> Vec<String> {
    let mut problems = compare_scope("plain", "global", &plain.global, &plain.global);
    for counter in COUNTERS {
        if get(&plain.global, counter, "count") == 0 {
            problems.push(format!(
                "plain: {counter}_count 0: the transfers did not reach it"
            ));
        }
    }
    if let Some(data) = plain.shares.get("data") {
        if get(data, "syscall_asys_fsync", "count") != 0 {
            problems.push("plain: fsyncs counted on the data share".into());
        }
    }
    problems
}

/// The module did serve (or hand on) the requests, as each case configures it.
fn check_module_served(ctx: &NsContext, outcome: &Outcome) -> Vec<String> {
    if ctx.module.kind != ModuleKind::Rust {
        return Vec::new();
    }
    let data = &outcome.module["data"];
    let sync = &outcome.module["sync"];
    let mut problems = Vec::new();
    if outcome.found.is_none() {
        problems.push(format!(
            "{}: the module did not log finding smbd's profile counters",
            outcome.name
        ));
    }
    let mut want = |ok: bool, what: &str| {
        if !ok {
            problems.push(format!(
                "{}: module stats {what} (data: {data:?}; sync: {sync:?})",
                outcome.name
            ));
        }
    };
    want(data.lines > 0 && sync.lines > 0, "missing");
    match outcome.name {
        "aio" => {
            want(
                data.other("inline_preads") > 0,
                "show no read served in smbd",
            );
            want(
                data.pread_bytes == READ_BYTES,
                "do not show every read served",
            );
            want(sync.fsyncs > 0, "show no fsync served");
        }
        "noinline" => {
            want(
                data.other("inline_preads") == 0,
                "show reads served in smbd",
            );
            want(
                data.pread_bytes == READ_BYTES,
                "do not show every read served",
            );
            want(sync.fsyncs > 0, "show no fsync served");
        }
        "fallback" => want(
            data.fallbacks > 0 && sync.fallbacks > 0,
            "show nothing handed to the next module",
        ),
        _ => {}
    }
    problems
}

fn print_outcomes<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>) {
    let release = samba_root::version().unwrap_or_else(|| "host".into());
    for o in outcomes {
        if let Some(found) = &o.found {
            println!("PROFILE {release} {}: module: {found}", o.name);
        }
        println!("PROFILE {release} {}: smbstatus -P", o.name);
        for line in &o.lines {
            println!("PROFILE {release} {}:   {line}", o.name);
        }
        for (share, counters) in &o.shares {
            let text: Vec<String> = counters
                .iter()
                .filter(|(_, v)| **v != 0)
                .map(|((c, f), v)| format!("{}_{f}={v}", c.trim_start_matches("syscall_")))
                .collect();
            println!(
                "PROFILE {release} {}: share {share}: {}",
                o.name,
                text.join(" ")
            );
        }
    }
}
