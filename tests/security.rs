//! Security: what a helper holds and may do, and that two users on two shares at once
//! never get each other's bytes.
//!
//! - `helper_fds_and_sandbox`: while gets and puts run,
//!   every helper seen in /proc has exactly one socket in its fd table, a unix
//!   SOCK_SEQPACKET socket (its control socket), and besides it at most the one file of
//!   the share it is serving a request on (smbd passes the fd per request); nothing of
//!   smbd's: no tdb, no pipe, no eventfd/anon inode, no memfd, no listening or TCP
//!   socket (the test shows that the connection smbd it was forked from holds such
//!   things, so the check is not vacuous). At rest, the fd table is the socket alone.
//!   Its shared buffer is a shared memfd mapping (`rw-s /memfd:`), not a descriptor.
//!   /proc/<pid>/status shows `NoNewPrivs: 1`, `Seccomp: 2` (filter mode) and, where
//!   the kernel reports it, `Seccomp_filters: 2` (its zygote's, inherited, and its own). A helper caught in the instant
//!   between fork and sandbox (it names itself `aio_fork_helper` first, then closes
//!   smbd's descriptors and enters seccomp, all before its first request) is judged
//!   once that is done; one that stays unconfined for 2 s fails the test.
//!
//!   That a helper cannot open a file or exec is proven on the filter itself by the
//!   unit tests in `src/helper_sandbox.rs` (`sandboxed_process_cannot_open_files`,
//!   `..._cannot_exec`, `..._cannot_signal_others`: a forked child enters the same
//!   `enter()` and gets EPERM); here the real helpers are shown to run under exactly
//!   one seccomp filter with no_new_privs. Making a live helper try `open` would need a
//!   test hook in the module or ptrace, which this test avoids on purpose.
//! - `two_users_never_mixed`: Unix users alice and bob exist only in the
//!   test's mount namespace; `share_a` (valid users = alice) and `share_b` (bob) both
//!   use aio_fork (reads through helpers, at most 2 helpers per connection so requests
//!   queue). At once: 4 smbclient processes per share, several rounds of put and get
//!   of mixed sizes, plus per share one connection with 4 files in flight (Samba's
//!   Python client, one thread per file). Every byte read must be the right file's,
//!   the server's files must hold exactly what their user wrote, and belong to that
//!   user; neither user can even open the other's share.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::client::{self, Session};
use common::data;
use common::module::ModuleKind;
use common::namespace::{run_in_namespace, NsContext};
use common::procs;
use common::python;
use common::run;
use common::smbd::{Smbd, SmbdBuilder};
use common::stats;
use common::users::{self, User};

const MIB: u64 = 1 << 20;
const SHARE: &str = "aio_noinline";

#[test]
fn helper_fds_and_sandbox() {
    run_in_namespace(
        "helper_fds_and_sandbox",
        Duration::from_secs(10 * 60),
        helper_confinement,
    );
}

#[test]
fn two_users_never_mixed() {
    run_in_namespace(
        "two_users_never_mixed",
        Duration::from_secs(10 * 60),
        two_users,
    );
}

// ---------------------------------------------------------------------------------------
// What a helper holds
// ---------------------------------------------------------------------------------------

/// Helper inspections wanted during transfers, distinct helpers among them, and
/// inspections that caught a helper holding a request's file (so it was looked at
/// mid-request, not only between requests).
const MIN_INSPECTIONS: usize = 200;
const MIN_HELPERS: usize = 4;
const MIN_IN_FLIGHT: usize = 10;
/// Transfers go on until the inspections are done or this much time passed.
const LOAD_LIMIT: Duration = Duration::from_secs(90);
/// How long a helper seen before its sandbox may take to enter it.
const SETUP_GRACE: Duration = Duration::from_secs(2);
/// `Seccomp_filters` of a helper: its zygote's filter and its own.
const HELPER_FILTERS: &str = "2";

/// One look at one helper.
#[derive(Debug)]
struct Inspection {
    pid: u32,
    /// fd number and readlink target.
    fds: Vec<(String, String)>,
    status: String,
    /// First seen between fork and sandbox (see [`inspect`]); this is the look after.
    seen_in_setup: bool,
}

