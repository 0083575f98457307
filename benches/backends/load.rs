//! The two kinds of load: one smbclient moving a large file (sequential), and
//! several `smbload` processes (benches/c/smbload.c, over libsmbclient) each doing
//! requests of one size at random offsets or one after the other.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::client;
use crate::common::run;
use crate::common::smbd::{self, Smbd};

/// The load generator's source, compiled at bench time (it is a C program over
/// libsmbclient; no Rust binding of libsmbclient is needed for it).
const SMBLOAD_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/c/smbload.c");
const BALLAST_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/c/ballast.c");
const SMBCLIENT_TIMEOUT: Duration = Duration::from_secs(600);
/// Connecting 8 clients takes well under a second; this only bounds a broken server
/// (plus a little per client: 64 clients authenticate on 2 cores).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_PER_CLIENT: Duration = Duration::from_millis(250);
/// How long after its run time a client may take to report and exit.
const FINISH_SLACK: Duration = Duration::from_secs(60);

/// Compiles benches/c/smbload.c into `out_dir` with gcc; returns the program's path.
pub fn build_smbload(out_dir: &Path) -> PathBuf {
    let out = out_dir.join("smbload");
    gcc(
        &[SMBLOAD_SOURCE, "-I/usr/include/samba-4.0", "-lsmbclient"],
        &out,
    );
    out
}

/// Compiles benches/c/ballast.c (see there) into a shared object for LD_PRELOAD.
pub fn build_ballast(out_dir: &Path) -> PathBuf {
    let out = out_dir.join("ballast.so");
    gcc(&["-shared", "-fPIC", BALLAST_SOURCE], &out);
    out
}

fn gcc(args: &[&str], out: &Path) {
    let result = run::run(
        Command::new("gcc")
            .args(["-O2", "-Wall", "-Wextra", "-o"])
            .arg(out)
            .args(args),
        Duration::from_secs(120),
    );
    assert!(
        result.success(),
        "building {} failed (needs gcc and libsmbclient-dev: \
         `apt-get install -y gcc libsmbclient-dev`):\n{}",
        out.display(),
        result.describe()
    );
}

/// One smbclient transfer: the rate smbclient itself reports, in MiB/s.
/// smbclient times the transfer from open to close, so connection setup and
/// authentication (the same for every backend) are not in it.
pub fn smbclient_transfer(smbd: &Smbd, share: &str, command: &str) -> Result<f64, String> {
    let out = client::smbclient(smbd, share, command, SMBCLIENT_TIMEOUT);
    let text = out.combined();
    if !out.success() || text.contains("NT_STATUS_") {
        let status = text
            .split_whitespace()
            .find(|w| w.starts_with("NT_STATUS_"))
            .unwrap_or("no NT_STATUS in its output");
        let verb = command.split_whitespace().next().unwrap_or(command);
        return Err(format!("smbclient {verb} failed: {status}"));
    }
    parse_average_kib_s(&text)
        .map(|kib_s| kib_s / 1024.0)
        .ok_or_else(|| format!("no transfer rate in smbclient's output:\n{text}"))
}

/// One smbclient transfer on a connection that stays open around it: `connected` is
/// called with the smbd connection process's pid before the command, `done` after it,
/// both while that process still runs (what it used in between is the transfer's).
/// Returns the rate smbclient reports, in MiB/s.
pub fn smbclient_held(
    smbd: &Smbd,
    share: &str,
    command: &str,
    connected: &mut dyn FnMut(u32),
    done: &mut dyn FnMut(u32),
) -> Result<f64, String> {
    let mut session = client::Session::open(smbd, share, SMBCLIENT_TIMEOUT);
    let pid = session.server_pid;
    connected(pid);
    let lines = session.run(command, SMBCLIENT_TIMEOUT);
    done(pid);
    let _ = session.close(SMBCLIENT_TIMEOUT);
    let text = lines.join("\n");
    if let Some(status) = text
        .split_whitespace()
        .find(|w| w.starts_with("NT_STATUS_"))
    {
        let verb = command.split_whitespace().next().unwrap_or(command);
        return Err(format!("smbclient {verb} failed: {status}"));
    }
    parse_average_kib_s(&text)
        .map(|kib_s| kib_s / 1024.0)
        .ok_or_else(|| format!("no transfer rate in smbclient's output:\n{text}"))
}

