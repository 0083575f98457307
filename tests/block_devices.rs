//! Real disks under the shares, in a user-mode Linux guest (its kernel has the
//! device-mapper targets and the SMB client the host's may lack), driven by the Linux
//! kernel's SMB client and by smbclient.
//!
//! - `a_hung_disk_never_hangs_the_share`: disk A (a device-mapper device) holds a plain
//!   share and an aio share (`request timeout = 3`, reads through helpers); disk B an aio
//!   share on the same SMB session as A's. With files held open by the kernel client, A is
//!   suspended (`dmsetup suspend --noflush`: every I/O waits, uninterruptibly, as on a dead
//!   disk or a lost SAN path) while the client reads, writes and fsyncs, then closes. Then A
//!   answers again; then it answers only after 10 s (dm-delay, past the timeout) and smbd is
//!   shut down. The aio share must answer each request with an error within the timeout +
//!   4 s, go on serving disk B on the same connection and other clients, finish tree
//!   disconnects, logoffs, client disconnects and smbd's shutdown within 5 s, never have
//!   a thread of its connection processes in uninterruptible sleep (sampled every 50 ms),
//!   serve again once A answers, and lose no acknowledged data. The plain share goes
//!   through the same steps; what it does is printed beside, not judged.
//!
//! - `kernel_client_data_as_on_a_plain_share`: a plain and an aio share on one ext4 disk,
//!   each mounted by the kernel's SMB client twice (SMB 3.1.1 with `cache=none`, SMB 3.0
//!   with `cache=strict`; 8 MiB rsize/wsize). On each mount the same seeded workloads
//!   (`tests/clients/cifs_workload.py`: sequential and random writes and reads, O_DIRECT on
//!   cache=none, writes through a mapping on cache=strict, parallel writers and readers,
//!   truncate/extend/sparse files, fsync, a large copy back and forth) check every byte
//!   they read back, and fio verifies its own writes; then, with the guest's caches
//!   dropped, every file is read back through the aio share and compared with the disk,
//!   and the two shares' files must be equal. The stats line must show helpers served reads
//!   and writes.
//!
//! - `a_failing_disk_fails_as_on_a_plain_share`: bad sectors (dm-dust) in a file of each
//!   share: reading it gives the client the same error on the aio share as on the plain
//!   one (smbclient and the kernel client), the disk sees no more reads for it than for the
//!   plain share's (no retry storm), and other files keep working.
//! - `durable_writes_survive_a_power_cut`: what a client was told is durable — written,
//!   then flushed (SMB2 FLUSH), or written to a `sync always` share — is on the disk when
//!   the guest's power is cut right after (sysrq o: no sync, page cache lost), on both
//!   shares. Data written without a flush just before is lost at least once: the cut is
//!   real.
//!
//! Every case prints `DISK SUMMARY` lines.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use common::client::{self, Session};
use common::data;
use common::guest::{self, DSample, DSampler, Dm};
use common::namespace::{run_in_uml, run_in_uml_until_cut, NsContext, CUT_MARK};
use common::procs;
use common::python;
use common::run;
use common::smbd::{Smbd, SmbdBuilder};
use common::stats;

const MIB: u64 = 1 << 20;
/// `aio_fork:request timeout` of the aio share on disk A, in seconds.
const TIMEOUT: f64 = 3.0;
/// Within this an aio request on a hung disk must be answered. The slack above the timeout
/// is for the guest itself: on a loaded machine every step of it (disk B's copy, another
/// client's put) ran 3 to 6 times slower than here and an answer took 5.9 s. It stays
/// below `DELAY_MS`, so a request that waited for the delayed disk fails the check.
const ERROR_BOUND: f64 = TIMEOUT + 4.0;
/// How long the delayed disk takes to answer each I/O.
const DELAY_MS: u64 = 10_000;
/// Within this disconnects and exits must complete while the disk hangs.
const EXIT_BOUND: Duration = Duration::from_secs(5);
const DISK_OPS: &str = "tests/clients/disk_ops.py";
/// Where disk_ops.py reads and writes (see there).
const READ_AT: u64 = 8 * MIB;
const WRITE_AT: u64 = MIB;

/// Runs test `name`'s `body` in a guest with `disks` (MiB each), within `limit` seconds.
fn in_guest(name: &str, limit: u64, disks: &[u64], body: fn(&NsContext)) {
    // One guest at a time: the hung-disk case times bounds of a few seconds.
    let _one = run::one_at_a_time();
    run_in_uml(
        name,
        Duration::from_secs(limit),
        disks,
        guest::MODULES,
        body,
    );
}

#[test]
fn kernel_client_data_as_on_a_plain_share() {
    in_guest(
        "kernel_client_data_as_on_a_plain_share",
        600,
        &[768],
        kernel_client_data,
    );
}

#[test]
fn a_failing_disk_fails_as_on_a_plain_share() {
    in_guest(
        "a_failing_disk_fails_as_on_a_plain_share",
        300,
        &[256],
        failing_disk,
    );
}

#[test]
fn durable_writes_survive_a_power_cut() {
    // One guest at a time: the hung-disk case times bounds of a few seconds.
    let _one = run::one_at_a_time();
    run_in_uml_until_cut(
        "durable_writes_survive_a_power_cut",
        Duration::from_secs(300),
        &[256],
        guest::MODULES,
        power_cut,
        after_the_cut,
    );
}

