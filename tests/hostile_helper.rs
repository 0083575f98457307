//! A hostile helper: the user's helper processes run as the user, so whoever controls that
//! user may control them. None of what they may do can hurt smbd.
//!
//! - `a_hostile_helper_cannot_hurt_smbd`: one smbd, one share per misbehaviour, each with
//!   `aio_fork:helper program` naming tests/programs/hostile_helper.rs under that
//!   misbehaviour's name (it breaks the protocol that way for alice; for any other user it
//!   runs the real helper program in its place). Inline reads and writes are off (every
//!   request goes to a helper), `request timeout = 1`. Per share, alice (one session) puts a
//!   file of 9 MiB + 17 bytes (two requests, the first a whole 8 MiB piece) and gets a
//!   seeded one of the same size, then disconnects the tree; then bob, on the same share,
//!   puts and gets the same. What must hold every time:
//!   - smbd does not crash (its main process lives, alice's session answers to the end,
//!     no crash marker in the log), nor hang (every command finishes in its time);
//!   - alice's data is exact: every answer that broke the protocol was refused and the
//!     request served again (on another helper, or by the next module); except where
//!     the misbehaviour follows the protocol: a helper that never answers (`silent`) makes
//!     the request fail with NT_STATUS_IO_DEVICE_ERROR, and one that writes into its buffer
//!     while and after it replies (`scribble`) can only make her get, or write, her own
//!     file's bytes or the bytes it wrote (each byte is one of the two: nothing of smbd's,
//!     nothing of anyone else's);
//!   - the counters say what happened (`violations`, `helper_deaths`, `retries`,
//!     `fallbacks`, `zygote_failures`, `hung`, `timeouts`; see [`Kind`]);
//!   - after the tree disconnect her connection holds no pidfd, module socket or buffer
//!     more than before her first request, and no process of the hostile program is left;
//!   - bob's put and get on the same share, after hers, are exact, served by helpers,
//!     without a death or violation.
//!
//!   The misbehaviours and what smbd did are printed as a table (`HOSTILE` lines).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use common::client::{self, Session};
use common::data;
use common::faults::{is_live, CRASH_MARKERS};
use common::held::{held_now, left_over, module_things};
use common::module;
use common::namespace::{run_in_namespace, NsContext};
use common::smbd::{Smbd, SmbdBuilder};
use common::stats::{self, Stats};
use common::users::{self, User};

const TIMEOUT: Duration = Duration::from_secs(60);
const MIB: u64 = 1 << 20;
/// Two requests: a whole 8 MiB piece, and the rest.
const FILE_SIZE: u64 = 9 * MIB + 17;
/// What the `scribble` helper writes into its buffer (tests/programs/hostile_helper.rs).
const MARK: u8 = 0xA5;
const HOSTILE_PROGRAM: &str = env!("CARGO_BIN_EXE_aio_fork_hostile_helper");
/// Runs only these misbehaviours (comma-separated names), when looking into one.
const ONLY_ENV: &str = "AIO_FORK_HOSTILE_ONLY";

/// What a misbehaviour is, hence what smbd must have done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// The zygote answers wrongly, or not at all, or hands over what it must not: it is
    /// given up (`zygote_failures`), no helper of it is taken (`spawned` 0) and the
    /// requests go to the next module (`fallbacks`).
    Zygote,
    /// A helper breaks the protocol in place of its answer: it is ended (`violations`,
    /// `helper_deaths`) and its request served again (`retries` or `fallbacks`).
    Protocol,
    /// A helper answers right, then breaks the protocol (a second reply, another message):
    /// its answer stands, and it is ended (`violations`, `helper_deaths`).
    AfterAnswer,
    /// A helper dies or hangs up mid-request: ended and its request served again
    /// (`helper_deaths`, `retries`), no violation.
    Death,
    /// A helper never answers: ended after the request timeout (`hung`), and the request
    /// sent again once it has exited (`retries`) or failed (`timeouts`:
    /// NT_STATUS_IO_DEVICE_ERROR). A retry that finds its crew without a zygote (let go by
    /// the idle cull while every helper was hung) goes to the next module (`fallbacks`).
    Silent,
    /// A helper misbehaves within the protocol: served by it, nothing to count.
    Within,
}