/// smbclient prints `(average 744727.3 KiloBytes/sec)` after a get and
/// `(average 288704.8 kb/s)` after a put; both are KiB/s (bytes / 1.024 ms).
fn parse_average_kib_s(text: &str) -> Option<f64> {
    let after = text.rsplit("(average ").next()?;
    if after.len() == text.len() {
        return None;
    }
    after.split_whitespace().next()?.parse().ok()
}

/// What the smbload clients do.
pub struct RandomSpec<'a> {
    pub smbload: &'a Path,
    pub share: &'a str,
    pub file: &'a str,
    /// `randread`, `randwrite` or `seqread` (see benches/c/smbload.c).
    pub mode: &'a str,
    pub request_size: u64,
    pub clients: usize,
    pub duration: Duration,
    pub seed: u64,
    /// Each client stops after moving this many bytes (or at `duration`).
    pub max_bytes: Option<u64>,
    /// Clients stay connected this long after reporting, before the `held` hook.
    pub hold: Option<Duration>,
    /// Where the clients write their latency files.
    pub scratch: &'a Path,
}

/// All clients of one run together.
#[derive(Clone, Debug)]
pub struct RandomResult {
    pub ops_per_s: f64,
    /// Sum over clients of each one's own rate.
    pub mib_per_s: f64,
    pub ops: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Each client's first request (on a fresh connection: it may include spawning a
    /// helper).
    pub first_us: Vec<u32>,
}

/// Kills and reaps the clients however the run ends.
struct Clients(Vec<Child>);

impl Drop for Clients {
    fn drop(&mut self) {
        for child in &mut self.0 {
            run::kill_group(child.id());
            let _ = child.wait();
        }
    }
}

/// What the caller looks at during a run of [`run_random`], each while the clients are
/// connected.
#[derive(Default)]
pub struct Hooks<'a> {
    /// Every client connected and opened its file, none started yet.
    pub ready: Option<&'a mut dyn FnMut()>,
    /// The clients were told to go.
    pub started: Option<&'a mut dyn FnMut()>,
    /// Halfway through the run time, if clients still run.
    pub halfway: Option<&'a mut dyn FnMut()>,
    /// Every client reported, then waited `spec.hold` (if any) still connected.
    pub held: Option<&'a mut dyn FnMut()>,
}

fn call(hook: &mut Option<&mut dyn FnMut()>) {
    if let Some(f) = hook {
        f();
    }
}