#[test]
fn a_hung_disk_never_hangs_the_share() {
    in_guest(
        "a_hung_disk_never_hangs_the_share",
        480,
        &[256, 128],
        hung_disk,
    );
}

/// Disk A under a device-mapper device, ext4 on both disks, the shares on them, files.
struct Rig {
    smbd: Smbd,
    disk_a: Dm,
    /// Per share, the files as written (for comparisons).
    sources: PathBuf,
    mounts: PathBuf,
    sectors_a: u64,
}

fn rig(ctx: &NsContext) -> Rig {
    let w = &ctx.workdir;
    let sectors_a = guest::sectors(&guest::disk(0));
    let disk_a = Dm::create("disk_a", &linear(sectors_a));
    guest::ext4(&disk_a.path(), &w.join("disk_a"));
    guest::ext4(&guest::disk(1), &w.join("disk_b"));
    let smbd = SmbdBuilder::without_shares(&w.join("smbd"))
        .share("plain", &[])
        .share(
            "aio",
            &[
                ("vfs objects", "aio_fork"),
                ("aio_fork:request timeout", "3"),
                ("aio_fork:inline cached reads", "no"),
            ],
        )
        .share("aio_b", &[("vfs objects", "aio_fork")])
        .start();
    for (share, disk) in [("plain", "disk_a"), ("aio", "disk_a"), ("aio_b", "disk_b")] {
        guest::bind(&w.join(disk).join(share), &smbd.share_path(share));
    }
    let sources = w.join("sources");
    fs::create_dir_all(&sources).expect("sources dir");
    data::write_random_file(&sources.join("read.bin"), 16 * MIB, 1);
    data::write_random_file(&sources.join("write.bin"), 4 * MIB, 2);
    for share in ["plain", "aio"] {
        for file in ["read.bin", "write.bin"] {
            fs::copy(sources.join(file), smbd.share_path(share).join(file)).expect("seed");
        }
    }
    let mounts = w.join("mnt");
    // aio and aio_b share one SMB session (one smbd process); plain has its own.
    let opts = "vers=3.1.1,cache=none,rsize=8388608,wsize=8388608";
    guest::mount_cifs(&smbd, "aio", &mounts.join("aio"), opts);
    guest::mount_cifs(&smbd, "aio_b", &mounts.join("aio_b"), opts);
    guest::mount_cifs(
        &smbd,
        "plain",
        &mounts.join("plain"),
        &format!("{opts},nosharesock"),
    );
    Rig {
        smbd,
        disk_a,
        sources,
        mounts,
        sectors_a,
    }
}

fn linear(sectors: u64) -> String {
    format!("0 {sectors} linear {} 0", guest::disk(0).display())
}

/// disk_ops.py on one mounted share: its lines as they come, with their arrival time.
struct OpsClient {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<(Instant, String)>,
    seen: Vec<String>,
}

impl OpsClient {
    fn start(dir: &Path) -> OpsClient {
        let mut cmd = Command::new(python::PYTHON);
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(DISK_OPS))
            .arg(dir)
            .arg(READ_AT.to_string())
            .arg(WRITE_AT.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = run::spawn(&mut cmd);
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let mut client = OpsClient {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        };
        assert!(
            client.wait_for("ready", Duration::from_secs(60)),
            "disk_ops.py on {} did not get ready: {:?}",
            dir.display(),
            client.seen
        );
        client
    }

    fn go(&mut self) {
        writeln!(self.stdin, "go")
            .and_then(|_| self.stdin.flush())
            .expect("go");
    }

