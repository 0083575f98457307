//! A hung backend: shares on a FUSE file system of the tests' own
//! (`tests/clients/stallfs.py`) whose reads and writes a test can stall at will, as a
//! dead NFS server or a wedged disk would. A helper blocked in such a request sits in
//! the kernel (state D) and does not die when killed, until the file system answers.
//!
//! One smbd, three shares on the one mount: `plain` (no module: the baseline, whose
//! hangs are recorded, not judged), `aio_fail` and `aio_retry` (aio_fork with a 3 s
//! `request timeout` and each `timeout action`). Cases: a stalled read, a held write
//! whose late landing must not overwrite a later write, a close with a stuck read;
//! then the module's stats (`hung`, `stuck`, `stuck_max`) and no helper left in D.
//! Each case prints one `STALLS SUMMARY` line per share.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::client;
use common::data;
use common::namespace::{run_in_namespace, NsContext};
use common::procs::{self, HELPER_COMM, ZYGOTE_COMM};
use common::python;
use common::run::{self, one_at_a_time, wait_until};
use common::smbd::{Smbd, SmbdBuilder, PASSWORD, USER};
use common::stats;

const STALLFS: &str = "tests/clients/stallfs.py";
const CLIENT: &str = "tests/clients/stall_client.py";
/// `aio_fork:request timeout` of the aio shares, in seconds.
const TIMEOUT: f64 = 3.0;
const SHARES: [&str; 3] = ["plain", "aio_fail", "aio_retry"];
const TEST_LIMIT: Duration = Duration::from_secs(240);
const STATUS_EIO: &str = "NT_STATUS_IO_DEVICE_ERROR";

#[test]
fn stalled_read() {
    let _serial = one_at_a_time();
    run_in_namespace("stalled_read", TEST_LIMIT, stalled_read_body);
}

#[test]
fn held_write() {
    let _serial = one_at_a_time();
    run_in_namespace("held_write", TEST_LIMIT, held_write_body);
}

#[test]
fn close_stuck() {
    let _serial = one_at_a_time();
    run_in_namespace("close_stuck", TEST_LIMIT, close_stuck_body);
}

// ---------------------------------------------------------------------------------
// The file system and the smbd on it.

/// The stall file system, mounted over smbd's share directory; unmounted (after every
/// stall is released) and its daemon ended on drop.
struct StallFs {
    mountpoint: PathBuf,
    backing: PathBuf,
    control: PathBuf,
    daemon: Child,
}

impl StallFs {
    fn mount(workdir: &Path, mountpoint: &Path) -> StallFs {
        let backing = workdir.join("backing");
        let control = workdir.join("control");
        for dir in [&backing, &control, &mountpoint.to_path_buf()] {
            fs::create_dir_all(dir).expect("create stallfs dirs");
        }
        let log = File::create(control.join("daemon.console")).expect("create console");
        let mut cmd = Command::new(python::PYTHON);
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(STALLFS))
            .arg(&backing)
            .arg(mountpoint)
            .arg(&control)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup console"))
            .stderr(log)
            .process_group(0);
        let daemon = run::spawn(&mut cmd);
        let fs = StallFs {
            mountpoint: mountpoint.to_path_buf(),
            backing,
            control,
            daemon,
        };
        let ready = wait_until(Duration::from_secs(20), || {
            fs.control.join("ready").exists()
        });
        assert!(
            ready,
            "stallfs did not come up (is `python3-fusepy libfuse2` installed? see \
             scripts/install-deps.sh):\n{}",
            fs.console()
        );
        fs
    }

    fn console(&self) -> String {
        let text = fs::read_to_string(self.control.join("daemon.console")).unwrap_or_default();
        let log = fs::read_to_string(self.control.join("stallfs.log")).unwrap_or_default();
        format!(
            "--- stallfs console ---\n{}\n--- stallfs.log (tail) ---\n{}",
            run::tail(&text, 30),
            run::tail(&log, 30)
        )
    }

    /// Lets every stalled or held request go.
    fn release_all(&self) {
        let _ = fs::remove_file(self.control.join("stall-read"));
        let _ = fs::remove_file(self.control.join("hold-write"));
        if self.control.join("held-write").exists() {
            let _ = fs::write(self.control.join("release-write"), "");
        }
    }

    /// How many reads of `fs_name` the daemon has stalled so far.
    fn stalled_reads(&self, fs_name: &str) -> usize {
        let log = fs::read_to_string(self.control.join("stallfs.log")).unwrap_or_default();
        log.matches(&format!("read stalled /{fs_name} ")).count()
    }
}

