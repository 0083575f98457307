//! Faults: helpers killed at random, fork() failing, a hung helper, clients
//! killed with requests in flight, smbd killed, many clients at once, and backpressure.
//! Each test runs its own smbd in a private namespace, transfers real files with
//! smbclient (or smbtorture) while the fault happens, and checks every byte, the
//! module's stats line, /proc (helpers, zombies, RSS) and smbd's log.
//!
//! - The fault shares turn `aio_fork:inline cached reads` off: a read of a file in the
//!   page cache would otherwise be served in smbd without a helper, and these tests are
//!   about what happens to requests in helpers.
//! - The test process is the namespace's init: it reaps orphans (see `common::faults`).
//! - The tests run one at a time (a lock on the outer side): they measure time bounds
//!   and RSS, which another test's load on the same 2 cores would blur.
//! - Each test ends with one `FAULTS SUMMARY` line: load held, faults injected, bytes
//!   verified, runtime. Random choices print their seed (`AIO_FORK_FAULT_SEED` repeats).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use common::client::{self, Session};
use common::data;
use common::faults::{self, HelperKiller, ProcWatch, Rng, WatchReport};
use common::namespace::{run_in_namespace, NsContext};
use common::run::{self, one_at_a_time};
use common::smbd::{Smbd, SmbdBuilder};
use common::stats::{self, Stats};
use common::torture;

const MIB: u64 = 1 << 20;
const INLINE_OFF: (&str, &str) = ("aio_fork:inline cached reads", "no");
const AIO: (&str, &str) = ("vfs objects", "aio_fork");
const ERRATIC: (&str, &str) = ("vfs_aio_fork:erratic_testing_mode", "yes");
/// A helper seen as a zombie this long is a failure (exited and not reaped). A dead
/// helper is reaped by its parent: the connection's zygote at once, or, for a helper
/// smbd forked itself, smbd when its event loop gets to it, which under heavy load on
/// 2 cores (load average 50 has been seen) has taken 625 ms; and one that dies after
/// its pool stopped waiting for it (100 ms, at disconnect) waits for its connection
/// process to exit. A helper never reaped stays until its connection ends (seconds
/// here), so 1 s tells the two apart. Where nothing else runs (smbd killed, test 5)
/// the bound is ~100 ms.
const ZOMBIE_LIMIT: Duration = Duration::from_secs(1);
const IDLE_ZOMBIE_LIMIT: Duration = Duration::from_millis(100);
/// How often the /proc watch samples.
const WATCH_EVERY: Duration = Duration::from_millis(2);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
const TORTURE_TIMEOUT: Duration = Duration::from_secs(180);
/// Each test's namespace is killed after this.
const TEST_LIMIT: Duration = Duration::from_secs(10 * 60);

// ---------------------------------------------------------------------------------
// 1. Helpers SIGKILLed at random moments.

#[test]
fn helpers_killed_at_random() {
    let _serial = one_at_a_time();
    run_in_namespace("helpers_killed_at_random", TEST_LIMIT, helpers_killed);
}

const KILL_FILE_SIZE: u64 = 256 * MIB;
const KILL_EVERY: Duration = Duration::from_millis(100);
/// Put + get rounds under the killer (one 256 MiB round takes about a second).
const KILL_ROUNDS: usize = 3;
/// smb2.rw runs under the killer: at least this many...
const RW_MIN_RUNS: usize = 5;
/// ... and until this many helpers were killed ...
const RW_MIN_KILLS: usize = 5;
/// ... but no more runs than this.
const RW_MAX_RUNS: usize = 40;