/// Runs `spec.clients` smbload processes against one share. They connect first; once
/// all are ready they start together and run for `spec.duration`; they stay connected
/// until the `held` hook ran (see [`Hooks`]).
pub fn run_random(smbd: &Smbd, spec: &RandomSpec, hooks: Hooks) -> Result<RandomResult, String> {
    let Hooks {
        ready: mut on_ready,
        mut started,
        mut halfway,
        mut held,
    } = hooks;
    let url = format!("smb://{}/{}/{}", smbd::ADDRESS, spec.share, spec.file);
    let (tx, rx) = mpsc::channel::<(usize, String)>();
    let mut clients = Clients(Vec::new());
    let mut stderr_threads = Vec::new();
    let mut latency_files = Vec::new();
    for i in 0..spec.clients {
        let latency_file = spec.scratch.join(format!("latency.{i}"));
        let mut cmd = Command::new(spec.smbload);
        cmd.arg("-c").arg(&smbd.conf).arg("-l").arg(&latency_file);
        if let Some(bytes) = spec.max_bytes {
            cmd.arg("-b").arg(bytes.to_string());
        }
        // Connected until released: what the server holds, and what its connection
        // processes used, is looked at before they go.
        cmd.arg("-H");
        cmd.arg(&url)
            .args([smbd::USER, smbd::PASSWORD, spec.mode])
            .arg(spec.request_size.to_string())
            .arg(format!("{:.3}", spec.duration.as_secs_f64()))
            .arg((spec.seed + i as u64).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so the Drop above can kill exactly it.
            .process_group(0);
        let mut child = run::spawn(&mut cmd);
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        clients.0.push(child);
        latency_files.push(latency_file);
        let tx = tx.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((i, line)).is_err() {
                    break;
                }
            }
        });
        stderr_threads.push(thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut text);
            text
        }));
    }
    drop(tx);

    // Everyone connected and opened the file: then start them at once.
    let ready_by = Instant::now() + READY_TIMEOUT + CONNECT_PER_CLIENT * spec.clients as u32;
    let mut ready = vec![None; spec.clients];
    if !collect_lines(&rx, &mut ready, "ready", ready_by) {
        drop(clients);
        return Err(format!(
            "only {} of {} clients got ready: {}",
            ready.iter().flatten().count(),
            spec.clients,
            first_stderr(stderr_threads)
        ));
    }
    call(&mut on_ready);
    // Kept open while the clients hold their connections: closing releases them.
    let mut stdins = Vec::new();
    for child in &mut clients.0 {
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(b"go\n");
            let _ = stdin.flush();
            stdins.push(stdin);
        }
    }
    let go = Instant::now();
    call(&mut started);
    // Results arriving before halfway (clients with a byte limit finish early) are
    // kept; the look halfway through happens only while clients still run.
    let mut results = vec![None; spec.clients];
    if !collect_lines(&rx, &mut results, "result ", go + spec.duration / 2) {
        call(&mut halfway);
    }
    let deadline = go + spec.duration + FINISH_SLACK;
    collect_lines(&rx, &mut results, "result ", deadline);
    let results: Vec<String> = results.into_iter().flatten().collect();
    if results.len() == spec.clients {
        if let Some(hold) = spec.hold {
            thread::sleep(hold);
        }
        call(&mut held);
    }
    stdins.clear();
    let mut failed = Vec::new();
    for (i, child) in clients.0.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        let (status, timed_out) = run::wait_deadline(child, left.max(Duration::from_secs(1)));
        if timed_out || !status.is_some_and(|s| s.success()) {
            failed.push(format!("client {i}: {status:?}"));
        }
    }
    drop(clients);
    if results.len() < spec.clients || !failed.is_empty() {
        return Err(format!(
            "{} of {} clients reported; failed: {failed:?}: {}",
            results.len(),
            spec.clients,
            first_stderr(stderr_threads)
        ));
    }

    let mut ops_per_s = 0.0;
    let mut ops = 0;
    for line in &results {
        ops_per_s += field(line, "ops_per_s").unwrap_or(0.0);
        ops += field(line, "ops").unwrap_or(0.0) as u64;
    }
    let mut latencies = Vec::new();
    let mut first_us = Vec::new();
    for path in &latency_files {
        let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let own: Vec<u32> = text.lines().filter_map(|l| l.parse().ok()).collect();
        first_us.extend(own.first());
        latencies.extend(own);
        let _ = fs::remove_file(path);
    }
    latencies.sort_unstable();
    Ok(RandomResult {
        ops_per_s,
        mib_per_s: ops_per_s * spec.request_size as f64 / (1u64 << 20) as f64,
        ops,
        p50_us: percentile(&latencies, 50.0),
        p99_us: percentile(&latencies, 99.0),
        first_us,
    })
}

/// Fills `got` with lines starting with `prefix`, one per client, until each client
/// sent one or the deadline passed (or every client's stdout closed). True if every
/// client's line is in.
fn collect_lines(
    rx: &mpsc::Receiver<(usize, String)>,
    got: &mut [Option<String>],
    prefix: &str,
    deadline: Instant,
) -> bool {
    while got.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, line)) if line.starts_with(prefix) => got[i] = Some(line),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    got.iter().all(Option::is_some)
}

fn first_stderr(threads: Vec<thread::JoinHandle<String>>) -> String {
    threads
        .into_iter()
        .filter_map(|t| t.join().ok())
        .find(|t| !t.trim().is_empty())
        .map(|t| run::tail(&t, 5))
        .unwrap_or_else(|| "no error output".to_string())
}

/// `key=value` from a `result ...` line.
fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// Nearest-rank percentile of sorted values (0 if empty).
pub fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1])
}