impl Drop for StallFs {
    fn drop(&mut self) {
        self.release_all();
        let _ = run::run(
            Command::new("umount").arg("-l").arg(&self.mountpoint),
            Duration::from_secs(10),
        );
        run::signal(self.daemon.id(), libc::SIGTERM);
        let (_status, _timed_out) = run::wait_deadline(&mut self.daemon, Duration::from_secs(5));
    }
}

/// The stall file system and an smbd serving the three shares from it. The smbd is
/// declared second so that it is stopped before the file system goes.
struct Rig {
    fs: StallFs,
    smbd: Smbd,
    workdir: PathBuf,
}

fn rig(ctx: &NsContext) -> Rig {
    python::check();
    let smbd_dir = ctx.workdir.join("smbd");
    let fs = StallFs::mount(&ctx.workdir, &smbd_dir.join("shares"));
    let timeout = format!("{}", TIMEOUT as u64);
    let aio = |action: &'static str| {
        vec![
            ("vfs objects", "aio_fork"),
            ("aio_fork:request timeout", leak(&timeout)),
            ("aio_fork:timeout action", action),
            // Every read must reach a helper: none is served from smbd's side.
            ("aio_fork:inline cached reads", "no"),
        ]
    };
    // smbd sets a file's archive attribute (an xattr, or the owner-x bit) itself on the
    // first write through a handle, after the VFS answered the write and before it
    // replies (mark_file_modified in smb2_aio.c, on errors too). On a FUSE mount without
    // parallel direct writes a stuck write holds the inode lock that this needs, so the
    // reply to the first write waits for the backend whatever the I/O backend: the
    // shares leave the archive attribute alone, so that what is measured is the module.
    let smbd = SmbdBuilder::without_shares(&smbd_dir)
        .global("store dos attributes", "no")
        .global("map archive", "no")
        .share("plain", &[])
        .share("aio_fail", &aio("fail"))
        .share("aio_retry", &aio("retry"))
        .start();
    Rig {
        fs,
        smbd,
        workdir: ctx.workdir.clone(),
    }
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