fn helpers_killed(ctx: &NsContext) {
    let started = Instant::now();
    let mut rng = Rng::from_env_or_time("helpers_killed");
    let smbd = SmbdBuilder::without_shares(&ctx.workdir)
        .share("plain", &[])
        .share("aio", &[AIO, INLINE_OFF])
        .share("aio_rw", &[AIO, INLINE_OFF])
        .start();
    let source = source_file(&ctx.workdir, "src", KILL_FILE_SIZE, 1);
    let watch = ProcWatch::start(smbd.pid(), WATCH_EVERY);

    let plain = session_round_trip(&smbd, "plain", &source, &ctx.workdir);
    // Puts, then gets, each under its own killer, on one connection.
    let mut session = Session::open(&smbd, "aio", COMMAND_TIMEOUT);
    let conn = Some(session.server_pid);
    let (mut put_n, mut get_n, mut in_request) = (0, 0, 0);
    for round in 0..KILL_ROUNDS {
        let remote = format!("killed_{round}.bin");
        let killer = HelperKiller::start(conn, KILL_EVERY, Rng::new(rng.next_u64()));
        let put_time = session_put(&smbd, &mut session, "aio", &source, &remote);
        let put = killer.finish();
        let killer = HelperKiller::start(conn, KILL_EVERY, Rng::new(rng.next_u64()));
        let get_time = session_get(&smbd, &mut session, &remote, &source, &ctx.workdir);
        let get = killer.finish();
        let (put_kills, get_kills) = (put.killed.len(), get.killed.len());
        println!(
            "256 MiB put/get: plain {:.2}/{:.2} s; aio with a helper SIGKILLed every \
             ~{KILL_EVERY:?}: {:.2}/{:.2} s, {put_kills}/{get_kills} helpers killed \
             ({}/{} inside a request)",
            plain.0.as_secs_f64(),
            plain.1.as_secs_f64(),
            put_time.as_secs_f64(),
            get_time.as_secs_f64(),
            put.in_request,
            get.in_request,
        );
        in_request += put.in_request + get.in_request;
        assert!(
            put_kills >= 1 && get_kills >= 1,
            "{put_kills} helpers killed during the 256 MiB put, {get_kills} during the get: \
             the fault must hit both"
        );
        put_n += put_kills;
        get_n += get_kills;
    }
    close_session(&smbd, session);

    let plain_rw = torture::run_suite(&smbd, "plain", "smb2.rw", TORTURE_TIMEOUT);
    // One smb2.rw run takes a fraction of a second: runs back to back under one killer
    // until enough helpers were killed; each run's results must be the plain share's.
    let killer = HelperKiller::start(None, KILL_EVERY, Rng::new(rng.next_u64()));
    let mut rw_runs = Vec::new();
    // A kill can land on a helper whose short connection is already ending (its pool gone,
    // nobody to see the death): runs go on until a death was seen too.
    let deaths = || stats::total_for(&smbd.stats(), "aio_rw").helper_deaths;
    while rw_runs.len() < RW_MIN_RUNS
        || ((killer.kills() < RW_MIN_KILLS || deaths() == 0) && rw_runs.len() < RW_MAX_RUNS)
    {
        rw_runs.push(torture::run_suite(
            &smbd,
            "aio_rw",
            "smb2.rw",
            TORTURE_TIMEOUT,
        ));
    }
    let torture_kills = killer.finish();
    let rw_secs: f64 = rw_runs.iter().map(|r| r.output.elapsed.as_secs_f64()).sum();
    println!(
        "smb2.rw: plain {:?} ({:.1} s); {} runs on aio_rw under the killer ({rw_secs:.1} s), \
         {} helpers killed",
        plain_rw.results,
        plain_rw.output.elapsed.as_secs_f64(),
        rw_runs.len(),
        torture_kills.killed.len()
    );
    smbd.wait_idle(Duration::from_secs(30));
    let report = watch.finish();
    println!("watch: {}", report.summary());
    check_common(&smbd, &report);
    assert!(
        !plain_rw.results.is_empty(),
        "{}",
        plain_rw.output.describe()
    );
    for (i, run) in rw_runs.iter().enumerate() {
        assert!(
            run.results == plain_rw.results,
            "smb2.rw run {i} under helper kills: per-test results differ from the plain \
             share's\nplain: {:?}\naio_rw: {:?}\n{}\n{}",
            plain_rw.results,
            run.results,
            run.output.describe(),
            smbd.log_tail(40)
        );
    }
    let aio_stats = one_line_stats(&smbd, "aio");
    let kills = (put_n + get_n) as u64;
    assert!(
        in_request >= 1,
        "none of the {kills} helpers killed was inside a request: the retry was not tested"
    );
    assert!(
        aio_stats.helper_deaths >= kills && aio_stats.retries >= 1,
        "{kills} helpers of the connection were SIGKILLed, {in_request} inside a request; \
         the stats must show at least as many helper_deaths and some retries: \
         {aio_stats:?}\n{}",
        smbd.log_tail(40)
    );
    let rw_stats = stats::total_for(&smbd.stats(), "aio_rw");
    assert!(
        !torture_kills.killed.is_empty() && rw_stats.helper_deaths >= 1,
        "smb2.rw: {} helpers killed, stats {rw_stats:?}: the fault must be injected and seen",
        torture_kills.killed.len()
    );
    summary(
        "helpers_killed",
        started,
        format!(
            "{KILL_ROUNDS} x 256 MiB put + get on one connection; smb2.rw ({} tests) {} times",
            plain_rw.results.len(),
            rw_runs.len()
        ),
        format!(
            "{put_n} + {get_n} helper SIGKILLs during the puts + gets, {in_request} inside \
             a request (helper_deaths={}, \
             retries={}, fallbacks={}), {} during smb2.rw (helper_deaths={}, retries={})",
            aio_stats.helper_deaths,
            aio_stats.retries,
            aio_stats.fallbacks,
            torture_kills.killed.len(),
            rw_stats.helper_deaths,
            rw_stats.retries
        ),
        2 * (1 + KILL_ROUNDS as u64) * KILL_FILE_SIZE,
    );
}

// ---------------------------------------------------------------------------------
// 2. fork() fails.

#[test]
fn fork_failure_falls_back_to_the_next_module() {
    let _serial = one_at_a_time();
    run_in_namespace(
        "fork_failure_falls_back_to_the_next_module",
        TEST_LIMIT,
        fork_fails,
    );
}

const NOFORK_FILE_SIZE: u64 = 8 * MIB + 3;
const FORK_FAILURE_LINE: &str = "cannot start a helper";

fn fork_fails(ctx: &NsContext) {
    let started = Instant::now();
    let smbd = SmbdBuilder::without_shares(&ctx.workdir)
        .share("plain", &[])
        .share(
            "aio_nofork",
            &[AIO, INLINE_OFF, ("aio_fork:fail fork testing mode", "yes")],
        )
        .start();
    let source = source_file(&ctx.workdir, "src", NOFORK_FILE_SIZE, 2);
    let watch = ProcWatch::start(smbd.pid(), WATCH_EVERY);
    let plain = session_round_trip(&smbd, "plain", &source, &ctx.workdir);
    let nofork = session_round_trip(&smbd, "aio_nofork", &source, &ctx.workdir);
    smbd.wait_idle(Duration::from_secs(30));
    let report = watch.finish();
    println!(
        "8 MiB+3 put/get: plain {:.2}/{:.2} s, aio_nofork {:.2}/{:.2} s; watch: {}",
        plain.0.as_secs_f64(),
        plain.1.as_secs_f64(),
        nofork.0.as_secs_f64(),
        nofork.1.as_secs_f64(),
        report.summary()
    );
    check_common(&smbd, &report);
    let log = smbd.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(FORK_FAILURE_LINE))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one connection whose every fork fails must log {FORK_FAILURE_LINE:?} exactly once, \
         found {lines:?}\n{}",
        smbd.log_tail(40)
    );
    assert!(
        report.all_helpers().is_empty(),
        "helper processes exist although every fork fails: {:?}",
        report.helpers_by_parent
    );
    let s = one_line_stats(&smbd, "aio_nofork");
    assert!(
        s.spawned == 0 && s.fallbacks > 0 && s.preads == 0 && s.pwrites == 0,
        "every request must have gone to the next module (spawned=0, fallbacks>0, no \
         helper I/O): {s:?}"
    );
    summary(
        "fork_fails",
        started,
        "8 MiB+3 put + get on one connection".to_string(),
        format!(
            "every fork failed (EAGAIN): {} requests fell back, one log line",
            s.fallbacks
        ),
        2 * NOFORK_FILE_SIZE,
    );
}

// ---------------------------------------------------------------------------------
// 3. A hung helper.

