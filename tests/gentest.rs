//! Samba's `gentest` (package samba-testsuite): the same random operations on two shares,
//! stopping at the first difference in what the server answered.
//!
//! Per protocol (SMB1, SMB2) and seed, first two plain shares (`plain1` vs `plain2`): a
//! seed on which they disagree tells nothing about the module and is reported "not
//! judged" (no pass of the module on it). Then `plain1` vs the aio_fork share `aio` must
//! agree. The seeds below are ones where the plain shares agree on this Samba, and include
//! SMB1 write-through WRITEX requests: smbd serves those asynchronously as a pwrite and
//! an fsync on its main event context, and, when it takes the synchronous path (a
//! zero-length or chained write), with an fsync it waits for on an event context of its
//! own (`smb_vfs_fsync_sync`). The module's stats must show that helpers served reads,
//! writes and fsyncs.
//!
//! SMB1 runs cost at least 20 ms an operation (gentest sleeps that long after each one to
//! collect change notifications), so seeds run side by side, each worker ("lane") on its
//! own three shares: `plain1`, `plain2`, `aio` for lane 0, `plain1_<n>`, ... for lane n.
//!
//! A difference in a write time, which smbd itself sets on a timer, is run again (up to
//! three times, both comparisons) before it counts: two plain shares differ there now and
//! then under load (see `TIMING_FIELDS`). Any other difference counts at once.
//!
//! `AIO_FORK_GENTEST_SEEDS="smb1:5,11;smb2:3"` and `AIO_FORK_GENTEST_OPS=N` run other seeds
//! (e.g. to choose new ones after a Samba upgrade).

mod common;

use std::collections::VecDeque;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::namespace::{run_in_namespace, NsContext};
use common::run::{self, Output};
use common::smbd::{Smbd, SmbdBuilder};
use common::stats;
use common::tools;

/// Seeds on which two plain shares agree (Samba 4.17), with SMB1 write-through WRITEX
/// among their operations (5, 11 and 14 each have a zero-length one). Seven SMB1 seeds
/// fill seven of the eight lanes; the eighth runs the SMB2 seeds meanwhile.
const SMB1_SEEDS: &[u64] = &[5, 11, 14, 1, 2, 3, 4];
const SMB2_SEEDS: &[u64] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
const SMB1_OPS: u64 = 1500;
const SMB2_OPS: u64 = 3000;
/// Share triples served at once; SMB1 runs mostly sleep, so more lanes than cores.
const LANES: usize = 8;
/// A healthy run takes ~35 s (SMB1, 1500 ops) or ~2 s (SMB2); a request smbd never answers
/// makes gentest give up after its own 60 s with NT_STATUS_IO_TIMEOUT. This bounds a
/// client that hangs for good.
const RUN_TIMEOUT: Duration = Duration::from_secs(100);
/// Fields that differ between any two shares (file ids are per file), and the NOTIFY
/// operation: gentest waits only 200 ms for change notifications to arrive on all four
/// connections, and two plain shares miss that now and then under load.
const IGNORE: &[&str] = &[
    "all_info2.out.file_id",
    "internal_information.out.file_id",
    "file_id",
    "NOTIFY",
];

#[test]
fn gentest_vs_plain() {
    run_in_namespace("gentest_vs_plain", Duration::from_secs(10 * 60), run);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Smb1,
    Smb2,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Smb1 => "SMB1",
            Proto::Smb2 => "SMB2",
        }
    }
}

/// Fields in which two plain shares of one smbd now and then disagree on the same seed:
/// smbd updates a written file's write time on a timer of its own (2 s after the first
/// write) unless a set or a close got there first, and which side of the timer an
/// operation falls on depends on load (seen: SMB1 seeds 15 and 28, `openold.out.write_time`,
/// plain1 vs plain2 and plain1 vs aio alike). A difference in one of them counts only if
/// it comes back on every attempt; any other difference counts at once.
const TIMING_FIELDS: &[&str] = &["write_time"];
/// Runs of a seed whose difference was in a timing field.
const ATTEMPTS: u32 = 3;

/// One gentest run's verdict.
#[derive(Debug)]
enum Verdict {
    /// Both shares answered alike; how many operations ran.
    Agreed(u64),
    /// The first difference: what gentest said, and the field it names, if one.
    Differ { why: String, field: Option<String> },
}

