//! Nothing the module opens outlives what it was opened for: a share connection's
//! processes, and every pidfd, socket and buffer smbd holds for them, end with the share's
//! tree connect, with its pool's idleness, and with the connection process itself.
//!
//! - `nothing_outlives_its_connection`: the module's things in a connection process are
//!   its pidfds (`anon_inode:[pidfd]`), its sockets to zygotes and helpers (unix
//!   SOCK_SEQPACKET), memfds and the helpers' buffer mappings (`/memfd:aio_fork_buffer`),
//!   read from /proc/PID/fd, /proc/PID/maps and the unix socket table. After a tree connect
//!   (the module starts nothing before a request) they are counted once; then, after puts
//!   and gets through helpers:
//!   - a share with `idle timeout = 1` and no `min helpers`: once its helpers are culled and
//!     its zygote let go, while the tree stays connected, none of them is left;
//!   - a share with `min helpers = 2`: after `tdis`, none is left, and its processes are gone;
//!   - at the connection's exit (its client killed, so smbd disconnects the share itself on
//!     its way out): what the process still holds as it exits, written by a library
//!     preloaded into smbd (tests/programs/at_exit.c, a destructor that runs after the
//!     module's), holds none of them; the same for a plain share's connection, as the
//!     baseline.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::client::Session;
use common::data;
use common::held::{held_now, left_over, module_things, Held};
use common::namespace::{run_in_namespace, NsContext};
use common::procs;
use common::run;
use common::smbd::{Smbd, SmbdBuilder};

const TIMEOUT: Duration = Duration::from_secs(60);
const MIB: u64 = 1 << 20;

#[test]
fn nothing_outlives_its_connection() {
    run_in_namespace(
        "nothing_outlives_its_connection",
        Duration::from_secs(300),
        nothing_outlives,
    );
}