#[test]
fn hung_helper_is_ended_after_the_request_timeout() {
    let _serial = one_at_a_time();
    run_in_namespace(
        "hung_helper_is_ended_after_the_request_timeout",
        TEST_LIMIT,
        hung_helper,
    );
}

const HANG_FILE_SIZE: u64 = 32 * MIB;
const REQUEST_TIMEOUT_S: u64 = 2;
/// The get must end within this, hung helpers and all.
const HANG_BOUND: Duration = Duration::from_secs(30);
/// New helpers appearing this long after the get starts are stopped too...
const STOP_WINDOW: Duration = Duration::from_secs(3);
/// ... up to this many helpers stopped in all.
const MAX_STOPPED: usize = 3;

fn hung_helper(ctx: &NsContext) {
    let started = Instant::now();
    let timeout = REQUEST_TIMEOUT_S.to_string();
    let smbd = SmbdBuilder::without_shares(&ctx.workdir)
        .share("plain", &[])
        .share(
            "aio_hang",
            &[
                AIO,
                INLINE_OFF,
                ("aio_fork:request timeout", &timeout),
                ("aio_fork:min helpers", "1"),
            ],
        )
        .start();
    let source = source_file(&ctx.workdir, "src", HANG_FILE_SIZE, 3);
    for share in ["plain", "aio_hang"] {
        fs::copy(&source, smbd.share_path(share).join("hang.bin")).expect("seed file");
    }
    let watch = ProcWatch::start(smbd.pid(), WATCH_EVERY);
    let plain_get = one_shot_get(&smbd, "plain", "hang.bin", &source, &ctx.workdir);

    let mut session = Session::open(&smbd, "aio_hang", COMMAND_TIMEOUT);
    let conn = session.server_pid;
    // The share's first write starts its zygote and `min helpers` (nothing runs before).
    let warm = source_file(&ctx.workdir, "warm", 4096, 4);
    session.run(&format!("put {} warm.bin", warm.display()), COMMAND_TIMEOUT);
    let first = wait_for_helper(conn, Duration::from_secs(10), &smbd);
    assert!(faults::send_signal(first, libc::SIGSTOP), "SIGSTOP {first}");
    let stopper = thread::spawn(move || stop_new_helpers(conn, first));
    let local = ctx.workdir.join("hang_back.bin");
    let t0 = Instant::now();
    let lines = session.run(
        &format!("get hang.bin {}", local.display()),
        COMMAND_TIMEOUT,
    );
    let took = t0.elapsed();
    let stopped = stopper.join().expect("stopper thread");
    check_lines("get", &lines, &smbd);
    compare_or_panic(&source, &local, "get with hung helpers", &smbd);
    println!(
        "32 MiB get: plain {:.2} s; aio_hang with {} helper(s) SIGSTOPped {stopped:?}: {:.2} s",
        plain_get.as_secs_f64(),
        stopped.len(),
        took.as_secs_f64()
    );
    assert!(
        took < HANG_BOUND,
        "the get took {took:?} with hung helpers (request timeout {REQUEST_TIMEOUT_S} s), \
         bound {HANG_BOUND:?}\n{}",
        smbd.log_tail(40)
    );
    // The pre-forked helper had the get's first request: ended as hung, and reaped.
    if let Err(left) = faults::wait_all_gone(&[first], Duration::from_secs(5)) {
        panic!(
            "the stopped helper {first} that held a request is still there {left:?} after \
             the get ({REQUEST_TIMEOUT_S} s request timeout)\n{}",
            smbd.log_tail(40)
        );
    }
    close_session(&smbd, session);
    // Stopped helpers that never got a request again end with the pool.
    if let Err(left) = faults::wait_all_gone(&stopped, Duration::from_secs(5)) {
        panic!("stopped helpers still exist after the session closed: {left:?}");
    }
    smbd.wait_idle(Duration::from_secs(30));
    let report = watch.finish();
    println!("watch: {}", report.summary());
    check_common(&smbd, &report);
    let s = one_line_stats(&smbd, "aio_hang");
    assert!(
        s.hung >= 1 && s.retries >= 1,
        "a helper SIGSTOPped with a request must be counted hung and its request retried: \
         {s:?}\n{}",
        smbd.log_tail(40)
    );
    summary(
        "hung_helper",
        started,
        format!(
            "32 MiB get on one connection, {} s request timeout",
            REQUEST_TIMEOUT_S
        ),
        format!(
            "{} helper(s) SIGSTOPped (hung={}, retries={}); get took {:.1} s",
            stopped.len(),
            s.hung,
            s.retries,
            took.as_secs_f64()
        ),
        HANG_FILE_SIZE,
    );
}