    /// Takes lines until one equals `last`; whether it came within `timeout`.
    fn wait_for(&mut self, last: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((_, line)) => {
                    let done = line == last;
                    self.seen.push(line);
                    if done {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    /// Each op's fields (`status`, `secs`, `end`), by op name.
    fn ops(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.seen
            .iter()
            .filter_map(|l| {
                let fields: BTreeMap<String, String> = l
                    .split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                Some((fields.get("op")?.clone(), fields))
            })
            .collect()
    }

    fn summary(&self) -> String {
        let ops = self.ops();
        ["read", "write", "fsync", "close_read", "close_write"]
            .iter()
            .map(|op| match ops.get(*op) {
                Some(f) => format!("{op}={} {}s", f["status"], f["secs"]),
                None => format!("{op}=waiting"),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hung_disk(ctx: &NsContext) {
    python::check();
    let rig = rig(ctx);
    let smbd = &rig.smbd;
    let mut failures: Vec<String> = Vec::new();
    let pids = guest::share_pids(smbd);
    let pid_of = |share: &str| pids.iter().find(|(s, _)| s == share).map(|(_, p)| *p);
    let (aio_pid, plain_pid) = (pid_of("aio").expect("aio"), pid_of("plain").expect("plain"));
    assert_eq!(
        pid_of("aio_b"),
        Some(aio_pid),
        "the kernel client should serve aio and aio_b on one session: {pids:?}"
    );
    let mut aio_processes = vec![aio_pid];

    // a. The disk stops answering while the kernel client reads, writes, fsyncs, closes.
    let mut aio = OpsClient::start(&rig.mounts.join("aio"));
    let mut plain = OpsClient::start(&rig.mounts.join("plain"));
    let sessions: Vec<Session> = (0..3)
        .map(|_| Session::open(smbd, "aio", Duration::from_secs(30)))
        .collect();
    aio_processes.extend(sessions.iter().map(|s| s.server_pid));
    guest::drop_caches();
    let sampler = DSampler::start();
    failures.extend(hang("suspend", &rig, &mut aio, &mut plain, || {
        rig.disk_a.suspend()
    }));
    // A tree disconnect, a logoff and a killed client, each after a read that hung.
    failures.extend(disconnects_while_hung(sessions));

    // b. A answers again.
    rig.disk_a.resume();
    let resumed = Instant::now();
    let plain_done = plain.wait_for("done", Duration::from_secs(60));
    println!(
        "DISK SUMMARY suspend share=plain done={plain_done} {} (answered {:.1} s after the \
         resume)",
        plain.summary(),
        resumed.elapsed().as_secs_f64()
    );
    let helpers_left =
        run::wait_until(Duration::from_secs(15), || procs::helpers_in_d().is_empty());
    let serves_again = reads_back(&rig, Duration::from_secs(20));
    println!(
        "DISK SUMMARY resume stuck_helpers_exited={helpers_left} aio_serves_again_after={}",
        serves_again.map_or("never".to_string(), |d| format!("{:.2} s", d.as_secs_f64()))
    );
    if !helpers_left {
        failures.push(format!(
            "helpers still in D 15 s after the resume: {:?}",
            procs::helpers_in_d()
        ));
    }
    if serves_again.is_none() {
        failures
            .push("the aio share did not serve read.bin again within 20 s of the resume".into());
    }
    for share in ["plain", "aio"] {
        failures.extend(data_intact(&rig, share));
    }
    aio.kill();
    plain.kill();

    // c. A answers only after `DELAY_MS`, past the request timeout; smbd is shut down
    // meanwhile.
    failures.extend(slow_disk_and_shutdown(&rig, &mut aio_processes));

    let (samples, rounds) = sampler.finish();
    failures.extend(judge_samples(&samples, rounds, &aio_processes, plain_pid));
    failures.extend(judge_counters(smbd));
    assert_none(&failures, smbd, 60);
}

/// Makes disk A hang (`stop`) and has both clients do their I/O on it at once; then judges
/// the aio client's answers, and disk B's service while A still hangs.
fn hang(
    phase: &str,
    rig: &Rig,
    aio: &mut OpsClient,
    plain: &mut OpsClient,
    stop: impl FnOnce(),
) -> Vec<String> {
    let mut failures = Vec::new();
    stop();
    let hung_at = Instant::now();
    aio.go();
    plain.go();
    let aio_done = aio.wait_for("done", Duration::from_secs(30));
    println!(
        "DISK SUMMARY {phase} share=aio done={aio_done} {} (after {:.1} s)",
        aio.summary(),
        hung_at.elapsed().as_secs_f64()
    );
    judge_ops(phase, aio, aio_done, &mut failures);
    // Disk B on the same connection, and another client, while A hangs.
    failures.extend(disk_b_serves(rig, phase));
    failures
}

/// The aio client's ops on the hung disk: each answered within the bound; the read of
/// uncached data and the fsync (nothing can be made durable) with an error; a write may
/// succeed (into the page cache). Closes within the exit bound.
fn judge_ops(phase: &str, client: &OpsClient, done: bool, failures: &mut Vec<String>) {
    if !done {
        failures.push(format!(
            "{phase}: the aio client did not finish: {}",
            client.summary()
        ));
        return;
    }
    let ops = client.ops();
    for (op, must_fail) in [("read", true), ("write", false), ("fsync", true)] {
        let f = &ops[op];
        let secs: f64 = f["secs"].parse().unwrap_or(f64::INFINITY);
        if (must_fail && f["status"] == "ok") || secs > ERROR_BOUND {
            failures.push(format!(
                "{phase}: aio {op} answered {} after {secs} s; want {} within {ERROR_BOUND} s",
                f["status"],
                if must_fail { "an error" } else { "an answer" }
            ));
        }
    }
    for op in ["close_read", "close_write"] {
        let secs: f64 = ops[op]["secs"].parse().unwrap_or(f64::INFINITY);
        if secs > EXIT_BOUND.as_secs_f64() {
            failures.push(format!("{phase}: aio {op} took {secs} s"));
        }
    }
}

/// While A hangs: a file written and read back through disk B's share on the hung
/// connection, and a put and get by another client.
fn disk_b_serves(rig: &Rig, phase: &str) -> Vec<String> {
    let mut failures = Vec::new();
    let side = rig.sources.join("side.bin");
    data::write_random_file(&side, 2 * MIB, 7);
    let start = Instant::now();
    let copy = run::run(
        Command::new("sh").arg("-c").arg(format!(
            "cp {src} {dst} && sync {dst} && cmp {src} {dst}",
            src = side.display(),
            dst = rig.mounts.join("aio_b").join("side.bin").display()
        )),
        Duration::from_secs(20),
    );
    let same_conn = start.elapsed().as_secs_f64();
    let back = rig.sources.join("side.back");
    let start = Instant::now();
    let put = client::smbclient(
        &rig.smbd,
        "aio_b",
        &format!(
            "put {} other.bin; get other.bin {}",
            side.display(),
            back.display()
        ),
        Duration::from_secs(20),
    );
    let other = start.elapsed().as_secs_f64();
    let other_ok = put.success() && data::compare_files(&side, &back).is_ok();
    println!(
        "DISK SUMMARY {phase} disk_b same_connection={} {same_conn:.2} s other_client={} \
         {other:.2} s",
        if copy.success() { "ok" } else { "FAILED" },
        if other_ok { "ok" } else { "FAILED" },
    );
    if !copy.success() {
        failures.push(format!(
            "{phase}: disk B on the hung connection:\n{}",
            copy.describe()
        ));
    }
    if !other_ok {
        failures.push(format!(
            "{phase}: disk B from another client:\n{}",
            put.describe()
        ));
    }
    failures
}

/// Three smbclient sessions on the aio share each start a read of read.bin (which hangs
/// until the timeout); then one disconnects its tree, one logs off, and one client is
/// killed while its read is still waiting. Each must be done within 5 s.
fn disconnects_while_hung(sessions: Vec<Session>) -> Vec<String> {
    let mut failures = Vec::new();
    let mut handles = Vec::new();
    for (mut session, action) in sessions.into_iter().zip(["tdis", "logoff", "kill"]) {
        handles.push(thread::spawn(move || {
            let pid = session.server_pid;
            if action == "kill" {
                // Start a read that hangs, then end the client under it.
                let client = session.client_pid();
                let reading = thread::spawn(move || {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        session.run("get read.bin /dev/null", Duration::from_secs(8))
                    }));
                });
                thread::sleep(Duration::from_secs(1));
                let start = Instant::now();
                run::signal(client, libc::SIGKILL);
                let gone = run::wait_until(EXIT_BOUND * 2, || guest::gone(pid));
                let took = start.elapsed();
                let _ = reading.join();
                return (
                    action,
                    "(killed while reading)".to_string(),
                    gone,
                    took,
                    pid,
                );
            }
            let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                session.run("get read.bin /dev/null", Duration::from_secs(15))
            }));
            let Ok(got) = got else {
                let never = "(no answer within 15 s)".to_string();
                return (action, never, false, Duration::from_secs(15), pid);
            };
            let got = got.join(" ");
            let start = Instant::now();
            let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                session.run(action, EXIT_BOUND * 3)
            }))
            .is_ok();
            (action, got, done, start.elapsed(), pid)
        }));
    }
    for h in handles {
        let (action, got, ok, took, pid) = h.join().expect("session thread");
        println!(
            "DISK SUMMARY suspend share=aio {action}: {:.2} s (process {pid}) after a read that \
             got: {}",
            took.as_secs_f64(),
            got.trim()
        );
        if took > EXIT_BOUND || !ok {
            failures.push(format!(
                "{action} on the hung aio share took {took:.2?} (done={ok})"
            ));
        }
    }
    failures
}