fn helper_confinement(ctx: &NsContext) {
    let smbd = SmbdBuilder::without_shares(&ctx.workdir)
        .share(
            SHARE,
            &[
                ("vfs objects", "aio_fork"),
                ("aio_fork:inline cached reads", "no"),
                ("aio_fork:max helpers", "4"),
            ],
        )
        .start();
    let share_dir = smbd.share_path(SHARE);
    let big = ctx.workdir.join("big.bin");
    data::write_random_file(&big, 64 * MIB, 1);
    fs::copy(&big, share_dir.join("big.bin")).expect("seed share");

    // Load: two clients, one getting and one putting, each again and again.
    let stop = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = [
        format!("get big.bin {}", ctx.workdir.join("got.bin").display()),
        format!("put {} up.bin", big.display()),
    ]
    .into_iter()
    .map(|cmd| {
        let stop = Arc::clone(&stop);
        let conf_smbd = SmbdRef::new(&smbd);
        thread::spawn(move || {
            let mut rounds = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let out = conf_smbd.smbclient(&cmd);
                assert!(out.success(), "load `{cmd}` failed:\n{}", out.describe());
                rounds += 1;
            }
            rounds
        })
    })
    .collect();

    let mut inspections = Vec::new();
    let mut problems = Vec::new();
    let mut maps_checked = BTreeSet::new();
    let started = Instant::now();
    let mut parent = None;
    loop {
        let distinct: BTreeSet<u32> = inspections.iter().map(|i: &Inspection| i.pid).collect();
        let in_flight = inspections.iter().filter(|i| i.fds.len() > 1).count();
        if (inspections.len() >= MIN_INSPECTIONS
            && distinct.len() >= MIN_HELPERS
            && in_flight >= MIN_IN_FLIGHT)
            || started.elapsed() > LOAD_LIMIT
        {
            break;
        }
        for helper in procs::helpers(&procs::snapshot(), smbd.pid(), ModuleKind::Rust) {
            let Some(found) = inspect(helper.pid) else {
                continue; // gone while we looked
            };
            problems.extend(judge(&found, &share_dir, false));
            if maps_checked.insert(found.pid) {
                problems.extend(check_maps(found.pid));
            }
            if parent.is_none() {
                parent = fd_table(helper.ppid).and_then(|fds| {
                    let status = fs::read_to_string(format!("/proc/{}/status", helper.ppid));
                    Some(Inspection {
                        pid: helper.ppid,
                        fds,
                        status: status.ok()?,
                        seen_in_setup: false,
                    })
                });
            }
            inspections.push(found);
        }
        thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    let rounds: Vec<u32> = loaders
        .into_iter()
        .map(|h| h.join().expect("load thread"))
        .collect();

    let distinct: BTreeSet<u32> = inspections.iter().map(|i| i.pid).collect();
    let in_flight = inspections.iter().filter(|i| i.fds.len() > 1).count();
    let in_setup = inspections.iter().filter(|i| i.seen_in_setup).count();
    println!(
        "inspected {} helper fd tables of {} helpers in {:.1?} (load rounds: {rounds:?}); \
         {in_flight} caught a request's file open, {in_setup} first seen between fork and \
         sandbox (judged once sandboxed)",
        inspections.len(),
        distinct.len(),
        started.elapsed()
    );
    if inspections.len() < MIN_INSPECTIONS
        || distinct.len() < MIN_HELPERS
        || in_flight < MIN_IN_FLIGHT
    {
        problems.push(format!(
            "only {} inspections of {} helpers, {in_flight} mid-request, within \
             {LOAD_LIMIT:?} (want {MIN_INSPECTIONS} of {MIN_HELPERS}, {MIN_IN_FLIGHT} \
             mid-request): helpers were not seen under load",
            inspections.len(),
            distinct.len()
        ));
    }
    problems.extend(check_parent_has_more(parent, &share_dir));
    problems.extend(check_at_rest(&smbd, &share_dir, &ctx.workdir));
    if let Some(example) = inspections.first() {
        println!("a helper's fd table: {:?}", example.fds);
        println!(
            "its status: {}",
            status_fields(
                &example.status,
                &[
                    "NoNewPrivs",
                    "Seccomp",
                    "Seccomp_filters",
                    "Uid",
                    "CapPrm",
                    "CapEff"
                ]
            )
        );
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}",
        problems.len(),
        dedup(problems).join("\n  ")
    );
}

/// What the load threads need of the smbd (the `Smbd` itself stays with the test).
#[derive(Clone)]
struct SmbdRef {
    conf: PathBuf,
    unc: String,
    credentials: String,
}

impl SmbdRef {
    fn new(smbd: &Smbd) -> Self {
        SmbdRef {
            conf: smbd.conf.clone(),
            unc: smbd.unc(SHARE),
            credentials: smbd.credentials(),
        }
    }

    fn smbclient(&self, commands: &str) -> run::Output {
        run::run(
            common::tools::command("smbclient")
                .arg("-s")
                .arg(&self.conf)
                .arg(&self.unc)
                .arg("-U")
                .arg(&self.credentials)
                .arg("-c")
                .arg(commands),
            Duration::from_secs(120),
        )
    }
}

/// The fd table and status of `pid`, if it is (still) a helper and not exiting. A
/// helper seen before its sandbox is in place (just forked: it takes its name first,
/// then closes smbd's descriptors and adds its own filter to the zygote's inherited
/// one, before it serves anything) is looked at again once it is; if it never gets
/// there, the first look is returned.
fn inspect(pid: u32) -> Option<Inspection> {
    let first = inspect_once(pid)?;
    if sandbox_complete(&first.status) {
        return Some(first);
    }
    let deadline = Instant::now() + SETUP_GRACE;
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
        let Some(again) = inspect_once(pid) else {
            return None; // gone
        };
        if sandbox_complete(&again.status) {
            return Some(Inspection {
                seen_in_setup: true,
                ..again
            });
        }
    }
    Some(first)
}