/// The one live helper of `conn` (the `min helpers` one), waited for.
fn wait_for_helper(conn: u32, timeout: Duration, smbd: &Smbd) -> u32 {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(h) = faults::live_helpers(Some(conn)).first() {
            return h.pid;
        }
        assert!(
            Instant::now() < deadline,
            "no helper under connection {conn} within {timeout:?} (min helpers = 1)\n{}",
            smbd.log_tail(30)
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// SIGSTOPs helpers of `conn` that appear during [`STOP_WINDOW`], up to
/// [`MAX_STOPPED`] in all (`first` is already stopped); returns every stopped pid.
fn stop_new_helpers(conn: u32, first: u32) -> Vec<u32> {
    let mut stopped = vec![first];
    let start = Instant::now();
    while start.elapsed() < STOP_WINDOW && stopped.len() < MAX_STOPPED {
        for helper in faults::live_helpers(Some(conn)) {
            if stopped.len() < MAX_STOPPED
                && !stopped.contains(&helper.pid)
                && faults::send_signal(helper.pid, libc::SIGSTOP)
            {
                stopped.push(helper.pid);
            }
        }
        thread::sleep(Duration::from_millis(5));
    }
    stopped
}

// ---------------------------------------------------------------------------------
// 4. The client disconnects with requests in flight.

#[test]
fn client_killed_with_requests_in_flight() {
    let _serial = one_at_a_time();
    run_in_namespace(
        "client_killed_with_requests_in_flight",
        TEST_LIMIT,
        client_killed,
    );
}

const BIG_FILE_SIZE: u64 = 256 * MIB;
const CHECK_FILE_SIZE: u64 = 8 * MIB + 3;
const CLIENT_KILLS: usize = 5;
/// How long a killed connection's process and helpers may take to go.
const GONE_WITHIN: Duration = Duration::from_secs(5);

fn client_killed(ctx: &NsContext) {
    let started = Instant::now();
    let mut rng = Rng::from_env_or_time("client_killed");
    let smbd = SmbdBuilder::without_shares(&ctx.workdir)
        .share("plain", &[])
        .share("aio_erratic", &[AIO, INLINE_OFF, ERRATIC])
        .start();
    let big = source_file(&ctx.workdir, "big", BIG_FILE_SIZE, 4);
    fs::copy(&big, smbd.share_path("aio_erratic").join("big.bin")).expect("seed file");
    let check = source_file(&ctx.workdir, "check", CHECK_FILE_SIZE, 5);
    let watch = ProcWatch::start(smbd.pid(), WATCH_EVERY);

    let mut kills = Vec::new();
    let mut attempts = 0;
    let mut verified = 0;
    while kills.len() < CLIENT_KILLS {
        attempts += 1;
        assert!(
            attempts <= 3 * CLIENT_KILLS,
            "{attempts} attempts, only {} kills mid-transfer: the get ends too fast",
            kills.len()
        );
        let delay = rng.millis(0, 300);
        let Some(kill) = kill_client_mid_get(&smbd, "aio_erratic", "big.bin", delay, &ctx.workdir)
        else {
            continue;
        };
        println!(
            "client SIGKILLed {delay:?} into the get ({} of {BIG_FILE_SIZE} bytes received, \
             {} of {} helper(s) inside a request); connection {} and its helpers gone {:.0} ms \
             later",
            kill.received,
            kill.in_flight,
            kill.helpers.len(),
            kill.conn,
            kill.gone_after.as_secs_f64() * 1000.0
        );
        assert!(
            faults::is_live(smbd.pid()),
            "the main smbd died after a client was killed\n{}",
            smbd.log_tail(40)
        );
        let name = format!("after_{}.bin", kills.len());
        one_shot_put(&smbd, "aio_erratic", &check, &name);
        one_shot_get(&smbd, "aio_erratic", &name, &check, &ctx.workdir);
        verified += 2 * CHECK_FILE_SIZE;
        kills.push(kill);
    }

    // Closing a file (and a compound's close) while its flush is in a helper: smbd
    // waits for the request; smbtorture checks the answers.
    let plain_ca = torture::run_suite(&smbd, "plain", "smb2.compound_async", TORTURE_TIMEOUT);
    let aio_ca = torture::run_suite(&smbd, "aio_erratic", "smb2.compound_async", TORTURE_TIMEOUT);
    println!(
        "smb2.compound_async: plain {:?}, aio_erratic {:?}",
        plain_ca.results, aio_ca.results
    );
    smbd.wait_idle(Duration::from_secs(30));
    let report = watch.finish();
    println!("watch: {}", report.summary());
    check_common(&smbd, &report);
    let left: Vec<_> = report
        .all_helpers()
        .into_iter()
        .filter_map(faults::proc_of)
        .collect();
    assert!(left.is_empty(), "helpers left behind: {left:?}");
    assert!(
        !plain_ca.results.is_empty() && aio_ca.results == plain_ca.results,
        "smb2.compound_async: results differ from the plain share's\nplain: {:?}\naio: {:?}\n{}",
        plain_ca.results,
        aio_ca.results,
        aio_ca.output.describe()
    );
    let s = stats::total_for(&smbd.stats(), "aio_erratic");
    println!("stats aio_erratic: {s:?}");
    let slowest = kills.iter().map(|k| k.gone_after).max().unwrap_or_default();
    summary(
        "client_killed",
        started,
        format!(
            "{CLIENT_KILLS} gets of 256 MiB through the erratic share (5-24 ms per request), \
             each followed by an 8 MiB+3 put + get on a new connection; smb2.compound_async"
        ),
        format!(
            "{} clients SIGKILLed mid-get (received {:?} bytes, helpers in a request {:?}); \
             connections gone within {:.0} ms",
            kills.len(),
            kills.iter().map(|k| k.received).collect::<Vec<_>>(),
            kills.iter().map(|k| k.in_flight).collect::<Vec<_>>(),
            slowest.as_secs_f64() * 1000.0
        ),
        verified,
    );
}

/// One client killed in the middle of a get.
struct ClientKill {
    conn: u32,
    helpers: Vec<u32>,
    /// Helpers inside a request at the kill.
    in_flight: usize,
    received: u64,
    /// From the kill until the connection process and its helpers were gone.
    gone_after: Duration,
}

/// Starts `get <remote>` in a background smbclient, SIGKILLs it at the first moment
/// after `delay` (from the first bytes received) at which a helper of its connection
/// is inside a request, and waits for its connection process and helpers to go.
/// `None` if the get ended before (the attempt does not count).
fn kill_client_mid_get(
    smbd: &Smbd,
    share: &str,
    remote: &str,
    delay: Duration,
    workdir: &Path,
) -> Option<ClientKill> {
    let local = workdir.join("killed_get.bin");
    let _ = fs::remove_file(&local);
    let before = smbd.connections();
    let mut child = client::spawn(smbd, share, &format!("get {remote} {}", local.display()));
    let conn = wait_new_connection(smbd, &before, &local);
    thread::sleep(delay);
    // Then the first moment a helper of the connection is inside a request.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (helpers, in_flight, running) = loop {
        let helpers: Vec<u32> = faults::live_helpers(Some(conn))
            .iter()
            .map(|p| p.pid)
            .collect();
        let in_flight = faults::helpers_in_request(&helpers);
        let running = matches!(child.try_wait(), Ok(None));
        if in_flight > 0 || !running || Instant::now() >= deadline {
            break (helpers, in_flight, running);
        }
        thread::sleep(Duration::from_millis(1));
    };
    let received = fs::metadata(&local).map(|m| m.len()).unwrap_or(0);
    run::kill_group(child.id());
    let _ = child.wait();
    let t0 = Instant::now();
    if !running || received >= BIG_FILE_SIZE || in_flight == 0 {
        println!(
            "{delay:?} into the get: {} of {BIG_FILE_SIZE} bytes received, client {}, \
             {in_flight} helper(s) in a request; not counted",
            received,
            if running { "running" } else { "done" }
        );
        let _ = faults::wait_all_gone(&[conn], GONE_WITHIN);
        return None;
    }
    let mut all = helpers.clone();
    all.push(conn);
    if let Err(left) = faults::wait_all_gone(&all, GONE_WITHIN) {
        panic!(
            "{GONE_WITHIN:?} after its client was SIGKILLed mid-get, processes of connection \
             {conn} are still there: {left:?}\n{}",
            smbd.log_tail(40)
        );
    }
    Some(ClientKill {
        conn,
        helpers,
        in_flight,
        received,
        gone_after: t0.elapsed(),
    })
}

/// The connection process that appeared since `before`, once data reaches `local`.
fn wait_new_connection(smbd: &Smbd, before: &[u32], local: &Path) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let fresh: Vec<u32> = smbd
            .connections()
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        let receiving = fs::metadata(local).is_ok_and(|m| m.len() > 0);
        if fresh.len() == 1 && receiving {
            return fresh[0];
        }
        assert!(
            Instant::now() < deadline,
            "no new connection receiving data within 30 s (new connections {fresh:?})\n{}",
            smbd.log_tail(30)
        );
        thread::sleep(Duration::from_millis(1));
    }
}