impl Verdict {
    /// A difference in a field smbd itself sets on a timer (see TIMING_FIELDS).
    fn is_timing(&self) -> bool {
        matches!(self, Verdict::Differ { field: Some(f), .. }
            if TIMING_FIELDS.iter().any(|t| f.ends_with(t)))
    }
}

/// One gentest comparison to make: a protocol, a seed and how many operations.
#[derive(Clone, Copy, Debug)]
struct Job {
    proto: Proto,
    seed: u64,
    ops: u64,
}

impl Job {
    /// One job per seed of `seeds`, each of `ops` operations.
    fn all(proto: Proto, (seeds, ops): &(Vec<u64>, u64)) -> impl Iterator<Item = Job> + '_ {
        let ops = *ops;
        seeds.iter().map(move |&seed| Job { proto, seed, ops })
    }
}

/// What one seed gave.
#[derive(Debug)]
struct Outcome {
    proto: Proto,
    seed: u64,
    /// plain1 vs plain2.
    plain: Verdict,
    /// plain1 vs aio; `None` when the seed was not judged.
    aio: Option<Verdict>,
    /// How many times the seed ran (more than once after a timing-field difference).
    attempts: u32,
    took: Duration,
}

/// The shares of one lane.
struct Lane {
    plain1: String,
    plain2: String,
    aio: String,
    /// gentest's working directory (it writes `gentest_seeds.dat` there).
    dir: PathBuf,
}

fn lane(ctx: &NsContext, n: usize) -> Lane {
    let suffix = if n == 0 {
        String::new()
    } else {
        format!("_{n}")
    };
    let dir = ctx.workdir.join(format!("lane{n}"));
    fs::create_dir_all(&dir).expect("create lane dir");
    Lane {
        plain1: format!("plain1{suffix}"),
        plain2: format!("plain2{suffix}"),
        aio: format!("aio{suffix}"),
        dir,
    }
}