/// Reads read.bin back through the aio mount until it succeeds; how long that took.
fn reads_back(rig: &Rig, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let ok = run::wait_until(within, || {
        run::run(
            Command::new("cmp")
                .arg(rig.sources.join("read.bin"))
                .arg(rig.mounts.join("aio").join("read.bin")),
            Duration::from_secs(10),
        )
        .success()
    });
    ok.then(|| start.elapsed())
}

/// On disk, after the disk answered again: read.bin as written; write.bin as written,
/// with its first 64 KiB the client's and each 4 KiB of the hung write either the old or
/// the new bytes (a write answered with an error may still have landed).
fn data_intact(rig: &Rig, share: &str) -> Vec<String> {
    let mut failures = Vec::new();
    let dir = rig.smbd.share_path(share);
    if let Err(e) = data::compare_files(&rig.sources.join("read.bin"), &dir.join("read.bin")) {
        failures.push(format!("{share}: read.bin changed: {e}"));
    }
    let old = fs::read(rig.sources.join("write.bin")).expect("source");
    let now = fs::read(dir.join("write.bin")).expect("write.bin");
    let first = pattern(1, 64 * 1024);
    let new = pattern(2, MIB as usize);
    let (w0, w1) = (WRITE_AT as usize, (WRITE_AT + MIB) as usize);
    let mut landed = 0;
    let ok = now.len() == old.len()
        && now[..first.len()] == first[..]
        && now[first.len()..w0] == old[first.len()..w0]
        && now[w1..] == old[w1..]
        && now[w0..w1].chunks(4096).enumerate().all(|(i, c)| {
            let at = i * 4096;
            landed += usize::from(c == &new[at..at + c.len()]);
            c == &new[at..at + c.len()] || c == &old[w0 + at..w0 + at + c.len()]
        });
    println!("DISK SUMMARY data share={share} intact={ok} hung_write_blocks_landed={landed}/256");
    if !ok {
        failures.push(format!("{share}: write.bin holds bytes nobody wrote"));
    }
    failures
}

/// disk_ops.py's `pattern`.
fn pattern(tag: u64, size: usize) -> Vec<u8> {
    (0..size as u64)
        .step_by(8)
        .flat_map(|i| ((tag << 40) | i).to_le_bytes())
        .collect()
}