// ---------------------------------------------------------------------------------
// 5. smbd killed.

#[test]
fn smbd_killed_helpers_go_within_a_second() {
    let _serial = one_at_a_time();
    run_in_namespace(
        "smbd_killed_helpers_go_within_a_second",
        TEST_LIMIT,
        smbd_killed,
    );
}

const HELPERS_GONE_WITHIN: Duration = Duration::from_secs(1);

fn smbd_killed(ctx: &NsContext) {
    let started = Instant::now();
    let smbd = SmbdBuilder::without_shares(&ctx.workdir)
        .share("plain", &[])
        .share("aio_erratic", &[AIO, INLINE_OFF, ERRATIC])
        .start();
    let big = source_file(&ctx.workdir, "big", BIG_FILE_SIZE, 6);
    fs::copy(&big, smbd.share_path("aio_erratic").join("big.bin")).expect("seed file");
    let check = source_file(&ctx.workdir, "check", CHECK_FILE_SIZE, 7);
    let watch = ProcWatch::start(smbd.pid(), WATCH_EVERY);

    // a) The connection's smbd process is killed during a get.
    let (conn, helpers, mut client) = get_with_helpers(&smbd, &ctx.workdir);
    let busy_a = faults::helpers_in_request(&helpers);
    assert!(faults::send_signal(conn, libc::SIGKILL), "SIGKILL {conn}");
    let conn_case = wait_helpers_gone(&smbd, &helpers, "its connection process was killed");
    let _ = run::wait_deadline(&mut client, Duration::from_secs(30));
    assert!(
        faults::is_live(smbd.pid()),
        "main smbd died with a connection process\n{}",
        smbd.log_tail(40)
    );
    one_shot_put(&smbd, "aio_erratic", &check, "after.bin");
    one_shot_get(&smbd, "aio_erratic", "after.bin", &check, &ctx.workdir);
    check_no_crash(&smbd);

    // b) The main smbd and its process group are killed during a get.
    let (_conn, helpers_b, mut client) = get_with_helpers(&smbd, &ctx.workdir);
    let busy_b = faults::helpers_in_request(&helpers_b);
    let mut killed = smbd.connections();
    killed.extend([smbd.pid(), conn]);
    run::kill_group(smbd.pid());
    let group_case = wait_helpers_gone(&smbd, &helpers_b, "smbd's process group was killed");
    let _ = run::wait_deadline(&mut client, Duration::from_secs(30));
    thread::sleep(Duration::from_millis(200));
    let report = watch.finish();
    println!("watch: {}", report.summary());
    check_zombies_except(&smbd, &report, IDLE_ZOMBIE_LIMIT, &killed);
    let left: Vec<_> = report
        .all_helpers()
        .into_iter()
        .filter_map(faults::proc_of)
        .collect();
    assert!(left.is_empty(), "helpers left behind: {left:?}");
    summary(
        "smbd_killed",
        started,
        "256 MiB gets through the erratic share, then an 8 MiB+3 put + get".to_string(),
        format!(
            "connection smbd SIGKILLed mid-get ({} helpers, {busy_a} in a request, gone in \
             {:.0} ms); main smbd's process group SIGKILLed mid-get ({} helpers, {busy_b} in \
             a request, gone in {:.0} ms); longest helper zombie {:?}",
            helpers.len(),
            conn_case.as_secs_f64() * 1000.0,
            helpers_b.len(),
            group_case.as_secs_f64() * 1000.0,
            report.longest_zombie()
        ),
        2 * CHECK_FILE_SIZE,
    );
}

/// Starts a get of big.bin in the background; returns once data arrives and its
/// connection has several helpers, one inside a request: the connection pid, its
/// helpers, the client.
fn get_with_helpers(smbd: &Smbd, workdir: &Path) -> (u32, Vec<u32>, std::process::Child) {
    let local = workdir.join("killed_get.bin");
    let _ = fs::remove_file(&local);
    let before = smbd.connections();
    let command = format!("get big.bin {}", local.display());
    let mut client = client::spawn(smbd, "aio_erratic", &command);
    let conn = wait_new_connection(smbd, &before, &local);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut helpers = Vec::new();
    let mut busy = 0;
    while (helpers.len() < 2 || busy == 0) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
        helpers = faults::live_helpers(Some(conn))
            .iter()
            .map(|p| p.pid)
            .collect();
        busy = faults::helpers_in_request(&helpers);
    }
    if helpers.len() < 2 || busy == 0 {
        run::kill_group(client.id());
        let _ = client.wait();
        panic!(
            "connection {conn} has {} helper(s), {busy} inside a request, during a 256 MiB \
             get; expected several, one busy\n{}",
            helpers.len(),
            smbd.log_tail(30)
        );
    }
    (conn, helpers, client)
}