/// Whether a helper's status shows its whole sandbox: filter mode and, where the kernel
/// counts filters (5.9+), both the zygote's and its own. `Seccomp: 2` alone is already
/// true the instant after fork, from the inherited filter.
fn sandbox_complete(status: &str) -> bool {
    let fields = status_map(status);
    fields.get("Seccomp").map(String::as_str) == Some("2")
        && fields
            .get("Seccomp_filters")
            .map_or(true, |n| n == HELPER_FILTERS)
}

fn inspect_once(pid: u32) -> Option<Inspection> {
    let fds = fd_table(pid)?;
    if fds.is_empty() && exits_soon(pid) {
        // A helper ending (its connection closed): the kernel drops the fd table
        // before the process turns zombie.
        return None;
    }
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    // The pid must still be a helper (not reused by something else meanwhile).
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == procs::HELPER_COMM).then_some(Inspection {
        pid,
        fds,
        status,
        seen_in_setup: false,
    })
}

/// Whether `pid` is gone or a zombie within a moment.
fn exits_soon(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        match stat.as_deref().and_then(procs::parse_stat) {
            Some(p) if p.is_live() => thread::sleep(Duration::from_millis(10)),
            _ => return true,
        }
    }
    false
}

fn fd_table(pid: u32) -> Option<Vec<(String, String)>> {
    let mut fds = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).ok()? {
        let entry = entry.ok()?;
        let target = fs::read_link(entry.path()).ok()?;
        fds.push((
            entry.file_name().to_string_lossy().into_owned(),
            target.to_string_lossy().into_owned(),
        ));
    }
    fds.sort();
    Some(fds)
}

/// A helper's fd table and sandbox, by the rules in the file's doc comment.
fn judge(found: &Inspection, share_dir: &Path, at_rest: bool) -> Vec<String> {
    let pid = found.pid;
    let mut problems = Vec::new();
    let sockets: Vec<&(String, String)> = found
        .fds
        .iter()
        .filter(|(_, t)| t.starts_with("socket:["))
        .collect();
    if sockets.len() != 1 {
        problems.push(format!(
            "helper {pid}: {} sockets, expected exactly its control socket: {:?}",
            sockets.len(),
            found.fds
        ));
    }
    for (fd, target) in &sockets {
        match unix_socket_type(pid, target) {
            Some(5) => {} // SOCK_SEQPACKET
            // Closed between the two reads (the helper is ending): nothing to judge.
            None if !still_open(pid, fd, target) => {}
            other => problems.push(format!(
                "helper {pid}: socket {target} is not a unix SOCK_SEQPACKET socket \
                 (type {other:?} in /proc/{pid}/net/unix)"
            )),
        }
    }
    let others: Vec<&(String, String)> = found
        .fds
        .iter()
        .filter(|(_, t)| !t.starts_with("socket:["))
        .collect();
    let limit = if at_rest { 0 } else { 1 };
    if others.len() > limit {
        problems.push(format!(
            "helper {pid}: {} descriptors besides its socket (at most {limit} {}): {:?}",
            others.len(),
            if at_rest {
                "at rest"
            } else {
                "during a transfer: the file of the request it serves"
            },
            found.fds
        ));
    }
    for (fd, target) in &others {
        // Only a file of the share being served: the fd smbd passed with the request. An
        // smbd chrooted into a release's root file system opens it under that root.
        let seen = match common::samba_root::root() {
            Some(root) => Path::new(target)
                .strip_prefix(&root)
                .map(|p| Path::new("/").join(p))
                .unwrap_or_else(|_| Path::new(target).to_path_buf()),
            None => Path::new(target).to_path_buf(),
        };
        let in_share = seen.starts_with(share_dir) && !target.ends_with(".tdb") && seen.is_file();
        if !in_share {
            problems.push(format!(
                "helper {pid}: fd {fd} -> {target}: not the helper's to hold (only its \
                 control socket and the share file of its current request)"
            ));
        }
    }
    let fields = status_map(&found.status);
    for (key, want) in [("NoNewPrivs", "1"), ("Seccomp", "2")] {
        if fields.get(key).map(String::as_str) != Some(want) {
            problems.push(format!(
                "helper {pid}: {key}: {:?} in /proc/{pid}/status, expected {want}",
                fields.get(key)
            ));
        }
    }
    // Linux 5.9+ shows how many filters are attached; older kernels do not. A helper has
    // its zygote's filter (inherited) and its own, narrower one.
    if let Some(n) = fields.get("Seccomp_filters") {
        if n != HELPER_FILTERS {
            problems.push(format!(
                "helper {pid}: Seccomp_filters: {n}, expected the zygote's and its own"
            ));
        }
    }
    problems
}

