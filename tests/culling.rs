//! Helper pool life cycle on one connection: load spawns several helpers (never more
//! than `aio_fork:max helpers`), idle ones are culled after `aio_fork:idle timeout`
//! down to `aio_fork:min helpers`, and the connection still transfers correctly.
//!
//! Helpers belong to the connection's smbd process, so everything happens on one
//! long-lived smbclient session, watched from /proc.

mod common;

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::client::Session;
use common::data;
use common::module::ModuleKind;
use common::namespace::{run_in_namespace, NsContext};
use common::procs::{self, HelperSampler};
use common::smbd::{Smbd, SmbdBuilder};
use common::stats;

const SHARE: &str = "cull";
const MIN_HELPERS: usize = 1;
const MAX_HELPERS: usize = 4;
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle timeout plus generous slack for the cull timer.
const CULL_DEADLINE: Duration = Duration::from_secs(8);
/// Long enough for many reads to be in flight at once.
const LOAD_SIZE: u64 = 32 << 20;
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn idle_helpers_are_culled_down_to_min() {
    run_in_namespace(
        "idle_helpers_are_culled_down_to_min",
        Duration::from_secs(10 * 60),
        run_all,
    );
}

fn start_smbd(workdir: &Path) -> Smbd {
    let idle = IDLE_TIMEOUT.as_secs().to_string();
    let min = MIN_HELPERS.to_string();
    let max = MAX_HELPERS.to_string();
    SmbdBuilder::without_shares(workdir)
        // 128 KiB requests: smbclient keeps many of them in flight on one connection,
        // which drives the pool to its maximum; and Samba's C module (which fails
        // larger requests) can run the same scenario.
        .global("smb2 max read", "131072")
        .global("smb2 max write", "131072")
        .share(
            SHARE,
            &[
                ("vfs objects", "aio_fork"),
                ("aio_fork:idle timeout", &idle),
                ("aio_fork:min helpers", &min),
                ("aio_fork:max helpers", &max),
                // The load is a read of a file just written (in the page cache): served
                // inline it would never need a helper. This test is about the pool.
                ("aio_fork:inline cached reads", "no"),
            ],
        )
        .start()
}

fn run_all(ctx: &NsContext) {
    let kind = ctx.module.kind;
    let smbd = start_smbd(&ctx.workdir);
    let source = ctx.workdir.join("load.bin");
    data::write_random_file(&source, LOAD_SIZE, 42);
    fs::copy(&source, smbd.share_path(SHARE).join("load.bin")).expect("seed load file");

    let mut session = Session::open(&smbd, SHARE, COMMAND_TIMEOUT);
    let conn = session.server_pid;
    let at_connect = procs::helpers_of(conn, smbd.pid(), kind).len();
    println!("helpers at connect: {at_connect}");
    if kind == ModuleKind::Rust {
        // Nothing runs before the share's first request; `min helpers` holds from then on
        // (see watch_idle_pool, which must see the pool settle at the minimum).
        assert_eq!(at_connect, 0, "a module process started before any I/O");
    }

    let peak = drive_load(&smbd, &mut session, kind, &source, "back1");
    check_peak(kind, peak);
    let settled = watch_idle_pool(&smbd, conn, kind);
    check_settled(kind, peak, settled);
    if kind == ModuleKind::Rust {
        let zombies = procs::zombie_helpers_of(conn, kind);
        assert!(zombies.is_empty(), "unreaped helpers: {zombies:?}");
    }

    // The pool, shrunk, must still serve correctly: a read and a write.
    transfer_again(&smbd, &mut session, &source);
    let closed = session.close(Duration::from_secs(30));
    assert!(
        closed.success(),
        "session did not quit:\n{}",
        closed.describe()
    );
    smbd.wait_idle(Duration::from_secs(30));
    if kind == ModuleKind::Rust {
        check_stats(&smbd, peak);
    }
}