fn run(ctx: &NsContext) {
    let started = Instant::now();
    let lanes: Vec<Lane> = (0..LANES).map(|n| lane(ctx, n)).collect();
    // Sharing violations answer at once, not after SMB1's one-second courtesy delay, for
    // plain and aio shares alike (gentest provokes many).
    let mut builder =
        SmbdBuilder::without_shares(&ctx.workdir).global("defer sharing violations", "no");
    for lane in &lanes {
        builder = builder
            .share(&lane.plain1, &[])
            .share(&lane.plain2, &[])
            .share(
                &lane.aio,
                &[
                    ("vfs objects", "aio_fork"),
                    ("aio_fork:inline cached reads", "no"),
                ],
            );
    }
    let smbd = builder.start();
    let ignore = ctx.workdir.join("gentest.ignore");
    fs::write(&ignore, IGNORE.join("\n") + "\n").expect("write ignore file");

    let (smb1, smb2) = seed_lists();
    // SMB1 first: its runs are the long ones.
    let jobs: VecDeque<Job> = Job::all(Proto::Smb1, &smb1)
        .chain(Job::all(Proto::Smb2, &smb2))
        .collect();
    let jobs = Mutex::new(jobs);
    let outcomes = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for lane in &lanes {
            let (smbd, ignore, jobs, outcomes) = (&smbd, &ignore, &jobs, &outcomes);
            scope.spawn(move || loop {
                let Some(job) = jobs.lock().unwrap().pop_front() else {
                    return;
                };
                let outcome = judge_seed(smbd, lane, ignore, job);
                println!("{}", describe(&outcome));
                outcomes.lock().unwrap().push(outcome);
            });
        }
    });
    let mut outcomes = outcomes.into_inner().unwrap();
    outcomes.sort_by_key(|o| (o.proto.name(), o.seed));

    let mut problems = Vec::new();
    let mut summaries = Vec::new();
    for (proto, seeds) in [(Proto::Smb1, &smb1.0), (Proto::Smb2, &smb2.0)] {
        let mine: Vec<&Outcome> = outcomes.iter().filter(|o| o.proto == proto).collect();
        let judged: Vec<&&Outcome> = mine.iter().filter(|o| o.aio.is_some()).collect();
        let agreed: Vec<u64> = judged
            .iter()
            .filter_map(|o| match o.aio {
                Some(Verdict::Agreed(ops)) => Some(ops),
                _ => None,
            })
            .collect();
        let not_judged: Vec<u64> = mine
            .iter()
            .filter(|o| o.aio.is_none())
            .map(|o| o.seed)
            .collect();
        summaries.push(format!(
            "GENTEST {}: seeds judged {}/{}, agreed {}/{}, ops agreed {}, not judged (plain \
             shares disagree: no pass of the module) {:?}",
            proto.name(),
            judged.len(),
            seeds.len(),
            agreed.len(),
            judged.len(),
            agreed.iter().sum::<u64>(),
            not_judged
        ));
        for o in judged {
            if let Some(Verdict::Differ { why, .. }) = &o.aio {
                problems.push(format!(
                    "{} seed {}: plain1 and plain2 agree, plain1 and aio do not:\n{why}",
                    proto.name(),
                    o.seed
                ));
            }
        }
        if !not_judged.is_empty() {
            problems.push(format!(
                "{}: plain shares disagree on seeds {not_judged:?} of the list, which judges \
                 the module on them not at all: choose other seeds",
                proto.name()
            ));
        }
    }

    for s in &summaries {
        println!("{s}");
    }
    // A connection stuck on a request never disconnects, so the stats would wait in vain.
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}\n{}",
        problems.len(),
        problems.join("\n  "),
        smbd.log_tail(30)
    );

    smbd.wait_idle(Duration::from_secs(60));
    let all = smbd.stats();
    let mut total = stats::Stats::default();
    for lane in &lanes {
        let t = stats::total_for(&all, &lane.aio);
        total.preads += t.preads;
        total.pwrites += t.pwrites;
        total.fsyncs += t.fsyncs;
        total.spawned += t.spawned;
        total.fallbacks += t.fallbacks;
    }
    let helpers = format!(
        "helpers served preads={} pwrites={} fsyncs={} (spawned={}, handed to the next \
         module: {})",
        total.preads, total.pwrites, total.fsyncs, total.spawned, total.fallbacks
    );
    if !smb1.0.is_empty() && (total.preads == 0 || total.pwrites == 0 || total.fsyncs == 0) {
        problems.push(format!(
            "{helpers}: expected each > 0 (SMB1 write-through writes are a pwrite and an \
             fsync): the module was not in the path"
        ));
    }
    println!("{helpers}");
    println!("GENTEST runtime {:.1?}", started.elapsed());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn describe(o: &Outcome) -> String {
    let tries = match o.attempts {
        1 => String::new(),
        n => format!(", {n} attempts"),
    };
    let head = format!("{} seed {} ({:.1?}{tries})", o.proto.name(), o.seed, o.took);
    match (&o.plain, &o.aio) {
        (Verdict::Differ { why, .. }, _) => format!(
            "{head}: not judged: plain shares disagree, no pass of the module on it:\n{why}"
        ),
        (Verdict::Agreed(_), Some(Verdict::Agreed(ops))) => {
            format!("{head}: plain1=plain2, plain1=aio, {ops} ops")
        }
        (Verdict::Agreed(_), Some(Verdict::Differ { why, .. })) => {
            format!("{head}: plain1=plain2, plain1!=aio:\n{why}")
        }
        (Verdict::Agreed(_), None) => format!("{head}: aio not run"),
    }
}

fn judge_seed(smbd: &Smbd, lane: &Lane, ignore: &Path, job: Job) -> Outcome {
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let again = attempts < ATTEMPTS;
        let plain = gentest(smbd, lane, ignore, job, &lane.plain2);
        if plain.is_timing() && again {
            continue;
        }
        let aio = match plain {
            Verdict::Agreed(_) => Some(gentest(smbd, lane, ignore, job, &lane.aio)),
            Verdict::Differ { .. } => None,
        };
        if aio.as_ref().is_some_and(Verdict::is_timing) && again {
            continue;
        }
        return Outcome {
            proto: job.proto,
            seed: job.seed,
            plain,
            aio,
            attempts,
            took: started.elapsed(),
        };
    }
}