impl Rig {
    /// Runs stall_client.py; `on_event` is called (on this thread) with each EVENT
    /// line as it comes. Returns the RESULT lines.
    fn client(
        &self,
        case: &str,
        share: &str,
        file: &str,
        extra: &[String],
        limit: Duration,
        mut on_event: impl FnMut(&BTreeMap<String, String>),
    ) -> Vec<BTreeMap<String, String>> {
        let mut cmd = python::command(&Path::new(env!("CARGO_MANIFEST_DIR")).join(CLIENT));
        cmd.arg(case)
            .arg("--conf")
            .arg(&self.smbd.conf)
            .args(["--share", share, "--user", USER, "--password", PASSWORD])
            .arg("--ctl")
            .arg(&self.fs.control)
            .arg("--backing")
            .arg(&self.fs.backing)
            .args(["--file", file, "--fs-name", &format!("{share}/{file}")])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = run::spawn(&mut cmd);
        let stdout = child.stdout.take().expect("client stdout");
        let stderr = child.stderr.take().expect("client stderr");
        let err_reader = thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                text.push_str(&line);
                text.push('\n');
            }
            text
        });
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + limit;
        let mut results = Vec::new();
        let mut timed_out = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("EVENT ") {
                        on_event(&fields(rest));
                    } else if let Some(rest) = line.strip_prefix("RESULT ") {
                        results.push(fields(rest));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if Instant::now() >= deadline {
                        timed_out = true;
                        break;
                    }
                }
            }
        }
        let (_status, killed) = run::wait_deadline(&mut child, Duration::from_secs(5));
        let errors = err_reader.join().unwrap_or_default();
        assert!(
            !timed_out && !killed,
            "stall_client {case} on {share} did not finish within {limit:?}\n{errors}\n{}",
            self.fs.console()
        );
        assert!(
            !results.is_empty(),
            "stall_client {case} on {share} printed no RESULT\n{errors}\n{}",
            self.fs.console()
        );
        results
    }

    /// Puts a pseudo-random file into a share's backing directory (not through smbd).
    fn seed_file(&self, share: &str, name: &str, size: u64, seed: u64) -> PathBuf {
        let path = self.fs.backing.join(share).join(name);
        data::write_random_file(&path, size, seed);
        let copy = self.workdir.join(format!("expect.{share}.{name}"));
        fs::copy(&path, &copy).expect("copy expected file");
        copy
    }

    /// Releases every stall, then checks that no helper stays in D and that smbd
    /// goes idle (every tree disconnect logged), and judges the aio shares' stats.
    fn finish(&self, failures: &mut Vec<String>) {
        self.fs.release_all();
        let start = Instant::now();
        let none_in_d = wait_until(Duration::from_secs(10), || procs::helpers_in_d().is_empty());
        let d_secs = start.elapsed().as_secs_f64();
        if !none_in_d {
            failures.push(format!(
                "helpers still in state D {d_secs:.1} s after every stall was released: {:?}",
                procs::helpers_in_d()
            ));
        }
        // Not Smbd::wait_idle: the stall daemon is a process of the namespace too.
        let idle = wait_until(Duration::from_secs(30), || {
            self.smbd.connections().is_empty()
                && !procs::snapshot()
                    .iter()
                    .any(|p| p.is_live() && (p.comm == HELPER_COMM || p.comm == ZYGOTE_COMM))
        });
        if !idle {
            failures.push(format!(
                "smbd did not go idle (connections {:?}) within 30 s after the stalls \
                 were released",
                self.smbd.connections()
            ));
        }
        let all = self.smbd.stats();
        for share in ["aio_fail", "aio_retry"] {
            let total = stats::total_for(&all, share);
            let stuck = total.other.get("stuck").copied();
            let stuck_max = all
                .iter()
                .filter(|s| s.share == share)
                .map(|s| s.other("stuck_max"))
                .max()
                .unwrap_or(0);
            let has_stuck_max = all
                .iter()
                .any(|s| s.share == share && s.other.contains_key("stuck_max"));
            println!(
                "STALLS SUMMARY stats share={share} lines={} hung={} retries={} \
                 helper_deaths={} stuck={} stuck_max={} (no helper in D {d_secs:.1} s \
                 after release: {none_in_d})",
                total.lines,
                total.hung,
                total.retries,
                total.helper_deaths,
                stuck.map_or("absent".to_string(), |v| v.to_string()),
                if has_stuck_max {
                    stuck_max.to_string()
                } else {
                    "absent".to_string()
                },
            );
            if total.lines == 0 {
                failures.push(format!("{share}: no stats line at tree disconnect"));
                continue;
            }
            if total.hung < 1 {
                failures.push(format!("{share}: stats hung={} (want >= 1)", total.hung));
            }
            if stuck.is_none() || !has_stuck_max {
                failures.push(format!(
                    "{share}: stats line lacks stuck= / stuck_max= (killed helpers that \
                     have not exited): {:?}",
                    total.other.keys().collect::<Vec<_>>()
                ));
            } else if stuck_max < 1 {
                failures.push(format!(
                    "{share}: stuck_max={stuck_max}: a helper killed in a FUSE request \
                     the daemon did not answer must have counted as stuck"
                ));
            }
        }
    }
}