/// Downloads the load file while sampling this connection's helpers; returns the
/// most seen at once.
fn drive_load(
    smbd: &Smbd,
    session: &mut Session,
    kind: ModuleKind,
    source: &Path,
    name: &str,
) -> usize {
    let local = source.with_file_name(name);
    let sampler = HelperSampler::start(
        smbd.pid(),
        kind,
        Some(session.server_pid),
        Duration::from_millis(2),
    );
    let lines = session.run(
        &format!("get load.bin {}", local.display()),
        COMMAND_TIMEOUT,
    );
    let report = sampler.finish();
    if let Err(e) = data::compare_files(source, &local) {
        panic!("download under load: {e}\nsmbclient said: {lines:?}");
    }
    println!(
        "under load: at most {} live helpers, {} distinct, {} samples",
        report.max_live,
        report.distinct.len(),
        report.samples
    );
    report.max_live
}

fn check_peak(kind: ModuleKind, peak: usize) {
    assert!(
        peak > 1,
        "the load never had more than {peak} helper(s) at once: it does not exercise the pool"
    );
    if kind == ModuleKind::Rust {
        assert!(
            peak <= MAX_HELPERS,
            "{peak} helpers at once, above `aio_fork:max helpers = {MAX_HELPERS}`"
        );
    }
}

/// Watches the idle connection's helper count every 100 ms until it reaches
/// `min helpers` (or the deadline passes); returns the count at the end, after one
/// more second to check it does not fall below the minimum.
fn watch_idle_pool(smbd: &Smbd, conn: u32, kind: ModuleKind) -> usize {
    let start = Instant::now();
    let count = || procs::helpers_of(conn, smbd.pid(), kind).len();
    // Only the changes, as "seconds:count".
    let mut timeline: Vec<String> = Vec::new();
    let mut last = usize::MAX;
    loop {
        let now = count();
        if now != last {
            timeline.push(format!("{:.1}s:{now}", start.elapsed().as_secs_f64()));
            last = now;
        }
        if now <= MIN_HELPERS || start.elapsed() >= CULL_DEADLINE {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_secs(1));
    let settled = count();
    timeline.push(format!("{:.1}s:{settled}", start.elapsed().as_secs_f64()));
    println!("idle helper count over time: {}", timeline.join(" "));
    settled
}

fn check_settled(kind: ModuleKind, peak: usize, settled: usize) {
    match kind {
        ModuleKind::Rust => assert_eq!(
            settled, MIN_HELPERS,
            "{CULL_DEADLINE:?} after the load ({IDLE_TIMEOUT:?} idle timeout) the connection \
             has {settled} helpers, expected `min helpers` = {MIN_HELPERS} (peak was {peak})"
        ),
        // Samba's C module has no idle option: it culls after a fixed 30 s.
        ModuleKind::SambaC => assert!(
            settled > 1,
            "Samba's C module should keep its helpers for 30 s, has {settled} (peak {peak})"
        ),
    }
}

/// A download and an upload on the same, now idle, connection, checked on disk.
fn transfer_again(smbd: &Smbd, session: &mut Session, source: &Path) {
    let back = source.with_file_name("back2");
    let lines = session.run(&format!("get load.bin {}", back.display()), COMMAND_TIMEOUT);
    if let Err(e) = data::compare_files(source, &back) {
        panic!("download after culling: {e}\nsmbclient said: {lines:?}");
    }
    let lines = session.run(&format!("put {} up.bin", source.display()), COMMAND_TIMEOUT);
    let on_disk = smbd.share_path(SHARE).join("up.bin");
    if let Err(e) = data::compare_files(source, &on_disk) {
        panic!("upload after culling: {e}\nsmbclient said: {lines:?}");
    }
}

/// The tree-disconnect line must show the helpers spawned and culled, and all the
/// bytes moved (two downloads, one upload).
fn check_stats(smbd: &Smbd, peak: usize) {
    let total = stats::total_for(&smbd.stats(), SHARE);
    println!("stats {SHARE}: {total:?}");
    assert_eq!(
        total.lines, 1,
        "one tree connect, one stats line: {total:?}"
    );
    assert!(
        total.spawned >= peak as u64,
        "spawned={} but {peak} helpers were seen at once",
        total.spawned
    );
    assert!(
        total.culled >= (peak - MIN_HELPERS) as u64,
        "culled={} but the pool went from {peak} to {MIN_HELPERS} helpers",
        total.culled
    );
    assert!(
        total.pread_bytes >= 2 * LOAD_SIZE && total.pwrite_bytes >= LOAD_SIZE,
        "stats do not account for the bytes moved: {total:?}"
    );
}