/// Every helper in `helpers` must be gone (exited and reaped) within
/// [`HELPERS_GONE_WITHIN`]; returns how long it took.
fn wait_helpers_gone(smbd: &Smbd, helpers: &[u32], what: &str) -> Duration {
    match faults::wait_all_gone(helpers, HELPERS_GONE_WITHIN) {
        Ok(took) => {
            println!(
                "{what}: its {} helpers gone after {:.0} ms",
                helpers.len(),
                took.as_secs_f64() * 1000.0
            );
            took
        }
        Err(left) => panic!(
            "{what}: helpers still there after {HELPERS_GONE_WITHIN:?}: {left:?}\n{}",
            smbd.log_tail(40)
        ),
    }
}

// ---------------------------------------------------------------------------------
// 6. Many clients at once.

#[test]
fn many_clients_at_once() {
    let _serial = one_at_a_time();
    run_in_namespace("many_clients_at_once", TEST_LIMIT, many_clients);
}

const CLIENTS: usize = 16;
const CLIENT_FILE_SIZE: u64 = 64 * MIB;
const MANY_MAX_HELPERS: usize = 4;
/// Bound on each smbd connection process's RSS.
const CONN_RSS_LIMIT_KIB: u64 = 256 * 1024;

fn many_clients(ctx: &NsContext) {
    let started = Instant::now();
    let max = MANY_MAX_HELPERS.to_string();
    let smbd = SmbdBuilder::without_shares(&ctx.workdir)
        // 1 MiB requests: smbclient keeps its 16 MiB window in 16 requests (8 MiB
        // requests would be 2), so each connection wants more than `max helpers`.
        .global("smb2 max read", "1048576")
        .global("smb2 max write", "1048576")
        .share("plain", &[])
        .share(
            "aio4",
            &[AIO, INLINE_OFF, ("aio_fork:max helpers", max.as_str())],
        )
        .start();
    let sources = many_sources(&ctx.workdir);
    let mut waves = BTreeMap::new();
    for share in ["plain", "aio4"] {
        let watch = ProcWatch::start(smbd.pid(), Duration::from_millis(5));
        let t0 = Instant::now();
        let problems = parallel_round_trips(&smbd, share, &sources, &ctx.workdir);
        let took = t0.elapsed();
        smbd.wait_idle(Duration::from_secs(60));
        let report = watch.finish();
        let conn_rss_max = conn_rss_max(&smbd, &report);
        println!(
            "{share}: {CLIENTS} clients x {CLIENT_FILE_SIZE} bytes put + get in {:.1} s; smbd \
             RSS: sum at most {} MiB, main {} MiB, one connection at most {} MiB, helper at \
             most {} MiB; watch: {}",
            took.as_secs_f64(),
            report.rss_sum_max_kib / 1024,
            report.rss_max_kib.get(&smbd.pid()).copied().unwrap_or(0) / 1024,
            conn_rss_max / 1024,
            report.helper_rss_max_kib / 1024,
            report.summary()
        );
        assert!(
            problems.is_empty(),
            "{share}: {} client(s) failed:\n  {}\n{}",
            problems.len(),
            problems.join("\n  "),
            smbd.log_tail(40)
        );
        check_common(&smbd, &report);
        assert!(
            conn_rss_max < CONN_RSS_LIMIT_KIB,
            "{share}: an smbd connection process reached {conn_rss_max} KiB RSS, bound \
             {CONN_RSS_LIMIT_KIB} KiB"
        );
        for pid in smbd
            .share_path(share)
            .read_dir()
            .expect("share dir")
            .flatten()
        {
            let _ = fs::remove_file(pid.path());
        }
        waves.insert(share, (took, report, conn_rss_max));
    }
    let (_, aio_report, aio_rss) = &waves["aio4"];
    let peak = aio_report.max_helpers_per_connection();
    assert!(
        (2..=MANY_MAX_HELPERS).contains(&peak),
        "a connection had {peak} helpers at once; `aio_fork:max helpers = {MANY_MAX_HELPERS}` \
         (and the load should need more than one): {:?}",
        aio_report.max_helpers_by_parent
    );
    let s = stats::total_for(&smbd.stats(), "aio4");
    println!("stats aio4: {s:?}");
    let total = CLIENTS as u64 * CLIENT_FILE_SIZE;
    assert!(
        s.lines == 2 * CLIENTS
            && s.pwrite_bytes >= total
            && s.pread_bytes >= total
            && s.fallbacks == 0
            && s.helper_deaths == 0,
        "aio4: expected {} stats lines accounting every byte through helpers, no fallback, \
         no helper death: {s:?}",
        2 * CLIENTS
    );
    summary(
        "many_clients",
        started,
        format!(
            "{CLIENTS} parallel clients x 64 MiB put + get, per share (plain {:.1} s, aio4 \
             {:.1} s)",
            waves["plain"].0.as_secs_f64(),
            waves["aio4"].0.as_secs_f64()
        ),
        format!(
            "none (load): at most {peak} helpers per connection (max {MANY_MAX_HELPERS}); \
             connection RSS at most {} MiB (plain {} MiB), smbd RSS sum at most {} MiB \
             (plain {} MiB)",
            aio_rss / 1024,
            waves["plain"].2 / 1024,
            aio_report.rss_sum_max_kib / 1024,
            waves["plain"].1.rss_sum_max_kib / 1024
        ),
        2 * 2 * total,
    );
}

/// The per-client source files (distinct seeds), written on a few threads.
fn many_sources(workdir: &Path) -> Vec<PathBuf> {
    let paths: Vec<PathBuf> = (0..CLIENTS)
        .map(|i| workdir.join(format!("client_{i}.bin")))
        .collect();
    thread::scope(|scope| {
        for part in paths.chunks(CLIENTS / 4) {
            scope.spawn(move || {
                for path in part {
                    let seed = 100 + path_index(path);
                    data::write_random_file(path, CLIENT_FILE_SIZE, seed);
                }
            });
        }
    });
    paths
}