/// Disk A delayed by `DELAY_MS` per I/O: the kernel client's requests on the aio share fail
/// within the bound; then smbd is shut down with a read of the aio share outstanding, and
/// every aio connection process must end within 5 s.
fn slow_disk_and_shutdown(rig: &Rig, aio_processes: &mut Vec<u32>) -> Vec<String> {
    let mut failures = Vec::new();
    let smbd = &rig.smbd;
    let mut aio = OpsClient::start(&rig.mounts.join("aio"));
    let mut plain = OpsClient::start(&rig.mounts.join("plain"));
    let mut session = Session::open(smbd, "aio", Duration::from_secs(30));
    aio_processes.push(session.server_pid);
    guest::drop_caches();
    let delay = format!(
        "0 {} delay {} 0 {DELAY_MS}",
        rig.sectors_a,
        guest::disk(0).display()
    );
    failures.extend(hang("delay", rig, &mut aio, &mut plain, || {
        rig.disk_a.replace(&delay)
    }));

    let pid = session.server_pid;
    let reading = thread::spawn(move || {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            session.run("get write.bin /dev/null", Duration::from_secs(10))
        }));
    });
    thread::sleep(Duration::from_millis(500));
    let live: Vec<u32> = aio_processes
        .iter()
        .copied()
        .filter(|&p| !guest::gone(p))
        .collect();
    let start = Instant::now();
    run::signal(smbd.pid(), libc::SIGTERM);
    let all_gone = run::wait_until(EXIT_BOUND, || live.iter().all(|&p| guest::gone(p)));
    let took = start.elapsed();
    let plain_pids: Vec<u32> = smbd.connections();
    println!(
        "DISK SUMMARY delay smbd_shutdown aio_processes={live:?} gone={all_gone} after \
         {:.2} s; smbd processes left: {plain_pids:?}",
        took.as_secs_f64()
    );
    if !all_gone {
        failures.push(format!(
            "smbd's shutdown with the disk slow: aio processes {live:?} not all gone within 5 s"
        ));
    }
    let _ = reading.join();
    let plain_done = plain.wait_for("done", Duration::from_secs(80));
    println!(
        "DISK SUMMARY delay share=plain done={plain_done} {}",
        plain.summary()
    );
    rig.disk_a.replace(&linear(rig.sectors_a));
    let _ = pid;
    aio.kill();
    plain.kill();
    failures
}

/// The longest a thread of an aio connection process may be seen in uninterruptible
/// sleep. A wait for the hung disk lasts until the disk answers (seconds here); brief
/// ones come from elsewhere: smbd's writes to its log (the inode lock, contended by its
/// processes), `posix_spawn` waiting for the zygote's exec.
const LONGEST_D: f64 = 0.3;

/// No thread of an aio connection process waited uninterruptibly for longer than
/// `LONGEST_D`; every sample seen is listed, and the plain process's beside.
fn judge_samples(samples: &[DSample], rounds: u64, aio: &[u32], plain: u32) -> Vec<String> {
    // Runs of consecutive samples of one thread: (first, last).
    let mut episodes: Vec<(&DSample, &DSample)> = Vec::new();
    let mut aio_d: Vec<&DSample> = samples.iter().filter(|s| aio.contains(&s.pid)).collect();
    aio_d.sort_by(|a, b| (a.tid, a.at).partial_cmp(&(b.tid, b.at)).expect("times"));
    for s in aio_d {
        match episodes.last_mut() {
            Some((_, last)) if last.tid == s.tid && s.at - last.at < 0.25 => *last = s,
            _ => episodes.push((s, s)),
        }
    }
    let mut plain_waits: BTreeMap<&str, usize> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.pid == plain) {
        *plain_waits.entry(s.wchan.as_str()).or_default() += 1;
    }
    println!(
        "DISK SUMMARY d_state rounds={rounds} (every 50 ms) aio_processes={aio:?} \
         waits_in_d={} {:?} | plain_process={plain} samples_in_d={} {plain_waits:?}",
        episodes.len(),
        episodes
            .iter()
            .map(|(f, l)| format!("{:.2}s:{}", l.at - f.at, top_frames(&f.stack)))
            .collect::<Vec<_>>(),
        plain_waits.values().sum::<usize>()
    );
    episodes
        .iter()
        .filter(|(first, last)| last.at - first.at >= LONGEST_D)
        .map(|(first, last)| {
            format!(
                "aio connection thread {} in D for {:.2} s from {:.2} s: {}",
                first.tid,
                last.at - first.at,
                first.at,
                first.stack
            )
        })
        .collect()
}

/// The innermost frames of a stack that say what it waits for.
fn top_frames(stack: &str) -> String {
    stack
        .split_whitespace()
        .filter(|f| !f.starts_with("__switch_to") && !f.contains("schedule"))
        .take(3)
        .collect::<Vec<_>>()
        .join("<")
}