/// CLOCK_MONOTONIC in seconds: the clock of the Python client's `time.monotonic()`.
fn monotonic() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn fields(text: &str) -> BTreeMap<String, String> {
    text.split_whitespace()
        .filter_map(|t| t.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn get<'a>(m: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    m.get(key).map(String::as_str).unwrap_or("?")
}

fn secs(m: &BTreeMap<String, String>, key: &str) -> f64 {
    get(m, key).parse().unwrap_or(f64::INFINITY)
}

/// The bound within which an aio share must answer a stalled request with an error.
fn error_bound(share: &str) -> f64 {
    match share {
        "aio_retry" => 2.0 * TIMEOUT + 2.0,
        _ => TIMEOUT + 2.0,
    }
}

/// Fails the test with every failure listed, and the module's lines of smbd's log.
fn check_failures(rig: &Rig, failures: &[String]) {
    if failures.is_empty() {
        return;
    }
    let log = rig.smbd.log_text();
    let module_lines: Vec<&str> = log.lines().filter(|l| l.contains("aio_fork")).collect();
    let tail = &module_lines[module_lines.len().saturating_sub(60)..];
    panic!(
        "{} failure(s):\n  {}\n--- the module's last log lines ---\n{}",
        failures.len(),
        failures.join("\n  "),
        tail.join("\n")
    );
}

// ---------------------------------------------------------------------------------
// a. A stalled read.

/// What the test does on other connections while the stalled read is outstanding.
#[derive(Default, Debug)]
struct Alongside {
    put_get: Option<(bool, String, f64, f64, f64)>,
    list: Option<(bool, f64, f64, f64)>,
}

fn stalled_read_body(ctx: &NsContext) {
    let rig = rig(ctx);
    let mut failures = Vec::new();
    for share in SHARES {
        let expect = rig.seed_file(share, "stalled.bin", 256 * 1024, 11);
        let side = ctx.workdir.join(format!("side.{share}"));
        data::write_random_file(&side, 512 * 1024, 12);
        // Plain: the baseline's hang is observed this long; aio: long enough to see
        // whether the answer came within its bound.
        let window = TIMEOUT + 8.0;
        let extra = vec![
            "--expect".to_string(),
            expect.display().to_string(),
            "--bound".to_string(),
            window.to_string(),
        ];
        let mut alongside = Alongside::default();
        let results = rig.client(
            "read",
            share,
            "stalled.bin",
            &extra,
            Duration::from_secs(60),
            |event| {
                if get(event, "name") == "stalled" {
                    alongside = other_clients(&rig.smbd, share, &side, &ctx.workdir);
                }
            },
        );
        let r = &results[0];
        judge_read(share, r, &alongside, &mut failures);
    }
    rig.finish(&mut failures);
    check_failures(&rig, &failures);
}

/// While the stalled read waits: a second client puts and gets another file (byte for
/// byte), a third lists the share; both at once.
fn other_clients(smbd: &Smbd, share: &str, side: &Path, workdir: &Path) -> Alongside {
    thread::scope(|s| {
        let pg = s.spawn(|| {
            let back = workdir.join(format!("side.{share}.back"));
            let _ = fs::remove_file(&back);
            let start = monotonic();
            let out = client::smbclient(
                smbd,
                share,
                &format!(
                    "put {} side.bin; get side.bin {}",
                    side.display(),
                    back.display()
                ),
                Duration::from_secs(20),
            );
            let end = monotonic();
            let same = data::compare_files(side, &back);
            let ok = out.success() && same.is_ok();
            let why = match (&same, out.success()) {
                (Ok(()), true) => "ok".to_string(),
                (Err(e), _) => e.replace(' ', "_"),
                (Ok(()), false) => "smbclient_failed".to_string(),
            };
            (ok, why, end - start, start, end)
        });
        let ls = s.spawn(|| {
            let start = monotonic();
            let out = client::smbclient(smbd, share, "ls", Duration::from_secs(20));
            let end = monotonic();
            let ok = out.success() && out.stdout.contains("stalled.bin");
            (ok, end - start, start, end)
        });
        Alongside {
            put_get: pg.join().ok(),
            list: ls.join().ok(),
        }
    })
}

fn judge_read(
    share: &str,
    r: &BTreeMap<String, String>,
    along: &Alongside,
    failures: &mut Vec<String>,
) {
    let first_end = secs(r, "first_end");
    let (pg_ok, pg_why, pg_secs, _pg_start, pg_end) =
        along
            .put_get
            .clone()
            .unwrap_or((false, "not_run".to_string(), 0.0, 0.0, f64::INFINITY));
    let (ls_ok, ls_secs, _ls_start, ls_end) =
        along.list.unwrap_or((false, 0.0, 0.0, f64::INFINITY));
    let during = pg_end <= first_end && ls_end <= first_end;
    let same_conn_during = secs(r, "other_end") <= first_end;
    println!(
        "STALLS SUMMARY read share={share} stalled_in_fs={} first={} after {} s{} \
         late={} after_resume={} s late_bytes_ok={} | same-connection other file: {} \
         {} s bytes_ok={} during_stall={} | second client put+get 512 KiB: {} ({pg_why}) \
         {pg_secs:.2} s, third client ls: {} {ls_secs:.2} s, during_stall={during} | \
         read after resume: {} {} s bytes_ok={} | close {}",
        get(r, "reached"),
        get(r, "first_status"),
        get(r, "first_secs"),
        if get(r, "first_status") == "waiting" {
            " (still waiting: the observation window ended)"
        } else {
            ""
        },
        get(r, "late_status"),
        get(r, "late_secs"),
        get(r, "late_ok"),
        get(r, "other_status"),
        get(r, "other_secs"),
        get(r, "other_ok"),
        same_conn_during,
        if pg_ok { "ok" } else { "FAILED" },
        if ls_ok { "ok" } else { "FAILED" },
        get(r, "again_status"),
        get(r, "again_secs"),
        get(r, "again_ok"),
        get(r, "close_status"),
    );
    let mut fail = |text: String| failures.push(format!("read {share}: {text}"));
    if get(r, "reached") != "1" {
        fail("the read never reached the stall file system".into());
    }
    // Resuming must give the file's bytes, on every share (a harness check too).
    if get(r, "again_status") != "NT_STATUS_OK" || get(r, "again_ok") != "1" {
        fail(format!(
            "read after resume: {} bytes_ok={}",
            get(r, "again_status"),
            get(r, "again_ok")
        ));
    }
    if share == "plain" {
        return;
    }
    let bound = error_bound(share);
    let first = get(r, "first_status");
    let first_secs = secs(r, "first_secs");
    if first != STATUS_EIO || first_secs > bound {
        fail(format!(
            "stalled read answered {first} after {} s; want {STATUS_EIO} within {bound} s",
            get(r, "first_secs")
        ));
    }
    if get(r, "other_status") != "NT_STATUS_OK" || get(r, "other_ok") != "1" {
        fail(format!(
            "other file on the same connection during the stall: {} bytes_ok={}",
            get(r, "other_status"),
            get(r, "other_ok")
        ));
    } else if !same_conn_during {
        fail(format!(
            "other file on the same connection took {} s: it ended after the stalled read \
             was answered, so it did not run alongside it",
            get(r, "other_secs")
        ));
    }
    if !pg_ok || !ls_ok {
        fail(format!(
            "other clients during the stall: put+get {pg_why}, ls ok={ls_ok}"
        ));
    } else if !during {
        fail(format!(
            "other clients ended after the stalled read was answered (put+get \
             {pg_secs:.2} s, ls {ls_secs:.2} s): not alongside it"
        ));
    }
}

// ---------------------------------------------------------------------------------
// b. A held write.

fn held_write_body(ctx: &NsContext) {
    let rig = rig(ctx);
    let mut failures = Vec::new();
    for share in SHARES {
        let _a = rig.seed_file(share, "held.bin", 64 * 1024, 21);
        let (modes, window) = if share == "plain" {
            ("after,during", TIMEOUT + 2.0)
        } else {
            ("after,during,after", error_bound(share) + 1.0)
        };
        let extra = vec![
            "--modes".to_string(),
            modes.to_string(),
            "--bound".to_string(),
            window.to_string(),
            "--size".to_string(),
            (64 * 1024).to_string(),
        ];
        let results = rig.client(
            "write",
            share,
            "held.bin",
            &extra,
            Duration::from_secs(90),
            |_| {},
        );
        for r in &results {
            judge_write(share, r, &mut failures);
        }
        // The last word: the backing file after every round is the last round's Y,
        // which the client checked; here the share's file must at least be whole.
        let len = fs::metadata(rig.fs.backing.join(share).join("held.bin")).map(|m| m.len());
        if len.as_ref().ok() != Some(&(64 * 1024)) {
            failures.push(format!("write {share}: held.bin has length {len:?}"));
        }
    }
    rig.finish(&mut failures);
    check_failures(&rig, &failures);
}

fn judge_write(share: &str, r: &BTreeMap<String, String>, failures: &mut Vec<String>) {
    println!(
        "STALLS SUMMARY write share={share} round={} mode={} held_in_fs={} X: {} after {} \
         s (late: {}) | Y: waited_while_held={} {} after {} s, {} s after release | close \
         {} | file on disk={} via share={}",
        get(r, "round"),
        get(r, "mode"),
        get(r, "held"),
        get(r, "x_status"),
        get(r, "x_secs"),
        get(r, "x_late"),
        get(r, "y_waited"),
        get(r, "y_status"),
        get(r, "y_secs"),
        get(r, "release_to_y_end"),
        get(r, "close_status"),
        get(r, "disk"),
        get(r, "share_read"),
    );
    let round = get(r, "round");
    let mut fail = |text: String| failures.push(format!("write {share} round {round}: {text}"));
    if get(r, "held") != "1" {
        fail("the write never reached the stall file system".into());
    }
    if share == "plain" {
        return;
    }
    let bound = error_bound(share);
    let x = get(r, "x_status");
    if x != STATUS_EIO || secs(r, "x_secs") > bound {
        fail(format!(
            "held write X answered {x} after {} s; want {STATUS_EIO} within {bound} s",
            get(r, "x_secs")
        ));
    }
    if get(r, "y_status") != "NT_STATUS_OK" {
        fail(format!(
            "write Y after X's helper was released: {} after {} s",
            get(r, "y_status"),
            get(r, "y_secs")
        ));
    }
    if get(r, "disk") != "Y" || get(r, "share_read") != "Y" {
        fail(format!(
            "file ends as {} on disk and {} through the share; want Y (the late X must \
             land before Y)",
            get(r, "disk"),
            get(r, "share_read")
        ));
    }
}

// ---------------------------------------------------------------------------------
// c. A close, and a disconnect, with a stuck read.

fn close_stuck_body(ctx: &NsContext) {
    let rig = rig(ctx);
    let mut failures = Vec::new();
    let bound = TIMEOUT + 3.0;
    for share in SHARES {
        rig.seed_file(share, "stalled.bin", 128 * 1024, 31);
        let extra = vec![
            "--bound".to_string(),
            (bound + 1.0).to_string(),
            "--size".to_string(),
            (128 * 1024).to_string(),
        ];
        let results = rig.client(
            "close",
            share,
            "stalled.bin",
            &extra,
            Duration::from_secs(60),
            |_| {},
        );
        let r = &results[0];
        let disconnect = disconnect_with_stuck_read(&rig, share, bound + 3.0);
        println!(
            "STALLS SUMMARY close share={share} stalled_in_fs={} close: {} after {} s \
             (read then: {}; read finally {} after {} s) | disconnect: {}",
            get(r, "reached"),
            get(r, "close_status"),
            get(r, "close_secs"),
            get(r, "read_status_at_close"),
            get(r, "read_status"),
            get(r, "read_secs"),
            disconnect.describe(),
        );
        if get(r, "reached") != "1" {
            failures.push(format!(
                "close {share}: the read never reached the file system"
            ));
        }
        if share == "plain" {
            continue;
        }
        if get(r, "close_status") != "NT_STATUS_OK" || secs(r, "close_secs") > bound {
            failures.push(format!(
                "close {share}: close with a stuck read answered {} after {} s; want \
                 NT_STATUS_OK within {bound} s",
                get(r, "close_status"),
                get(r, "close_secs")
            ));
        }
        match disconnect.gone_after {
            Some(t) if t <= bound => {}
            _ => failures.push(format!(
                "close {share}: after a disconnect with a stuck read: {} (want the \
                 connection process gone within {bound} s)",
                disconnect.describe()
            )),
        }
    }
    rig.finish(&mut failures);
    check_failures(&rig, &failures);
}

struct Disconnect {
    reached: bool,
    gone_after: Option<f64>,
    window: f64,
}

impl Disconnect {
    fn describe(&self) -> String {
        match (self.reached, self.gone_after) {
            (false, _) => "the read never reached the file system".to_string(),
            (true, Some(t)) => {
                format!("connection process gone {t:.2} s after the client was killed")
            }
            (true, None) => format!(
                "connection process still there {:.1} s after the client was killed",
                self.window
            ),
        }
    }
}

/// smbclient reads the stalled file and is killed once the read hangs: how long does
/// the smbd connection process serving it take to go?
fn disconnect_with_stuck_read(rig: &Rig, share: &str, window: f64) -> Disconnect {
    let fs_name = format!("{share}/stalled.bin");
    let before_conns = rig.smbd.connections();
    let before = rig.fs.stalled_reads(&fs_name);
    fs::write(rig.fs.control.join("stall-read"), format!("{fs_name}\n")).expect("stall-read");
    let mut child = client::spawn(&rig.smbd, share, "get stalled.bin /dev/null");
    let reached = wait_until(Duration::from_secs(10), || {
        rig.fs.stalled_reads(&fs_name) > before
    });
    let conn = rig
        .smbd
        .connections()
        .into_iter()
        .find(|p| !before_conns.contains(p));
    run::kill_group(child.id());
    let _ = child.wait();
    let start = Instant::now();
    let gone = conn.map(|pid| {
        wait_until(Duration::from_secs_f64(window), || {
            !procs::snapshot()
                .iter()
                .any(|p| p.pid == pid && p.is_live())
        })
    });
    let gone_after = match gone {
        Some(true) => Some(start.elapsed().as_secs_f64()),
        _ => None,
    };
    let _ = fs::remove_file(rig.fs.control.join("stall-read"));
    Disconnect {
        reached: reached && conn.is_some(),
        gone_after,
        window,
    }
}