/// Whether descriptor `fd` of `pid` still refers to `target`.
fn still_open(pid: u32, fd: &str, target: &str) -> bool {
    fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .map(|t| t.to_string_lossy() == target)
        .unwrap_or(false)
}

/// The type column of `socket:[inode]` in the helper's network namespace's unix table.
fn unix_socket_type(pid: u32, target: &str) -> Option<u32> {
    let inode = target.strip_prefix("socket:[")?.strip_suffix(']')?;
    let table = fs::read_to_string(format!("/proc/{pid}/net/unix")).ok()?;
    // Num RefCount Protocol Flags Type St Inode Path
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        (cols.get(6) == Some(&inode)).then(|| u32::from_str_radix(cols.get(4)?, 16).ok())?
    })
}

/// The shared buffer: a shared (`s`) writable memfd mapping.
fn check_maps(pid: u32) -> Vec<String> {
    let Ok(maps) = fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new(); // gone
    };
    let shared_memfd = maps
        .lines()
        .any(|l| l.contains("/memfd:") && l.split_whitespace().nth(1) == Some("rw-s"));
    if shared_memfd {
        Vec::new()
    } else {
        vec![format!(
            "helper {pid}: no shared writable memfd mapping (its data buffer) in \
             /proc/{pid}/maps"
        )]
    }
}

/// The connection smbd a helper was forked from holds what the helper must not: the
/// same rules applied to it must object, or the helper check would prove nothing.
fn check_parent_has_more(parent: Option<Inspection>, share_dir: &Path) -> Vec<String> {
    let Some(parent) = parent else {
        return vec!["could not read the connection smbd's fd table".to_string()];
    };
    let fds = &parent.fds;
    let count = |pred: &dyn Fn(&str) -> bool| fds.iter().filter(|(_, t)| pred(t)).count();
    let tdbs = count(&|t| t.ends_with(".tdb") || t.ends_with(".dat"));
    let sockets = count(&|t| t.starts_with("socket:["));
    let pipes_or_anon = count(&|t| t.starts_with("pipe:[") || t.starts_with("anon_inode:"));
    let objections = judge(&parent, share_dir, false);
    println!(
        "the connection smbd {} holds {} fds: {tdbs} tdb/dat files, {sockets} sockets, \
         {pipes_or_anon} pipes/anon inodes; the helper rules find {} objections to it",
        parent.pid,
        fds.len(),
        objections.len()
    );
    if tdbs == 0 || sockets < 2 || objections.len() < 3 {
        return vec![format!(
            "the helper rules barely object to the connection smbd ({objections:?}; it \
             holds {fds:?}): the helper check would not notice a leak"
        )];
    }
    Vec::new()
}

/// After the load: a fresh connection's helpers, idle, hold exactly their socket.
fn check_at_rest(smbd: &Smbd, share_dir: &Path, workdir: &Path) -> Vec<String> {
    let mut session = Session::open(smbd, SHARE, Duration::from_secs(60));
    let local = workdir.join("rest.bin");
    session.run(
        &format!("get big.bin {}", local.display()),
        Duration::from_secs(120),
    );
    let _ = fs::remove_file(&local);
    let mut problems = Vec::new();
    let helpers = procs::helpers_of(session.server_pid, smbd.pid(), ModuleKind::Rust);
    if helpers.is_empty() {
        problems.push("no helper under the session's connection after a get".to_string());
    }
    for helper in &helpers {
        match inspect(helper.pid) {
            Some(found) => {
                println!("at rest, helper {}: {:?}", found.pid, found.fds);
                problems.extend(judge(&found, share_dir, true));
            }
            None => problems.push(format!("helper {} vanished while idle", helper.pid)),
        }
    }
    let _ = session.close(Duration::from_secs(30));
    problems
}