/// The module's counters tell what happened on disk A's aio share.
fn judge_counters(smbd: &Smbd) -> Vec<String> {
    let all = stats::at_disconnect(&smbd.all_stats());
    let s = stats::total_for(&all, "aio");
    let line = format!(
        "hung={} timeouts={} stuck_max={} retries={} fallbacks={} device_hangs={} probes={} \
         hung_refusals={} closes_handed={}",
        s.hung,
        s.other("timeouts"),
        s.other("stuck_max"),
        s.retries,
        s.fallbacks,
        s.other("device_hangs"),
        s.other("probes"),
        s.other("hung_refusals"),
        s.other("closes_handed"),
    );
    println!("DISK SUMMARY counters share=aio lines={} {line}", s.lines);
    let mut failures = Vec::new();
    if s.other("device_hangs") == 0 || s.other("probes") == 0 || s.hung < 2 {
        failures.push(format!("aio counters do not show the hangs: {line}"));
    }
    if s.fallbacks > 0 {
        let log = smbd.log_text();
        let why: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("next module") || l.contains("helper died"))
            .map(str::trim)
            .collect();
        failures.push(format!(
            "aio requests went to the next module: {line}; the module said: {why:?}"
        ));
    }
    failures
}

const WORKLOAD: &str = "tests/clients/cifs_workload.py";
/// The kernel client's mounts of each share: a label, its options, the `cache=` mode.
const CLIENT_MOUNTS: [(&str, &str, &str); 2] = [
    (
        "smb311_none",
        "vers=3.1.1,cache=none,rsize=8388608,wsize=8388608",
        "none",
    ),
    (
        "smb30_strict",
        "vers=3.0,cache=strict,rsize=8388608,wsize=8388608",
        "strict",
    ),
];

fn kernel_client_data(ctx: &NsContext) {
    let w = &ctx.workdir;
    guest::ext4(&guest::disk(0), &w.join("disk"));
    let smbd = SmbdBuilder::without_shares(&w.join("smbd"))
        .share("plain", &[])
        .share("aio", &[("vfs objects", "aio_fork")])
        .start();
    for share in ["plain", "aio"] {
        guest::bind(&w.join("disk").join(share), &smbd.share_path(share));
    }
    let mut failures = Vec::new();
    for (seed, (label, options, cache)) in CLIENT_MOUNTS.iter().enumerate() {
        for share in ["plain", "aio"] {
            let mount = w.join("mnt").join(format!("{share}.{label}"));
            guest::mount_cifs(&smbd, share, &mount, options);
            let dir = mount.join(label);
            fs::create_dir_all(&dir).expect("workload dir");
            let start = Instant::now();
            let out = run::run(
                python::command(&Path::new(env!("CARGO_MANIFEST_DIR")).join(WORKLOAD))
                    .arg(&dir)
                    .arg((seed + 1).to_string())
                    .arg(cache),
                Duration::from_secs(240),
            );
            let fio = fio_verify(&dir, cache);
            println!(
                "DISK SUMMARY kernel_client share={share} mount={label} ({options}) {:.1} s: \
                 {} | fio verify: {}",
                start.elapsed().as_secs_f64(),
                out.stdout.split_whitespace().collect::<Vec<_>>().join(" "),
                if fio.success() { "ok" } else { "FAILED" }
            );
            if !out.success() {
                failures.push(format!(
                    "{share} {label}: workloads failed:\n{}",
                    out.describe()
                ));
            }
            if !fio.success() {
                failures.push(format!(
                    "{share} {label}: fio --verify failed:\n{}",
                    fio.describe()
                ));
            }
        }
    }
    // Cold: every file read back through the aio share's cache=none mount, and each
    // share's files equal to the other's.
    guest::drop_caches();
    let aio_mount = w.join("mnt").join(format!("aio.{}", CLIENT_MOUNTS[0].0));
    let mut compared = 0;
    for (label, _, _) in CLIENT_MOUNTS {
        let files = fs::read_dir(smbd.share_path("aio").join(label)).expect("aio files");
        for file in files.filter_map(Result::ok).filter(|f| f.path().is_file()) {
            let name = file.file_name();
            let on_disk = file.path();
            let through_share = aio_mount.join(label).join(&name);
            if let Err(e) = data::compare_files(&on_disk, &through_share) {
                failures.push(format!("cold read of aio {label}/{name:?}: {e}"));
            }
            let plain = smbd.share_path("plain").join(label).join(&name);
            if let Err(e) = data::compare_files(&plain, &on_disk) {
                failures.push(format!(
                    "{label}/{name:?} differs between plain and aio: {e}"
                ));
            }
            compared += 1;
        }
    }
    for (label, _, _) in CLIENT_MOUNTS {
        for share in ["plain", "aio"] {
            let _ = guest::unmount(
                &w.join("mnt").join(format!("{share}.{label}")),
                Duration::from_secs(30),
            );
        }
    }
    smbd.wait_idle(Duration::from_secs(30));
    let aio = stats::total_for(&stats::at_disconnect(&smbd.all_stats()), "aio");
    let helper_reads = aio.preads.saturating_sub(aio.other("inline_preads"));
    let helper_writes = aio.pwrites.saturating_sub(aio.other("inline_pwrites"));
    println!(
        "DISK SUMMARY kernel_client files_compared={compared} aio: preads={} (through helpers \
         {helper_reads}) pwrites={} (through helpers {helper_writes}) fsyncs={} fallbacks={}",
        aio.preads, aio.pwrites, aio.fsyncs, aio.fallbacks
    );
    if compared < 12 {
        failures.push(format!("only {compared} files compared"));
    }
    if helper_reads == 0 || helper_writes == 0 {
        failures.push(format!(
            "helpers served reads {helper_reads} and writes {helper_writes}"
        ));
    }
    assert_none(&failures, &smbd, 40);
}