/// `(seeds, ops)` for SMB1 and SMB2, from the environment when set there.
#[allow(clippy::type_complexity)]
fn seed_lists() -> ((Vec<u64>, u64), (Vec<u64>, u64)) {
    let ops: Option<u64> = env::var("AIO_FORK_GENTEST_OPS")
        .ok()
        .map(|v| v.parse().expect("AIO_FORK_GENTEST_OPS: a number"));
    let (mut smb1, mut smb2) = (SMB1_SEEDS.to_vec(), SMB2_SEEDS.to_vec());
    if let Ok(spec) = env::var("AIO_FORK_GENTEST_SEEDS") {
        (smb1, smb2) = (Vec::new(), Vec::new());
        for part in spec.split(';').filter(|p| !p.trim().is_empty()) {
            let (proto, list) = part
                .split_once(':')
                .expect("AIO_FORK_GENTEST_SEEDS: smb1:1,2;smb2:3");
            let list = list.split(',').filter(|s| !s.trim().is_empty()).map(|s| {
                s.trim()
                    .parse::<u64>()
                    .expect("AIO_FORK_GENTEST_SEEDS: a seed")
            });
            match proto.trim() {
                "smb1" => smb1.extend(list),
                "smb2" => smb2.extend(list),
                other => panic!("AIO_FORK_GENTEST_SEEDS: unknown protocol {other:?}"),
            }
        }
    }
    (
        (smb1, ops.unwrap_or(SMB1_OPS)),
        (smb2, ops.unwrap_or(SMB2_OPS)),
    )
}

fn gentest(smbd: &Smbd, lane: &Lane, ignore: &Path, job: Job, other: &str) -> Verdict {
    let creds = smbd.credentials();
    let mut cmd = tools::command("gentest");
    cmd.current_dir(&lane.dir)
        .arg(smbd.unc(&lane.plain1))
        .arg(smbd.unc(other))
        .arg(format!("--user1={creds}"))
        .arg(format!("--user2={creds}"))
        .args(["--noacls", "--noeas"])
        .arg(format!("--seed={}", job.seed))
        .arg(format!("--num-ops={}", job.ops))
        .arg(format!("--ignore={}", ignore.display()));
    if job.proto == Proto::Smb2 {
        cmd.arg("--smb2");
    }
    judge(&run::run(&mut cmd, RUN_TIMEOUT))
}

/// gentest ends with `gentest completed - no errors` and status 0 when the shares agreed
/// all the way, after one `Op <name> got <ok>/<count> success` line per operation kind;
/// otherwise it names the first difference and exits non-zero.
fn judge(out: &Output) -> Verdict {
    let completed = out
        .stdout
        .lines()
        .any(|l| l.trim() == "gentest completed - no errors");
    if out.success() && completed {
        let ops = out
            .stdout
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Op "))
            .filter_map(|l| l.split_whitespace().nth(2))
            .filter_map(|r| r.split_once('/')?.1.parse::<u64>().ok())
            .sum();
        return Verdict::Agreed(ops);
    }
    let first = out.describe().lines().next().unwrap_or("").to_string();
    let why: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| {
            l.contains("NT_STATUS")
                || l.contains("inconsistent")
                || l.contains("Failed")
                || l.contains("mismatch")
        })
        .take(6)
        .collect();
    // "Mismatch in openold.out.write_time - 0x6b0fbf25 0x6cbce73a"
    let field = out.stdout.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("Mismatch in ")?;
        Some(rest.split_whitespace().next()?.to_string())
    });
    Verdict::Differ {
        why: format!(
            "    {first}\n    {}\n    --- stdout (tail) ---\n    {}",
            why.join("\n    "),
            run::tail(&out.stdout, 8).replace('\n', "\n    ")
        ),
        field,
    }
}

/// The first difference's field is read from gentest's output; only write times count
/// as smbd's own timing.
#[test]
fn differences_name_their_field() {
    use std::os::unix::process::ExitStatusExt;
    let failed = |stdout: &str| Output {
        program: "gentest".into(),
        status: Some(std::process::ExitStatus::from_raw(255 << 8)),
        timed_out: false,
        stdout: stdout.into(),
        stderr: String::new(),
        elapsed: Duration::ZERO,
    };
    let write_time = judge(&failed(
        "CLOSE num_open_handles=5 h=2\nMismatch in openold.out.write_time - 0x6b0fbf25 0x6cbce73a\n",
    ));
    assert!(write_time.is_timing(), "{write_time:?}");
    let size = judge(&failed("Mismatch in all_info.out.size - 0x10 0x20\n"));
    assert!(!size.is_timing(), "{size:?}");
    let status = judge(&failed("WRITEX failed: NT_STATUS_IO_TIMEOUT\n"));
    assert!(
        matches!(status, Verdict::Differ { field: None, .. }),
        "{status:?}"
    );
}
