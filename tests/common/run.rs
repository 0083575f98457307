//! Running external programs under a deadline, with their output captured.
//!
//! Every program runs in its own process group, and the whole group is killed when
//! the program ends or times out, so nothing it started outlives the call.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::tools::INSTALL_HINT;

/// What a finished (or killed) program left behind.
#[derive(Debug)]
pub struct Output {
    /// The command line, for messages.
    pub program: String,
    /// `None` when the program was killed at its deadline.
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    /// Exited by itself with status 0.
    pub fn success(&self) -> bool {
        !self.timed_out && self.status.is_some_and(|s| s.success())
    }

    /// stdout then stderr.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// A multi-line account for failure messages: command, status, output tails.
    pub fn describe(&self) -> String {
        let status = match (self.timed_out, self.status) {
            (true, _) => "TIMED OUT (killed)".to_string(),
            (false, Some(s)) => s.to_string(),
            (false, None) => "no status".to_string(),
        };
        let mut text = String::new();
        let _ = writeln!(
            text,
            "{}: {status} after {:.1?}",
            self.program, self.elapsed
        );
        let _ = writeln!(text, "--- stdout (tail) ---\n{}", tail(&self.stdout, 40));
        let _ = write!(text, "--- stderr (tail) ---\n{}", tail(&self.stderr, 40));
        text
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs `cmd` to completion or until `timeout`, capturing its output.
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    run_full(cmd, timeout, None, false)
}

/// Like [`run`], also writing `input` to the program's stdin.
pub fn run_with_input(cmd: &mut Command, timeout: Duration, input: &[u8]) -> Output {
    run_full(cmd, timeout, Some(input), false)
}

/// Like [`run`], also printing each output line as it arrives (for long runs whose
/// progress a person wants to see).
pub fn run_echo(cmd: &mut Command, timeout: Duration) -> Output {
    run_full(cmd, timeout, None, true)
}

/// Spawns `cmd`, turning "not found" into a message naming the tool to install.
pub fn spawn(cmd: &mut Command) -> Child {
    match cmd.spawn() {
        Ok(child) => child,
        Err(e) => panic!(
            "cannot start {:?}: {e}; if a tool is missing, install it with `{INSTALL_HINT}`",
            cmd.get_program()
        ),
    }
}

/// Sends SIGKILL to every process of the group `pgid`. Harmless if it is empty.
pub fn kill_group(pgid: u32) {
    // SAFETY: kill(2) with a negative pid only sends a signal; no memory is touched.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), libc::SIGKILL);
    }
}

/// Sends `signal` to one process.
pub fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) only sends a signal; no memory is touched.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

fn run_full(cmd: &mut Command, timeout: Duration, input: Option<&[u8]>, echo: bool) -> Output {
    let program = format!("{cmd:?}");
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let start = Instant::now();
    let mut child = spawn(cmd);
    let stdout = collect(child.stdout.take(), echo);
    let stderr = collect(child.stderr.take(), echo);
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        // A program that exits without reading its input is not an error here.
        let _ = stdin.write_all(data);
    }
    let (status, timed_out) = wait_deadline(&mut child, timeout);
    Output {
        program,
        status,
        timed_out,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        elapsed: start.elapsed(),
    }
}

/// Waits for `child` until `timeout`; then kills its process group either way.
pub fn wait_deadline(child: &mut Child, timeout: Duration) -> (Option<ExitStatus>, bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            // Leftovers in the group would hold our pipes open and outlive the test.
            kill_group(child.id());
            return (Some(status), false);
        }
        if Instant::now() >= deadline {
            kill_group(child.id());
            let _ = child.wait();
            return (None, true);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Reads a pipe to its end on a thread, optionally printing lines as they come.
fn collect<R: Read + Send + 'static>(pipe: Option<R>, echo: bool) -> JoinHandle<String> {
    thread::spawn(move || {
        let Some(pipe) = pipe else {
            return String::new();
        };
        let mut reader = BufReader::new(pipe);
        let mut text = String::new();
        let mut line = Vec::new();
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            let piece = String::from_utf8_lossy(&line);
            if echo {
                // Indented: the inner program's own summary lines (a namespaced test
                // binary's `test result: ...`) must not read as this run's.
                print!("    | {piece}");
            }
            text.push_str(&piece);
            line.clear();
        }
        text
    })
}

/// Serializes the tests of one test binary that time bounds of a few seconds (each binary
/// compiles this module, so each has its own lock): hold the guard for the test's length.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits up to `timeout` for `done`, checking every 20 ms; whether it came.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