/// fio writes files in `dir/fio` at random, then reads and checks them (crc32c).
fn fio_verify(dir: &Path, cache: &str) -> run::Output {
    let fio_dir = dir.join("fio");
    fs::create_dir_all(&fio_dir).expect("fio dir");
    let direct = if cache == "none" { "1" } else { "0" };
    let out = run::run(
        common::tools::command("fio")
            .args([
                "--name=verify",
                "--rw=randwrite",
                "--bsrange=4k-1m",
                "--size=12m",
                "--numjobs=2",
                "--ioengine=psync",
                "--verify=crc32c",
                "--do_verify=1",
                "--verify_fatal=1",
                "--fsync_on_close=1",
                "--minimal",
            ])
            .arg(format!("--direct={direct}"))
            .arg(format!("--directory={}", fio_dir.display())),
        Duration::from_secs(240),
    );
    let _ = fs::remove_dir_all(&fio_dir);
    out
}

fn failing_disk(ctx: &NsContext) {
    let w = &ctx.workdir;
    let sectors = guest::sectors(&guest::disk(0));
    let dust = Dm::create(
        "dust",
        &format!("0 {sectors} dust {} 0 512", guest::disk(0).display()),
    );
    guest::ext4(&dust.path(), &w.join("disk"));
    let smbd = SmbdBuilder::without_shares(&w.join("smbd"))
        .share("plain", &[])
        .share("aio", &[("vfs objects", "aio_fork")])
        .start();
    let shares = ["plain", "aio"];
    let good = w.join("good.bin");
    data::write_random_file(&good, 2 * MIB, 3);
    for share in shares {
        guest::bind(&w.join("disk").join(share), &smbd.share_path(share));
        let dir = smbd.share_path(share);
        data::write_random_file(&dir.join("bad.bin"), 2 * MIB, 4);
        fs::copy(&good, dir.join("good.bin")).expect("good file");
    }
    guest::drop_caches();
    // Bad sectors 1 MiB into each share's bad.bin.
    for share in shares {
        let extents = guest::file_sectors(&smbd.share_path(share).join("bad.bin"));
        let (first, _) = *extents.first().expect("bad.bin has blocks");
        for s in 0..8 {
            dust.message(&["addbadblock", &(first + 2048 + s).to_string()]);
        }
    }
    dust.message(&["enable"]);
    let mount = w.join("mnt");
    let mut failures = Vec::new();
    let mut outcome = BTreeMap::new();
    for share in shares {
        guest::mount_cifs(&smbd, share, &mount.join(share), "vers=3.1.1,cache=none");
    }
    for share in shares {
        guest::drop_caches();
        let before = dust.reads_completed();
        let get = client::smbclient(
            &smbd,
            share,
            &format!("get bad.bin {}", w.join(format!("{share}.got")).display()),
            Duration::from_secs(60),
        );
        let smbclient_reads = dust.reads_completed() - before;
        let status = get
            .combined()
            .split_whitespace()
            .find(|t| t.starts_with("NT_STATUS_"))
            .unwrap_or("NT_STATUS_OK")
            .to_string();
        guest::drop_caches();
        let before = dust.reads_completed();
        let cat = run::run(
            Command::new("cat").arg(mount.join(share).join("bad.bin")),
            Duration::from_secs(60),
        );
        let kernel_reads = dust.reads_completed() - before;
        let kernel = if cat.success() {
            "ok".to_string()
        } else {
            cat.stderr
                .trim()
                .rsplit(": ")
                .next()
                .unwrap_or("")
                .to_string()
        };
        let other = client::smbclient(
            &smbd,
            share,
            &format!("get good.bin {}", w.join(format!("{share}.good")).display()),
            Duration::from_secs(60),
        );
        let other_ok =
            other.success() && data::compare_files(&good, &w.join(format!("{share}.good"))).is_ok();
        println!(
            "DISK SUMMARY failing share={share} smbclient_get={status} (disk reads \
             {smbclient_reads}) kernel_client_read={kernel} (disk reads {kernel_reads}) \
             other_file={}",
            if other_ok { "ok" } else { "FAILED" }
        );
        if !other_ok {
            failures.push(format!("{share}: good.bin:\n{}", other.describe()));
        }
        outcome.insert(share, (status, kernel, smbclient_reads, kernel_reads));
    }
    let (p, a) = (&outcome["plain"], &outcome["aio"]);
    if p.0 == "NT_STATUS_OK" || p.1 == "ok" {
        failures.push(format!(
            "the bad sectors gave no error on the plain share: {p:?}"
        ));
    }
    if a.0 != p.0 || a.1 != p.1 {
        failures.push(format!(
            "aio answered {a:?}, plain {p:?}: not the same error"
        ));
    }
    for (what, mine, theirs) in [("smbclient", a.2, p.2), ("kernel client", a.3, p.3)] {
        if mine > 2 * theirs + 16 {
            failures.push(format!(
                "{what}: the aio share's read made {mine} disk reads, the plain share's {theirs}"
            ));
        }
    }
    let all = stats::at_disconnect(&smbd.all_stats());
    let aio = stats::total_for(&all, "aio");
    println!(
        "DISK SUMMARY failing counters share=aio retries={} fallbacks={} hung={}",
        aio.retries, aio.fallbacks, aio.hung
    );
    assert_none(&failures, &smbd, 40);
}