const CASES: [(&str, Kind); 28] = [
    ("hello_version", Kind::Zygote),
    ("hello_ids", Kind::Zygote),
    ("no_hello", Kind::Zygote),
    ("spawn_nothing", Kind::Zygote),
    ("spawn_error", Kind::Zygote),
    ("spawn_missing_fds", Kind::Zygote),
    ("spawn_extra_fds", Kind::Zygote),
    ("spawn_foreign_pid", Kind::Zygote),
    ("spawn_grandchild", Kind::Zygote),
    ("spawn_stream_socket", Kind::Zygote),
    ("spawn_small_buffer", Kind::Zygote),
    ("spawn_unsealed_buffer", Kind::Zygote),
    ("spawn_hugetlb_buffer", Kind::Zygote),
    ("wrong_seq", Kind::Protocol),
    ("repeat_seq", Kind::AfterAnswer),
    ("result_beyond", Kind::Protocol),
    ("result_below", Kind::Protocol),
    ("truncated", Kind::Protocol),
    ("oversized", Kind::Protocol),
    ("extra_message", Kind::AfterAnswer),
    ("unsolicited", Kind::Protocol),
    ("flood", Kind::AfterAnswer),
    ("random", Kind::Protocol),
    ("exit_mid_request", Kind::Death),
    ("close_mid_request", Kind::Death),
    ("silent", Kind::Silent),
    ("extra_fds", Kind::Within),
    ("scribble", Kind::Within),
];

#[test]
fn a_hostile_helper_cannot_hurt_smbd() {
    run_in_namespace(
        "a_hostile_helper_cannot_hurt_smbd",
        Duration::from_secs(900),
        hostile,
    );
}

fn share_of(mode: &str) -> String {
    format!("h_{mode}")
}