fn path_index(path: &Path) -> u64 {
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    name.trim_start_matches("client_").parse().unwrap_or(0)
}

/// Each client puts its file and gets it back (one-shot smbclients, all at once);
/// returns the problems.
fn parallel_round_trips(
    smbd: &Smbd,
    share: &str,
    sources: &[PathBuf],
    workdir: &Path,
) -> Vec<String> {
    thread::scope(|scope| {
        let handles: Vec<_> = sources
            .iter()
            .enumerate()
            .map(|(i, source)| {
                scope.spawn(move || client_round_trip(smbd, share, source, i, workdir))
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().expect("client thread").err())
            .collect()
    })
}

fn client_round_trip(
    smbd: &Smbd,
    share: &str,
    source: &Path,
    i: usize,
    workdir: &Path,
) -> Result<(), String> {
    let remote = format!("c{i}.bin");
    let put = client::put(smbd, share, source, &remote, COMMAND_TIMEOUT);
    if !put.success() || put.combined().contains("NT_STATUS_") {
        return Err(format!("client {i} put:\n{}", put.describe()));
    }
    data::compare_files(source, &smbd.share_path(share).join(&remote))
        .map_err(|e| format!("client {i} put: {e}"))?;
    let local = workdir.join(format!("back_{share}_{i}.bin"));
    let get = client::get(smbd, share, &remote, &local, COMMAND_TIMEOUT);
    if !get.success() || get.combined().contains("NT_STATUS_") {
        return Err(format!("client {i} get:\n{}", get.describe()));
    }
    let same = data::compare_files(source, &local).map_err(|e| format!("client {i} get: {e}"));
    let _ = fs::remove_file(&local);
    same
}

/// The largest RSS of a connection process (not the main smbd) in `report`.
fn conn_rss_max(smbd: &Smbd, report: &WatchReport) -> u64 {
    report
        .rss_max_kib
        .iter()
        .filter(|(pid, _)| **pid != smbd.pid())
        .map(|(_, kib)| *kib)
        .max()
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------
// 7. Backpressure.

#[test]
fn backpressure_overflows_to_the_next_module() {
    let _serial = one_at_a_time();
    run_in_namespace(
        "backpressure_overflows_to_the_next_module",
        TEST_LIMIT,
        backpressure,
    );
}

const BP_FILE_SIZE: u64 = 16 * MIB;
const BP_MAX_QUEUE: u64 = 2;

fn backpressure(ctx: &NsContext) {
    let started = Instant::now();
    let queue = BP_MAX_QUEUE.to_string();
    let smbd = SmbdBuilder::without_shares(&ctx.workdir)
        // Small requests: many in flight at once.
        .global("smb2 max read", "131072")
        .global("smb2 max write", "131072")
        .share("plain", &[])
        .share(
            "aio_bp",
            &[
                AIO,
                INLINE_OFF,
                ERRATIC,
                ("aio_fork:max helpers", "1"),
                ("aio_fork:max queue", queue.as_str()),
            ],
        )
        .start();
    let source = source_file(&ctx.workdir, "src", BP_FILE_SIZE, 8);
    let watch = ProcWatch::start(smbd.pid(), WATCH_EVERY);
    let plain = session_round_trip(&smbd, "plain", &source, &ctx.workdir);
    let bp = session_round_trip(&smbd, "aio_bp", &source, &ctx.workdir);
    smbd.wait_idle(Duration::from_secs(30));
    let report = watch.finish();
    println!(
        "16 MiB put/get in 128 KiB requests: plain {:.2}/{:.2} s, aio_bp {:.2}/{:.2} s; \
         watch: {}",
        plain.0.as_secs_f64(),
        plain.1.as_secs_f64(),
        bp.0.as_secs_f64(),
        bp.1.as_secs_f64(),
        report.summary()
    );
    check_common(&smbd, &report);
    assert!(
        report.max_helpers_per_connection() <= 1,
        "`aio_fork:max helpers = 1` but a connection had {} helpers",
        report.max_helpers_per_connection()
    );
    let s = one_line_stats(&smbd, "aio_bp");
    assert!(
        s.queue_overflows > 0 && s.fallbacks > 0 && s.queue_max <= BP_MAX_QUEUE,
        "with one slow helper and `max queue = {BP_MAX_QUEUE}`, requests must overflow to the \
         next module (queue_overflows>0, fallbacks>0) and the queue stay <= {BP_MAX_QUEUE}: {s:?}"
    );
    summary(
        "backpressure",
        started,
        "16 MiB put + get in 128 KiB requests, one erratic helper, max queue 2".to_string(),
        format!(
            "queue full: {} overflows to the next module (fallbacks={}), queue_max={}, \
             {} requests through the helper",
            s.queue_overflows,
            s.fallbacks,
            s.queue_max,
            s.preads + s.pwrites
        ),
        2 * BP_FILE_SIZE,
    );
}

// ---------------------------------------------------------------------------------
// Shared steps.

/// A random source file in the test's work dir.
fn source_file(workdir: &Path, name: &str, size: u64, seed: u64) -> PathBuf {
    let path = workdir.join(format!("{name}.bin"));
    data::write_random_file(&path, size, seed);
    path
}

/// Put then get of `source` on a new session to `share`, both checked byte for byte;
/// returns the put and get times.
fn session_round_trip(
    smbd: &Smbd,
    share: &str,
    source: &Path,
    workdir: &Path,
) -> (Duration, Duration) {
    let mut session = Session::open(smbd, share, COMMAND_TIMEOUT);
    let times = round_trip_on(smbd, &mut session, share, source, workdir);
    close_session(smbd, session);
    times
}

/// Put then get of `source` on `session`, both checked byte for byte.
fn round_trip_on(
    smbd: &Smbd,
    session: &mut Session,
    share: &str,
    source: &Path,
    workdir: &Path,
) -> (Duration, Duration) {
    let remote = "round_trip.bin";
    let put = session_put(smbd, session, share, source, remote);
    let get = session_get(smbd, session, remote, source, workdir);
    (put, get)
}

/// `put` on `session`, checked on the server's disk; returns its time.
fn session_put(
    smbd: &Smbd,
    session: &mut Session,
    share: &str,
    source: &Path,
    remote: &str,
) -> Duration {
    let t0 = Instant::now();
    let lines = session.run(
        &format!("put {} {remote}", source.display()),
        COMMAND_TIMEOUT,
    );
    let took = t0.elapsed();
    check_lines("put", &lines, smbd);
    let on_server = smbd.share_path(share).join(remote);
    compare_or_panic(source, &on_server, &format!("put to {share}"), smbd);
    took
}

/// `get` on `session`, compared with `expected`; returns its time.
fn session_get(
    smbd: &Smbd,
    session: &mut Session,
    remote: &str,
    expected: &Path,
    workdir: &Path,
) -> Duration {
    let local = workdir.join("session_get.bin");
    let t0 = Instant::now();
    let lines = session.run(
        &format!("get {remote} {}", local.display()),
        COMMAND_TIMEOUT,
    );
    let took = t0.elapsed();
    check_lines("get", &lines, smbd);
    compare_or_panic(expected, &local, &format!("get of {remote}"), smbd);
    let _ = fs::remove_file(&local);
    took
}

fn close_session(smbd: &Smbd, session: Session) {
    let closed = session.close(Duration::from_secs(30));
    assert!(
        closed.success(),
        "smbclient session did not quit cleanly:\n{}\n{}",
        closed.describe(),
        smbd.log_tail(30)
    );
}

/// An smbclient command's output must carry no NT_STATUS error.
fn check_lines(what: &str, lines: &[String], smbd: &Smbd) {
    let errors: Vec<&String> = lines.iter().filter(|l| l.contains("NT_STATUS_")).collect();
    assert!(
        errors.is_empty(),
        "{what}: smbclient reported {errors:?}\nall output: {lines:?}\n{}",
        smbd.log_tail(40)
    );
}

fn compare_or_panic(expected: &Path, actual: &Path, what: &str, smbd: &Smbd) {
    if let Err(e) = data::compare_files(expected, actual) {
        panic!("{what}: {e}\n{}", smbd.log_tail(40));
    }
}

/// One-shot put of `source` as `remote`, checked on the server's disk.
fn one_shot_put(smbd: &Smbd, share: &str, source: &Path, remote: &str) {
    let out = client::put(smbd, share, source, remote, COMMAND_TIMEOUT);
    assert!(
        out.success() && !out.combined().contains("NT_STATUS_"),
        "put to {share} failed:\n{}\n{}",
        out.describe(),
        smbd.log_tail(30)
    );
    let what = format!("put to {share}");
    compare_or_panic(source, &smbd.share_path(share).join(remote), &what, smbd);
}

/// One-shot get of `remote`, compared with `expected`; returns its time.
fn one_shot_get(
    smbd: &Smbd,
    share: &str,
    remote: &str,
    expected: &Path,
    workdir: &Path,
) -> Duration {
    let local = workdir.join(format!("one_shot_{share}.bin"));
    let out = client::get(smbd, share, remote, &local, COMMAND_TIMEOUT);
    assert!(
        out.success() && !out.combined().contains("NT_STATUS_"),
        "get from {share} failed:\n{}\n{}",
        out.describe(),
        smbd.log_tail(30)
    );
    compare_or_panic(expected, &local, &format!("get from {share}"), smbd);
    let _ = fs::remove_file(&local);
    out.elapsed
}

/// After every test: smbd's log shows no crash, no helper stayed a zombie for
/// [`ZOMBIE_LIMIT`], the main smbd is alive.
fn check_common(smbd: &Smbd, report: &WatchReport) {
    check_no_crash(smbd);
    check_zombies_except(smbd, report, ZOMBIE_LIMIT, &[]);
    assert!(
        faults::is_live(smbd.pid()),
        "the main smbd is gone\n{}",
        smbd.log_tail(40)
    );
}

/// smbd's log and console show no crash, internal error or caught panic.
fn check_no_crash(smbd: &Smbd) {
    let console = fs::read(smbd.dir.join("smbd.console")).unwrap_or_default();
    let text = format!("{}\n{}", smbd.log_text(), String::from_utf8_lossy(&console));
    let crashes = faults::crash_lines(&text);
    assert!(
        crashes.is_empty(),
        "smbd's log shows a crash or internal error: {crashes:?}\n{}",
        smbd.log_tail(60)
    );
}

/// No helper may stay a zombie for `limit`, except those whose parent the test killed
/// (they wait for their parent's exit, then for init); the failure quotes what smbd's
/// log says about each one.
fn check_zombies_except(smbd: &Smbd, report: &WatchReport, limit: Duration, killed: &[u32]) {
    let zombies: Vec<_> = report
        .zombies_longer_than(limit)
        .into_iter()
        .filter(|(_, z)| !killed.contains(&z.parent))
        .collect();
    if zombies.is_empty() {
        return;
    }
    let log = smbd.log_text();
    let mut about = String::new();
    for (pid, _) in &zombies {
        let needle = format!("pid={pid} ");
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&needle)).collect();
        about.push_str(&format!("log lines with {needle:?}: {lines:?}\n"));
    }
    panic!(
        "helpers stayed zombies (exited, unreaped) for {limit:?} or more: {zombies:?}\n\
         orphans reaped by init: {:?}\n{about}{}",
        report.orphans_reaped,
        smbd.log_tail(40)
    );
}

/// The single tree-disconnect stats line of `share`.
fn one_line_stats(smbd: &Smbd, share: &str) -> Stats {
    let s = stats::total_for(&smbd.stats(), share);
    println!("stats {share}: {s:?}");
    assert_eq!(
        s.lines,
        1,
        "one tree connect to {share}, one stats line expected: {s:?}\n{}",
        smbd.log_tail(30)
    );
    s
}

/// The closing line of a test.
fn summary(test: &str, started: Instant, load: String, faults: String, verified: u64) {
    println!(
        "FAULTS SUMMARY {test}: load held: {load}; faults injected: {faults}; bytes verified: \
         {verified} ({} MiB); runtime {:.1} s",
        verified / MIB,
        started.elapsed().as_secs_f64()
    );
}