fn status_map(status: &str) -> BTreeMap<String, String> {
    status
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

fn status_fields(status: &str, keys: &[&str]) -> String {
    let map = status_map(status);
    keys.iter()
        .map(|k| format!("{k}: {}", map.get(*k).map_or("(absent)", String::as_str)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The same problem seen on many samples is reported once, with a count.
fn dedup(problems: Vec<String>) -> Vec<String> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut order = Vec::new();
    for p in problems {
        let n = counts.entry(p.clone()).or_default();
        if *n == 0 {
            order.push(p);
        }
        *n += 1;
    }
    order
        .into_iter()
        .map(|p| match counts[&p] {
            1 => p,
            n => format!("{p} (x{n})"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Two users, two shares
// ---------------------------------------------------------------------------------------

const CLIENTS_PER_SHARE: usize = 4;
const ROUNDS: usize = 6;
/// Sizes the smbclient rounds cycle through: tiny, page-1, over 128 KiB, over 1 MiB,
/// over 8 MiB (more than one helper request per SMB2 request), 3 MiB.
const PUT_SIZES: [u64; 6] = [1, 4095, 128 * 1024 + 1, MIB + 7, 8 * MIB + 3, 3 * MIB];
/// Each user's files in their share before the clients start.
const SEED_SIZES: [u64; 3] = [MIB + 1, 8 * MIB + 5, 300 * 1024];
const CLIENT_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/security_client.py"
);

/// One user's share and the local copies of everything it must hold.
struct Side {
    user: User,
    share: &'static str,
    /// Local originals of the share's seed files, by remote name.
    seeds: BTreeMap<String, PathBuf>,
    /// Local originals of every file the clients put, by remote name.
    puts: BTreeMap<String, PathBuf>,
    /// Where the Python client writes what its files must hold.
    expect_dir: PathBuf,
    seed_dir: PathBuf,
}

fn two_users(ctx: &NsContext) {
    python::check();
    let users = users::add_unix_users(&ctx.workdir, &["alice", "bob"]);
    let shares = ["share_a", "share_b"];
    let mut builder = SmbdBuilder::without_shares(&ctx.workdir);
    for (user, share) in users.iter().zip(shares) {
        builder = builder.share(
            share,
            &[
                ("vfs objects", "aio_fork"),
                ("valid users", user.name.as_str()),
                ("aio_fork:inline cached reads", "no"),
                ("aio_fork:max helpers", "2"),
            ],
        );
    }
    let smbd = builder.start();
    let mut sides = Vec::new();
    for (user, share) in users.iter().zip(shares) {
        users::add_smb_user(&smbd, user);
        sides.push(prepare_side(&smbd, user.clone(), share, &ctx.workdir));
    }
    let mut problems = check_strangers_refused(&smbd, &sides);

    // Everything at once: smbclients and the Python client on both shares.
    let started = Instant::now();
    let watch_stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = Arc::clone(&watch_stop);
        let main_pid = smbd.pid();
        thread::spawn(move || watch_module_processes(main_pid, &stop))
    };
    let mut handles = Vec::new();
    for (s, side) in sides.iter().enumerate() {
        for c in 0..CLIENTS_PER_SHARE {
            let job = ClientJob::new(&smbd, side, c, &ctx.workdir);
            handles.push(thread::spawn(move || job.run()));
        }
        let mut cmd = python::command(Path::new(CLIENT_SCRIPT));
        cmd.args(["--share", side.share, "--user", &side.user.name])
            .args(["--password", &side.user.password])
            .arg("--conf")
            .arg(&smbd.conf)
            .args(["--tag", &format!("{}-{s}", side.user.name)])
            .arg("--seed-dir")
            .arg(&side.seed_dir)
            .arg("--expect-dir")
            .arg(&side.expect_dir);
        let label = format!("python client on {} as {}", side.share, side.user.name);
        handles.push(thread::spawn(move || {
            let out = run::run(&mut cmd, Duration::from_secs(300));
            println!("{label}: {}", out.stdout.trim());
            if out.success() {
                Vec::new()
            } else {
                vec![format!("{label} failed:\n{}", out.describe())]
            }
        }));
    }
    for h in handles {
        problems.extend(h.join().expect("client thread"));
    }
    let elapsed = started.elapsed();
    watch_stop.store(true, Ordering::Relaxed);
    let seen = watcher.join().expect("process watcher");
    problems.extend(check_module_processes(&seen, &sides));
    smbd.wait_idle(Duration::from_secs(60));

    let mut bytes_checked = 0u64;
    for side in &sides {
        let (p, bytes) = check_share_files(&smbd, side);
        problems.extend(p);
        bytes_checked += bytes;
    }
    let all = smbd.stats();
    for side in &sides {
        let total = stats::total_for(&all, side.share);
        println!("stats {}: {total:?}", side.share);
        if total.spawned == 0 || total.pread_bytes == 0 || total.pwrite_bytes == 0 {
            problems.push(format!(
                "{}: helpers did not serve the share: {total:?}",
                side.share
            ));
        }
        if total.helper_deaths != 0 {
            problems.push(format!(
                "{}: {} helper deaths",
                side.share, total.helper_deaths
            ));
        }
    }
    println!(
        "two users: {} smbclient processes x {ROUNDS} rounds and 2 Python connections x 4 \
         files, in {elapsed:.1?}; {bytes_checked} bytes on disk verified",
        2 * CLIENTS_PER_SHARE
    );
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

/// One look at a module process (helper or zygote) in /proc.
struct ProcSample {
    pid: u32,
    comm: String,
    /// Its connection smbd.
    conn: u32,
    /// `Uid:` and `Gid:` of /proc/<pid>/status: real, effective, saved, filesystem.
    uids: Vec<u32>,
    gids: Vec<u32>,
    groups: BTreeSet<u32>,
    /// CapPrm, CapEff, NoNewPrivs, Seccomp.
    cap_prm: String,
    cap_eff: String,
    no_new_privs: String,
    seccomp: String,
    /// VmRSS, and RssShmem (the shared buffer), in KiB.
    rss_kib: u64,
    shmem_kib: u64,
    /// Mapping problems seen in /proc/<pid>/maps.
    maps: Vec<String>,
}

/// Samples every module process of the main smbd while the clients run.
fn watch_module_processes(main_pid: u32, stop: &AtomicBool) -> Vec<ProcSample> {
    let mut samples = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        for p in procs::module_processes(&procs::snapshot(), main_pid) {
            if let Some(sample) = sample_process(&p) {
                samples.push(sample);
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    samples
}

fn sample_process(p: &procs::Proc) -> Option<ProcSample> {
    let status = fs::read_to_string(format!("/proc/{}/status", p.pid)).ok()?;
    // The name as of this status: the snapshot's may be older (the helper program is
    // named after its file until it becomes the zygote).
    let comm = status
        .lines()
        .next()?
        .strip_prefix("Name:")?
        .trim()
        .to_string();
    let p = &procs::Proc { comm, ..p.clone() };
    let maps = fs::read_to_string(format!("/proc/{}/maps", p.pid)).ok()?;
    if !maps.contains("aio_fork_helper") {
        return None; // exiting: its address space (the program's own mapping first) is gone
    }
    let fields = status_map(&status);
    // The helper program right after its exec (named after its file until it becomes the
    // zygote) takes its credentials and enters its sandbox (no_new_privs, then the filter)
    // within milliseconds: judged once that is done; one still unconfined after 2 s is
    // judged as it is.
    let confined = fields.get("NoNewPrivs").map(String::as_str) == Some("1")
        && fields.get("Seccomp").map(String::as_str) == Some("2");
    let setting_up = !confined;
    if setting_up && age(p.pid).is_some_and(|a| a < Duration::from_secs(2)) {
        return None;
    }
    let numbers = |key: &str| -> Vec<u32> {
        fields
            .get(key)
            .map(|v| {
                v.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let kib = |key: &str| -> u64 {
        fields
            .get(key)
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let text = |key: &str| fields.get(key).cloned().unwrap_or_default();
    let mut map_problems = Vec::new();
    for line in maps.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let perms = cols.get(1).copied().unwrap_or("");
        let path = cols.get(5).copied().unwrap_or("");
        if path.ends_with(".tdb") || path.ends_with(".ldb") {
            map_problems.push(format!("maps smbd's database {path}"));
        }
        // A helper's own buffer; the zygote maps each new helper's buffer for the instant
        // between making and forking it.
        let own_buffer = path.starts_with("/memfd:aio_fork_buffer");
        if perms.ends_with('s') && !own_buffer {
            map_problems.push(format!("shared mapping {line}"));
        }
        if path.contains("libsmbd") || path.contains("libtevent") || path.contains("libtalloc") {
            map_problems.push(format!("maps smbd's library {path}"));
        }
    }
    // Descriptors: the zygote's are its control socket and signalfd, and while it makes a
    // helper, that helper's socket, buffer and pidfd; nothing of smbd's.
    if p.comm == procs::ZYGOTE_COMM {
        for (fd, target) in fd_table(p.pid).unwrap_or_default() {
            let ours = target.starts_with("socket:")
                || target == "anon_inode:[signalfd]"
                || target == "anon_inode:[pidfd]"
                || target.starts_with("/memfd:aio_fork_buffer");
            if !ours {
                map_problems.push(format!("holds fd {fd} -> {target}"));
            }
        }
    }
    let buffers = maps
        .lines()
        .filter(|l| l.contains("/memfd:aio_fork_buffer"))
        .count();
    if p.comm == procs::HELPER_COMM && buffers == 0 && exits_soon(p.pid) {
        return None; // ending: its mappings were going away while they were read
    }
    if p.comm == procs::HELPER_COMM && buffers != 1 {
        map_problems.push(format!(
            "{buffers} buffer mappings (want its own one); NoNewPrivs {:?} Seccomp {:?}, \
             {} mappings, started {:?} ago",
            fields.get("NoNewPrivs"),
            fields.get("Seccomp"),
            maps.lines().count(),
            age(p.pid)
        ));
    }
    Some(ProcSample {
        pid: p.pid,
        comm: p.comm.clone(),
        conn: p.ppid,
        uids: numbers("Uid"),
        gids: numbers("Gid"),
        groups: numbers("Groups").into_iter().collect(),
        cap_prm: text("CapPrm"),
        cap_eff: text("CapEff"),
        no_new_privs: text("NoNewPrivs"),
        seccomp: text("Seccomp"),
        rss_kib: kib("VmRSS"),
        shmem_kib: kib("RssShmem"),
        maps: map_problems,
    })
}

/// How long ago `pid` started (/proc/<pid>/stat field 22, in clock ticks since boot).
fn age(pid: u32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = stat.rsplit_once(") ")?.1;
    let start_ticks: f64 = after_comm.split(' ').nth(19)?.parse().ok()?;
    let uptime: f64 = fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    // SAFETY: sysconf only reads a system setting.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(Duration::from_secs_f64(
        (uptime - start_ticks / hz).max(0.0),
    ))
}

/// Every module process holds exactly one user's credentials in all four uid and gid
/// fields and that user's groups, no capability, no_new_privs and a seccomp filter, maps
/// nothing shared but a helper's own buffer and nothing of smbd's; a helper's memory
/// besides its buffer stays below 1 MiB. Both users' processes must have been seen.
fn check_module_processes(samples: &[ProcSample], sides: &[Side]) -> Vec<String> {
    const ZERO_CAPS: &str = "0000000000000000";
    let mut problems = Vec::new();
    let mut seen_users = BTreeSet::new();
    let mut report: BTreeMap<(String, String), (BTreeSet<u32>, u64, u64)> = BTreeMap::new();
    for s in samples {
        let who = format!("{} {} (connection {})", s.comm, s.pid, s.conn);
        let Some(side) = sides
            .iter()
            .find(|side| s.uids.first() == Some(&side.user.uid))
        else {
            problems.push(format!("{who}: uids {:?} are no user's", s.uids));
            continue;
        };
        let user = &side.user;
        seen_users.insert(user.uid);
        if s.uids != vec![user.uid; 4] || s.gids != vec![user.gid; 4] {
            problems.push(format!(
                "{who}: Uid {:?} Gid {:?}, want {} in all four",
                s.uids, s.gids, user.name
            ));
        }
        let groups = users::groups_of(&user.name);
        if s.groups != groups {
            problems.push(format!(
                "{who}: groups {:?}, {} has {groups:?}",
                s.groups, user.name
            ));
        }
        if s.cap_prm != ZERO_CAPS || s.cap_eff != ZERO_CAPS {
            problems.push(format!("{who}: CapPrm {} CapEff {}", s.cap_prm, s.cap_eff));
        }
        if s.no_new_privs != "1" || s.seccomp != "2" {
            problems.push(format!(
                "{who}: NoNewPrivs {} Seccomp {}",
                s.no_new_privs, s.seccomp
            ));
        }
        let private_kib = s.rss_kib.saturating_sub(s.shmem_kib);
        // A helper's resident memory besides its buffer (the zygote's is reported).
        if s.comm == procs::HELPER_COMM && private_kib >= 1024 {
            problems.push(format!(
                "{who}: {private_kib} KiB resident besides its buffer"
            ));
        }
        problems.extend(s.maps.iter().map(|m| format!("{who}: {m}")));
        let entry = report
            .entry((s.comm.clone(), user.name.clone()))
            .or_insert((BTreeSet::new(), 0, 0));
        entry.0.insert(s.pid);
        entry.1 = entry.1.max(private_kib);
        entry.2 = entry.2.max(s.rss_kib);
    }
    for ((comm, user), (pids, private, rss)) in &report {
        println!(
            "{comm} as {user}: {} processes, all Uid/Gid {user} x4, CapPrm/CapEff 0, \
             NoNewPrivs 1, Seccomp 2; max RSS {rss} KiB of which {private} KiB not the buffer",
            pids.len()
        );
    }
    println!("module processes: {} samples", samples.len());
    for side in sides {
        if !seen_users.contains(&side.user.uid) {
            problems.push(format!("no module process of {} seen", side.user.name));
        }
    }
    dedup(problems)
}

/// The share directory belongs to the user; seed files (theirs, with content of their
/// own) go in; the local sources of every put are made.
fn prepare_side(smbd: &Smbd, user: User, share: &'static str, workdir: &Path) -> Side {
    let dir = smbd.share_path(share);
    chown(&dir, Some(user.uid), Some(user.gid)).expect("chown share dir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod share dir");
    let base = workdir.join(format!("side_{}", user.name));
    let seed_dir = base.join("seeds");
    let expect_dir = base.join("expect");
    let put_dir = base.join("puts");
    for d in [&seed_dir, &expect_dir, &put_dir] {
        fs::create_dir_all(d).expect("create side dir");
    }
    // Distinct data per user: the user's uid is in every seed.
    let salt = u64::from(user.uid) << 20;
    let mut seeds = BTreeMap::new();
    for (i, size) in SEED_SIZES.iter().enumerate() {
        let name = format!("seed_{i}.bin");
        let local = seed_dir.join(&name);
        data::write_random_file(&local, *size, salt + i as u64);
        let remote = dir.join(&name);
        fs::copy(&local, &remote).expect("seed share");
        chown(&remote, Some(user.uid), Some(user.gid)).expect("chown seed");
        seeds.insert(name, local);
    }
    let mut puts = BTreeMap::new();
    for c in 0..CLIENTS_PER_SHARE {
        for r in 0..ROUNDS {
            let name = format!("put_{c}_{r}.bin");
            let local = put_dir.join(&name);
            let size = PUT_SIZES[(c + r * CLIENTS_PER_SHARE) % PUT_SIZES.len()];
            data::write_random_file(&local, size, salt + 1000 + (c * ROUNDS + r) as u64);
            puts.insert(name, local);
        }
    }
    Side {
        user,
        share,
        seeds,
        puts,
        expect_dir,
        seed_dir,
    }
}

/// alice cannot use bob's share and bob cannot use alice's.
fn check_strangers_refused(smbd: &Smbd, sides: &[Side]) -> Vec<String> {
    let mut problems = Vec::new();
    for (me, other) in [(&sides[0], &sides[1]), (&sides[1], &sides[0])] {
        let out = client::smbclient_as(
            smbd,
            other.share,
            &me.user.credentials(),
            "ls",
            Duration::from_secs(60),
        );
        let text = out.combined();
        if out.success() || !text.contains("NT_STATUS_") {
            problems.push(format!(
                "{} could use {} (valid users = {}):\n{}",
                me.user.name,
                other.share,
                other.user.name,
                out.describe()
            ));
        } else {
            let status = text
                .split_whitespace()
                .find(|w| w.starts_with("NT_STATUS_"))
                .unwrap_or("?");
            println!("{} on {}: refused ({status})", me.user.name, other.share);
        }
    }
    problems
}

/// One smbclient process's rounds: put a file of its own, get a seed file back.
struct ClientJob {
    conf_smbd: (PathBuf, String),
    credentials: String,
    label: String,
    rounds: Vec<(PathBuf, String, String, PathBuf, PathBuf)>,
}

impl ClientJob {
    fn new(smbd: &Smbd, side: &Side, c: usize, workdir: &Path) -> Self {
        let got_dir = workdir.join(format!("got_{}_{c}", side.user.name));
        fs::create_dir_all(&got_dir).expect("create got dir");
        let seed_names: Vec<&String> = side.seeds.keys().collect();
        let rounds = (0..ROUNDS)
            .map(|r| {
                let put = format!("put_{c}_{r}.bin");
                let seed = seed_names[(c + r) % seed_names.len()].clone();
                (
                    side.puts[&put].clone(),
                    put,
                    seed.clone(),
                    got_dir.join(format!("{r}_{seed}")),
                    side.seeds[&seed].clone(),
                )
            })
            .collect();
        ClientJob {
            conf_smbd: (smbd.conf.clone(), smbd.unc(side.share)),
            credentials: side.user.credentials(),
            label: format!("{} client {c}", side.user.name),
            rounds,
        }
    }

    fn run(self) -> Vec<String> {
        let mut problems = Vec::new();
        for (local_put, remote_put, seed, got, seed_local) in &self.rounds {
            let commands = format!(
                "put {} {remote_put}; get {seed} {}",
                local_put.display(),
                got.display()
            );
            let out = run::run(
                common::tools::command("smbclient")
                    .arg("-s")
                    .arg(&self.conf_smbd.0)
                    .arg(&self.conf_smbd.1)
                    .arg("-U")
                    .arg(&self.credentials)
                    .arg("-c")
                    .arg(&commands),
                Duration::from_secs(300),
            );
            // Every byte read must be the seed's: same size, same bytes.
            if let Err(e) = data::compare_files(seed_local, got) {
                problems.push(format!(
                    "{}: get {seed}: {e}\n{}",
                    self.label,
                    out.describe()
                ));
            }
            let _ = fs::remove_file(got);
        }
        problems
    }
}

/// The share holds exactly the user's seeds (unchanged), the files they put, and the
/// Python client's files, each byte for byte and owned by the user. Returns the
/// problems and the bytes compared.
fn check_share_files(smbd: &Smbd, side: &Side) -> (Vec<String>, u64) {
    let dir = smbd.share_path(side.share);
    let mut problems = Vec::new();
    let mut expected: BTreeMap<String, PathBuf> = side.seeds.clone();
    expected.extend(side.puts.clone());
    for entry in fs::read_dir(&side.expect_dir)
        .expect("read expect dir")
        .flatten()
    {
        expected.insert(
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        );
    }
    let present: BTreeSet<String> = fs::read_dir(&dir)
        .expect("read share dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let wanted: BTreeSet<String> = expected.keys().cloned().collect();
    if present != wanted {
        problems.push(format!(
            "{}: files {present:?}, expected {wanted:?}",
            side.share
        ));
    }
    let mut bytes = 0u64;
    for (name, local) in &expected {
        let remote = dir.join(name);
        match data::compare_files(local, &remote) {
            Ok(()) => bytes += fs::metadata(local).map(|m| m.len()).unwrap_or(0),
            Err(e) => problems.push(format!("{} ({}): {e}", side.share, side.user.name)),
        }
        if let Ok(meta) = fs::metadata(&remote) {
            if meta.uid() != side.user.uid || meta.gid() != side.user.gid {
                problems.push(format!(
                    "{}: {name} is owned by {}:{}, expected {} ({}:{})",
                    side.share,
                    meta.uid(),
                    meta.gid(),
                    side.user.name,
                    side.user.uid,
                    side.user.gid
                ));
            }
        }
    }
    println!(
        "{}: {} files, {bytes} bytes, all {}'s",
        side.share,
        expected.len(),
        side.user.name
    );
    (problems, bytes)
}