/// The shares of the power-cut test: each a file written and flushed, or written to a
/// `sync always` share; and (plain, aio) a file written without a flush.
const CUT_SHARES: [(&str, &[(&str, &str)]); 4] = [
    ("plain", &[]),
    ("aio", &[("vfs objects", "aio_fork")]),
    ("plain_sync", &[("sync always", "yes")]),
    (
        "aio_sync",
        &[("vfs objects", "aio_fork"), ("sync always", "yes")],
    ),
];

fn power_cut(ctx: &NsContext, record: &Path) {
    let w = &ctx.workdir;
    // A long commit interval: only what is flushed reaches the disk before the cut.
    guest::ext4_with(&guest::disk(0), &w.join("disk"), "commit=60");
    let mut builder = SmbdBuilder::without_shares(&w.join("smbd"));
    for (share, options) in CUT_SHARES {
        builder = builder.share(share, options);
    }
    let smbd = builder.start();
    let mut seed = 10;
    for (share, _) in CUT_SHARES {
        guest::bind(&w.join("disk").join(share), &smbd.share_path(share));
        let mount = w.join("mnt").join(share);
        guest::mount_cifs(&smbd, share, &mount, "vers=3.1.1,cache=none");
        // Written through the share; the flush (or sync always) makes it durable.
        seed += 1;
        let source = record.join(format!("{share}.durable.bin"));
        data::write_random_file(&source, 3 * MIB, seed);
        let sync = if share.ends_with("_sync") {
            ""
        } else {
            " && sync {dst}"
        };
        let out = run::run(
            Command::new("sh").arg("-c").arg(format!(
                "cp {src} {dst}{sync}",
                src = source.display(),
                dst = mount.join("durable.bin").display(),
                sync = sync.replace("{dst}", &mount.join("durable.bin").display().to_string())
            )),
            Duration::from_secs(60),
        );
        assert!(out.success(), "{share}: durable write:\n{}", out.describe());
    }
    // Not flushed: lost in a real cut.
    for share in ["plain", "aio"] {
        seed += 1;
        let source = record.join(format!("{share}.volatile.bin"));
        data::write_random_file(&source, MIB, seed);
        fs::copy(&source, w.join("mnt").join(share).join("volatile.bin")).expect("volatile");
    }
    fs::write(record.join(CUT_MARK), "").expect("cut mark");
    println!("DISK SUMMARY power_cut: cutting the power now");
    let _ = fs::write("/proc/sysrq-trigger", "o");
    thread::sleep(Duration::from_secs(30));
    panic!("the guest did not power off");
}

/// After the cut: the journal replayed (e2fsck), every durable file is on the disk, byte
/// for byte.
fn after_the_cut(record: &Path, disks: &[PathBuf]) {
    let image = &disks[0];
    let fsck = run::run(
        common::tools::command("e2fsck").arg("-fy").arg(image),
        Duration::from_secs(120),
    );
    // 0: clean, 1: errors corrected (a replayed journal counts).
    let fsck_code = fsck.status.and_then(|s| s.code());
    let mut failures = Vec::new();
    if !matches!(fsck_code, Some(0 | 1)) {
        failures.push(format!("e2fsck after the cut:\n{}", fsck.describe()));
    }
    let mut volatile_lost = 0;
    for (share, _) in CUT_SHARES {
        for kind in ["durable", "volatile"] {
            let expected = record.join(format!("{share}.{kind}.bin"));
            if !expected.exists() {
                continue;
            }
            let found = record.join(format!("{share}.{kind}.found"));
            let _ = run::run(
                common::tools::command("debugfs")
                    .arg("-R")
                    .arg(format!("dump -p /{share}/{kind}.bin {}", found.display()))
                    .arg(image),
                Duration::from_secs(60),
            );
            let same = data::compare_files(&expected, &found);
            println!(
                "DISK SUMMARY power_cut share={share} {kind}.bin on disk after the cut: {}",
                match &same {
                    Ok(()) => "intact".to_string(),
                    Err(e) => format!("NOT intact ({e})"),
                }
            );
            match (kind, same) {
                ("durable", Err(e)) => failures.push(format!("{share}: durable.bin lost: {e}")),
                ("volatile", Err(_)) => volatile_lost += 1,
                _ => {}
            }
        }
    }
    if volatile_lost == 0 {
        failures.push("no unflushed write was lost: the power cut did not cut".into());
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

/// Fails the test with every failure listed, and the last `lines` of smbd's log; also
/// if smbd panicked, or logged an error the module provoked (asking a path-only handle
/// for its I/O descriptor).
fn assert_none(failures: &[String], smbd: &Smbd, lines: usize) {
    let log = smbd.log_text();
    let mut failures = failures.to_vec();
    for (mark, what) in [
        ("PANIC", "smbd panicked"),
        (
            "is a path referencing fsp",
            "the module asked a path-only handle for its descriptor",
        ),
    ] {
        if log.contains(mark) {
            failures.push(format!("{what} (smbd's log has `{mark}`)"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n  {}\n{}",
        failures.len(),
        failures.join("\n  "),
        smbd.log_tail(lines)
    );
}