fn hostile(ctx: &NsContext) {
    let users = users::add_unix_users(&ctx.workdir, &["alice", "bob"]);
    let (alice, bob) = (&users[0], &users[1]);
    let programs = install_hostile(&ctx.workdir, alice);
    let mut builder = SmbdBuilder::without_shares(&ctx.workdir);
    for (mode, _) in CASES {
        let program = programs.join(mode).display().to_string();
        builder = builder.share(
            &share_of(mode),
            &[
                ("vfs objects", "aio_fork"),
                ("aio_fork:helper program", &program),
                ("aio_fork:inline cached reads", "no"),
                ("aio_fork:inline writes", "no"),
                (
                    "aio_fork:request timeout",
                    if mode == "silent" { "1" } else { "30" },
                ),
                ("aio_fork:max helpers", "2"),
            ],
        );
    }
    let smbd = builder.start();
    for user in &users {
        users::add_smb_user(&smbd, user);
    }
    let source = ctx.workdir.join("source.bin");
    data::write_random_file(&source, FILE_SIZE, 31);
    fs::set_permissions(&source, fs::Permissions::from_mode(0o644)).expect("chmod source");
    let hugetlb = fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .contains("hugetlbfs");
    let mut problems = Vec::new();
    let started = Instant::now();
    let only = std::env::var(ONLY_ENV).ok();
    let mut ran = 0;
    for (mode, kind) in CASES {
        if only
            .as_ref()
            .is_some_and(|o| !o.split(',').any(|m| m == mode))
        {
            continue;
        }
        ran += 1;
        let kind = if mode == "spawn_hugetlb_buffer" && !hugetlb {
            println!("no hugetlbfs in this kernel: spawn_hugetlb_buffer hands over a plain memfd");
            Kind::Within
        } else {
            kind
        };
        let share = share_of(mode);
        let dir = smbd.share_path(&share);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("chmod share");
        let seed = dir.join("seed.bin");
        data::write_random_file(&seed, FILE_SIZE, 7);
        fs::set_permissions(&seed, fs::Permissions::from_mode(0o644)).expect("chmod seed");
        let case_started = Instant::now();
        let outcome = alice_side(&smbd, alice, &share, &source, &ctx.workdir);
        let took = case_started.elapsed();
        // Her two sessions' lines.
        let alice_stats = stats::total_for(&wait_for_lines(&smbd, &share, 2), &share);
        let mut found = check_alice(mode, kind, &outcome, &alice_stats, &source, &seed);
        found.extend(outcome.problems.iter().cloned());
        found.extend(check_bob(&smbd, bob, &share, &source, &seed, &ctx.workdir));
        if !is_live(smbd.pid()) {
            found.push("the main smbd is gone".to_string());
        }
        println!(
            "HOSTILE {mode:<22} {took:>7.1?}  alice: put {}, get {}; violations={} \
             helper_deaths={} retries={} fallbacks={} zygote_failures={} hung={} \
             timeouts={} spawned={}  {}",
            outcome.put.describe(),
            outcome.get.describe(),
            alice_stats.other("violations"),
            alice_stats.helper_deaths,
            alice_stats.retries,
            alice_stats.fallbacks,
            alice_stats.other("zygote_failures"),
            alice_stats.hung,
            alice_stats.other("timeouts"),
            alice_stats.spawned,
            if found.is_empty() { "ok" } else { "PROBLEM" }
        );
        if !found.is_empty() {
            println!("{}", smbd.log_tail(30));
        }
        problems.extend(found.into_iter().map(|p| format!("{mode}: {p}")));
        assert!(is_live(smbd.pid()), "the main smbd died: {problems:?}");
    }
    let log = smbd.log_text();
    for marker in CRASH_MARKERS {
        if let Some(line) = log.lines().find(|l| l.contains(marker)) {
            problems.push(format!("smbd's log holds {marker:?}: {line}"));
        }
    }
    smbd.wait_idle(TIMEOUT);
    println!("{ran} misbehaviours in {:.1?}", started.elapsed());
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

/// The hostile program and one link to it per misbehaviour, in a directory every user may
/// read, with its `hostile.conf`: hostile to `victim` only, the real helper program for
/// everyone else.
fn install_hostile(workdir: &Path, victim: &User) -> PathBuf {
    let dir = workdir.join("hostile");
    fs::create_dir_all(&dir).expect("hostile dir");
    let program = dir.join("aio_fork_hostile_helper");
    fs::copy(HOSTILE_PROGRAM, &program).expect("copy the hostile program");
    let real = module::modules_dir()
        .join("vfs")
        .join(module::HELPER_PROGRAM);
    assert!(real.is_file(), "{} missing", real.display());
    fs::write(
        dir.join("hostile.conf"),
        format!("uid={}\nreal={}\nseed=5\n", victim.uid, real.display()),
    )
    .expect("hostile.conf");
    for (mode, _) in CASES {
        std::os::unix::fs::symlink("aio_fork_hostile_helper", dir.join(mode)).expect("link");
    }
    for path in [workdir, dir.as_path()] {
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    dir
}

/// How a command of alice's went: the NT_STATUS code it printed, if any; and whether her
/// client still had its connection afterwards.
struct Command {
    lines: Vec<String>,
    connected: bool,
}

impl Command {
    fn status(&self) -> Option<String> {
        self.lines
            .iter()
            .flat_map(|l| l.split_whitespace())
            .find(|w| w.starts_with("NT_STATUS_"))
            .map(|w| {
                w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                    .to_string()
            })
    }

    fn describe(&self) -> String {
        let status = self.status().unwrap_or_else(|| "ok".to_string());
        if self.connected {
            status
        } else {
            format!("{status} (then smbclient dropped its connection)")
        }
    }
}

struct AliceOutcome {
    put: Command,
    get: Command,
    /// Where her get went, and the file her put made.
    got: PathBuf,
    put_file: PathBuf,
    problems: Vec<String>,
}

/// Alice's put and get, each in a session of its own (smbclient drops its connection after
/// a failed put): what each printed, and, where the session is still connected, what her
/// connection still holds after its tree disconnect.
fn alice_side(smbd: &Smbd, alice: &User, share: &str, source: &Path, dir: &Path) -> AliceOutcome {
    let got = dir.join(format!("got-{share}.bin"));
    let _ = fs::remove_file(&got);
    let mut problems = Vec::new();
    let mut run = |command: String| {
        let mut session = Session::open_as(smbd, share, &alice.credentials(), TIMEOUT);
        let conn = session.server_pid;
        let before = held_now(conn)
            .map(|h| module_things(&h))
            .unwrap_or_default();
        let lines = session.run(&command, TIMEOUT);
        // Her connection still answers, unless her client dropped it.
        let listing = session.run("ls", TIMEOUT);
        let connected = !listing
            .iter()
            .any(|l| l.contains("NT_STATUS_CONNECTION_DISCONNECTED"));
        if connected {
            if !listing.iter().any(|l| l.contains("seed.bin")) {
                problems.push(format!(
                    "her session no longer lists the share: {listing:?}"
                ));
            }
            session.run("tdis", TIMEOUT);
            problems.extend(left_over(conn, &before, "after her tree disconnect"));
        }
        problems.extend(wait_for_no_hostile_process(conn));
        let _ = session.close(TIMEOUT);
        Command { lines, connected }
    };
    let put = run(format!("put {} alice.bin", source.display()));
    let get = run(format!("get seed.bin {}", got.display()));
    AliceOutcome {
        put,
        get,
        got,
        put_file: smbd.share_path(share).join("alice.bin"),
        problems,
    }
}

/// Waits until the connection has no child left and no process runs the hostile program.
fn wait_for_no_hostile_process(conn: u32) -> Vec<String> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left: Vec<common::procs::Proc> = common::procs::snapshot()
            .into_iter()
            .filter(|p| p.is_live() && (p.ppid == conn || runs_hostile(p.pid)))
            .collect();
        if left.is_empty() {
            return Vec::new();
        }
        if Instant::now() > deadline {
            return vec![format!(
                "processes left after the tree disconnect: {left:?}"
            )];
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn runs_hostile(pid: u32) -> bool {
    fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
        exe.file_name()
            .is_some_and(|n| n == "aio_fork_hostile_helper")
    })
}

/// Alice's data and counters, by what the misbehaviour is.
fn check_alice(
    mode: &str,
    kind: Kind,
    outcome: &AliceOutcome,
    s: &Stats,
    source: &Path,
    seed: &Path,
) -> Vec<String> {
    let mut problems = Vec::new();
    let (put, got) = (&outcome.put_file, &outcome.got);
    match (kind, mode) {
        (Kind::Silent, _) => {
            for (what, cmd, want, file) in [
                ("put", &outcome.put, source, put),
                ("get", &outcome.get, seed, got),
            ] {
                match cmd.status().as_deref() {
                    Some("NT_STATUS_IO_DEVICE_ERROR") => {}
                    None => {
                        if let Err(e) = data::compare_files(want, file) {
                            problems.push(format!("her {what}: {e}"));
                        }
                    }
                    Some(other) => problems.push(format!(
                        "{what}: {other}, want success or NT_STATUS_IO_DEVICE_ERROR: {:?}",
                        cmd.lines
                    )),
                }
            }
        }
        (_, "scribble") => {
            problems.extend(only_own_or_mark("put", source, put));
            problems.extend(only_own_or_mark("get", seed, got));
        }
        _ => {
            for (what, cmd) in [("put", &outcome.put), ("get", &outcome.get)] {
                if let Some(status) = cmd.status() {
                    problems.push(format!("{what} failed: {status}: {:?}", cmd.lines));
                }
            }
            if let Err(e) = data::compare_files(source, put) {
                problems.push(format!("her put: {e}"));
            }
            if let Err(e) = data::compare_files(seed, got) {
                problems.push(format!("her get: {e}"));
            }
        }
    }
    let violations = s.other("violations");
    let counted = match kind {
        Kind::Zygote => s.other("zygote_failures") >= 1 && s.fallbacks >= 1 && s.spawned == 0,
        Kind::Protocol => {
            violations >= 1 && s.helper_deaths >= violations && s.retries + s.fallbacks >= 1
        }
        Kind::AfterAnswer => violations >= 1 && s.helper_deaths >= violations,
        Kind::Death => s.helper_deaths >= 1 && s.retries >= 1 && violations == 0,
        Kind::Silent => s.hung >= 1 && s.retries + s.other("timeouts") >= 1 && s.helper_deaths == 0,
        Kind::Within => violations == 0 && s.helper_deaths == 0 && s.spawned >= 1,
    };
    if !counted || s.lines != 2 {
        problems.push(format!("counters do not show {kind:?}: {s:?}"));
    }
    problems
}

/// Each byte of `got` is `own`'s at the same place, or the scribbler's mark.
fn only_own_or_mark(what: &str, own: &Path, got: &Path) -> Vec<String> {
    let (own, got) = (
        fs::read(own).unwrap_or_default(),
        fs::read(got).unwrap_or_default(),
    );
    if own.len() != got.len() {
        return vec![format!("{what}: {} bytes, want {}", got.len(), own.len())];
    }
    let marks = got.iter().filter(|&&b| b == MARK).count();
    let other = (0..got.len())
        .filter(|&i| got[i] != own[i] && got[i] != MARK)
        .count();
    println!(
        "  scribble {what}: {marks} of {} bytes are the mark",
        got.len()
    );
    if other > 0 {
        vec![format!(
            "{what}: {other} bytes are neither the file's nor the helper's mark"
        )]
    } else {
        Vec::new()
    }
}

/// Bob's put and get on the same share: exact, by helpers that neither died nor misbehaved.
fn check_bob(
    smbd: &Smbd,
    bob: &User,
    share: &str,
    source: &Path,
    seed: &Path,
    dir: &Path,
) -> Vec<String> {
    let got = dir.join(format!("bob-{share}.bin"));
    let out = client::smbclient_as(
        smbd,
        share,
        &bob.credentials(),
        &format!(
            "put {} bob.bin; get seed.bin {}",
            source.display(),
            got.display()
        ),
        TIMEOUT,
    );
    let mut problems = Vec::new();
    if !out.success() || out.combined().contains("NT_STATUS_") {
        problems.push(format!("bob's put and get failed:\n{}", out.describe()));
    }
    if let Err(e) = data::compare_files(source, &smbd.share_path(share).join("bob.bin")) {
        problems.push(format!("bob's put: {e}"));
    }
    if let Err(e) = data::compare_files(seed, &got) {
        problems.push(format!("bob's get: {e}"));
    }
    let _ = fs::remove_file(&got);
    let bob_stats = wait_for_lines(smbd, share, 3).pop().unwrap_or_default();
    if bob_stats.spawned == 0
        || bob_stats.helper_deaths != 0
        || bob_stats.other("violations") != 0
        || bob_stats.fallbacks != 0
    {
        problems.push(format!(
            "bob was not served by sound helpers of his own: {bob_stats:?}"
        ));
    }
    problems
}

/// The share's stats lines of its tree disconnects, once there are `count`.
fn wait_for_lines(smbd: &Smbd, share: &str, count: usize) -> Vec<Stats> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let lines: Vec<Stats> = smbd
            .stats()
            .into_iter()
            .filter(|s| s.share == share)
            .collect();
        if lines.len() >= count || Instant::now() > deadline {
            return lines;
        }
        thread::sleep(Duration::from_millis(50));
    }
}