fn nothing_outlives(ctx: &NsContext) {
    let preload = build_at_exit(&ctx.workdir);
    let dumps = ctx.workdir.join("at-exit");
    fs::create_dir_all(&dumps).expect("dump dir");
    fs::set_permissions(&dumps, fs::Permissions::from_mode(0o777)).expect("chmod dump dir");
    let no_inline = [
        ("vfs objects", "aio_fork"),
        ("aio_fork:inline cached reads", "no"),
        ("aio_fork:inline writes", "no"),
    ];
    let smbd = SmbdBuilder::without_shares(&ctx.workdir)
        .share("plain", &[])
        .share(
            "aio_idle",
            &[&no_inline[..], &[("aio_fork:idle timeout", "1")]].concat(),
        )
        .share(
            "aio_min",
            &[&no_inline[..], &[("aio_fork:min helpers", "2")]].concat(),
        )
        .env("LD_PRELOAD", &preload.display().to_string())
        .env("AIO_FORK_AT_EXIT_DIR", &dumps.display().to_string())
        .start();
    let source = ctx.workdir.join("source.bin");
    data::write_random_file(&source, 3 * MIB + 17, 21);
    let mut problems = Vec::new();

    // An idle pool lets its processes go, and keeps nothing of them.
    let (mut session, before) = connect(&smbd, "aio_idle");
    transfer(&mut session, &smbd, "aio_idle", &source, &ctx.workdir);
    wait_for_no_module_process(session.server_pid);
    problems.extend(left_over(session.server_pid, &before, "aio_idle, idle"));
    let _ = session.close(TIMEOUT);

    // A tree disconnect ends the pool's processes and closes everything of theirs.
    let (mut session, before) = connect(&smbd, "aio_min");
    transfer(&mut session, &smbd, "aio_min", &source, &ctx.workdir);
    let live = module_processes(session.server_pid);
    if live.len() < 3 {
        problems.push(format!(
            "aio_min: {} module processes before tdis (want a zygote and 2 helpers)",
            live.len()
        ));
    }
    session.run("tdis", TIMEOUT);
    problems.extend(left_over(
        session.server_pid,
        &before,
        "aio_min, after tdis",
    ));
    wait_for_no_module_process(session.server_pid);
    let _ = session.close(TIMEOUT);

    // The connection's exit: its client vanishes, smbd disconnects the share and exits.
    let mut at_exit = Vec::new();
    for share in ["plain", "aio_min"] {
        let (mut session, _) = connect(&smbd, share);
        transfer(&mut session, &smbd, share, &source, &ctx.workdir);
        let conn = session.server_pid;
        drop(session); // kills smbclient: no tree disconnect from the client
        let held = held_at_exit(&dumps, conn);
        let things = module_things(&held);
        println!(
            "{share}: connection {conn} exited holding {} fds, {} of them the module's kind: \
             {things:?}",
            held.fds.len(),
            things.len()
        );
        at_exit.push((share, things));
    }
    let plain = at_exit[0].1.len();
    for (share, things) in &at_exit {
        if things.len() > plain {
            problems.push(format!(
                "{share}: at the connection's exit it still held {things:?} (the plain share's \
                 connection: {plain} such things)"
            ));
        }
    }
    smbd.wait_idle(TIMEOUT);
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

/// A session on `share` and what its connection holds of the module's kind after the tree
/// connect, before any request.
fn connect(smbd: &Smbd, share: &str) -> (Session, Vec<String>) {
    let session = Session::open(smbd, share, TIMEOUT);
    let held = held_now(session.server_pid).expect("the connection's fd table");
    let things = module_things(&held);
    println!(
        "{share}: after the tree connect, connection {} holds {} fds; of the module's kind: \
         {things:?}",
        session.server_pid,
        held.fds.len()
    );
    (session, things)
}

/// A put and a get of `source`, checked byte for byte.
fn transfer(session: &mut Session, smbd: &Smbd, share: &str, source: &Path, dir: &Path) {
    let back = dir.join(format!("back-{share}.bin"));
    session.run(&format!("put {} file.bin", source.display()), TIMEOUT);
    session.run(&format!("get file.bin {}", back.display()), TIMEOUT);
    data::compare_files(source, &smbd.share_path(share).join("file.bin"))
        .unwrap_or_else(|e| panic!("{share}: put: {e}"));
    data::compare_files(source, &back).unwrap_or_else(|e| panic!("{share}: get: {e}"));
    let _ = fs::remove_file(&back);
}

/// The module's live processes (zygotes, helpers) under connection `conn`.
fn module_processes(conn: u32) -> Vec<procs::Proc> {
    procs::snapshot()
        .into_iter()
        .filter(|p| {
            p.is_live()
                && p.ppid == conn
                && (p.comm == procs::ZYGOTE_COMM || p.comm == procs::HELPER_COMM)
        })
        .collect()
}

fn wait_for_no_module_process(conn: u32) {
    let deadline = Instant::now() + TIMEOUT;
    while !module_processes(conn).is_empty() {
        assert!(
            Instant::now() < deadline,
            "module processes of connection {conn} still there after {TIMEOUT:?}: {:?}",
            module_processes(conn)
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// What connection `pid` held as it exited, as at_exit.so wrote it.
fn held_at_exit(dir: &Path, pid: u32) -> Held {
    let path = dir.join(pid.to_string());
    let deadline = Instant::now() + TIMEOUT;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "connection {pid} did not exit (or exited without exit()) within {TIMEOUT:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let text = fs::read_to_string(&path).expect("read the at-exit report");
    let (fds, rest) = text.split_once("maps\n").expect("maps section");
    let (maps, unix) = rest.split_once("unix\n").expect("unix section");
    Held {
        fds: fds
            .lines()
            .filter_map(|l| {
                let (fd, target) = l.strip_prefix("fd ")?.split_once(' ')?;
                Some((fd.to_string(), target.to_string()))
            })
            .collect(),
        maps: maps.to_string(),
        unix: unix.to_string(),
    }
}

/// tests/programs/at_exit.c as a shared object for LD_PRELOAD.
fn build_at_exit(dir: &Path) -> PathBuf {
    let out = dir.join("at_exit.so");
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/programs/at_exit.c");
    let cc = run::run(
        Command::new("gcc")
            .args(["-O2", "-Wall", "-Werror", "-shared", "-fPIC", "-o"])
            .arg(&out)
            .arg(source),
        TIMEOUT,
    );
    assert!(cc.success(), "gcc at_exit.c:\n{}", cc.describe());
    out
}
