//! smbclient: one-shot commands (`-c`) and a long-lived interactive session.
//!
//! A session keeps one SMB connection, hence one smbd connection process and its
//! helper pool, alive between commands, so a test can look at the pool while idle.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::run::{self, Output};
use super::smbd::Smbd;
use super::tools;

/// `smbclient //127.0.0.1/<share> -U user%pw -c <commands>` under a deadline.
/// `commands` is smbclient's `;`-separated list.
pub fn smbclient(smbd: &Smbd, share: &str, commands: &str, timeout: Duration) -> Output {
    run::run(base_command(smbd, share).arg("-c").arg(commands), timeout)
}

/// Uploads `local` as `remote`. Check the file, not just the exit status: smbclient
/// can report success for a put whose writes failed.
pub fn put(smbd: &Smbd, share: &str, local: &Path, remote: &str, timeout: Duration) -> Output {
    let cmd = format!("put {} {remote}", plain_path(local));
    smbclient(smbd, share, &cmd, timeout)
}

/// Downloads `remote` to `local`.
pub fn get(smbd: &Smbd, share: &str, remote: &str, local: &Path, timeout: Duration) -> Output {
    let cmd = format!("get {remote} {}", plain_path(local));
    smbclient(smbd, share, &cmd, timeout)
}

/// Starts `smbclient ... -c <commands>` in the background, in its own process group
/// (end it with `run::kill_group(child.id())`), output discarded: for tests that kill
/// a client mid-transfer.
pub fn spawn(smbd: &Smbd, share: &str, commands: &str) -> Child {
    let mut cmd = base_command(smbd, share);
    cmd.arg("-c")
        .arg(commands)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    run::spawn(&mut cmd)
}

/// Like [`smbclient`], as another user (`user%password`, e.g. from
/// [`super::users::User::credentials`]).
pub fn smbclient_as(
    smbd: &Smbd,
    share: &str,
    credentials: &str,
    commands: &str,
    timeout: Duration,
) -> Output {
    let mut cmd = base_command_as(smbd, share, credentials);
    run::run(cmd.arg("-c").arg(commands), timeout)
}

fn base_command(smbd: &Smbd, share: &str) -> Command {
    base_command_as(smbd, share, &smbd.credentials())
}

fn base_command_as(smbd: &Smbd, share: &str, credentials: &str) -> Command {
    let mut cmd = tools::command("smbclient");
    // Our smb.conf keeps the host's client settings (and log file) out of the test.
    cmd.arg("-s")
        .arg(&smbd.conf)
        .arg(smbd.unc(share))
        .arg("-U")
        .arg(credentials);
    cmd
}

/// smbclient splits its command lines on spaces; the harness's paths have none.
fn plain_path(path: &Path) -> String {
    let text = path.to_str().expect("UTF-8 path");
    assert!(
        !text.contains(char::is_whitespace) && !text.contains(';'),
        "path {text:?} cannot be passed to smbclient unquoted"
    );
    text.to_string()
}

/// Output lines of a session, shared with its reader threads.
#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    closed: usize,
}

/// An interactive smbclient fed through a pipe.
///
/// Each command is followed by an unknown "marker" command; smbclient answers
/// `<marker>: command not found` once the command before it is done. `-E` sends
/// smbclient's messages to unbuffered stderr, so the answer is seen at once.
/// smbclient polls its stdin before reading a line and does not notice a second
/// line already in its buffer, so the marker is written only after the pipe has
/// been drained of the command.
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    output: Arc<(Mutex<Lines>, Condvar)>,
    seq: u64,
    /// The smbd connection process serving this session.
    pub server_pid: u32,
}

impl Session {
    /// Connects to `share` and waits until the connection is usable.
    pub fn open(smbd: &Smbd, share: &str, timeout: Duration) -> Session {
        Session::open_as(smbd, share, &smbd.credentials(), timeout)
    }

    /// Like [`Session::open`], as another user (`user%password`).
    pub fn open_as(smbd: &Smbd, share: &str, credentials: &str, timeout: Duration) -> Session {
        let before = smbd.connections();
        let mut cmd = base_command_as(smbd, share, credentials);
        cmd.arg("-E")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = run::spawn(&mut cmd);
        let output = Arc::new((Mutex::new(Lines::default()), Condvar::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ] {
            spawn_reader(pipe.expect("piped"), Arc::clone(&output));
        }
        let stdin = child.stdin.take();
        let mut session = Session {
            child,
            stdin,
            output,
            seq: 0,
            server_pid: 0,
        };
        session.run("pwd", timeout);
        session.server_pid = new_connection(smbd, &before);
        session
    }

    /// Runs one smbclient command; returns the lines it printed. Panics (with the
    /// session's output) if it does not finish within `timeout`.
    pub fn run(&mut self, command: &str, timeout: Duration) -> Vec<String> {
        assert!(!command.contains('\n'), "one command per call");
        self.seq += 1;
        let marker = format!("aio_fork_marker_{}", self.seq);
        let start = self.line_count();
        let deadline = Instant::now() + timeout;
        self.write_line(command);
        self.wait_drained(deadline, command);
        self.write_line(&marker);
        let done = format!("{marker}: command not found");
        let end = self.wait_line(&done, start, deadline, command);
        let guard = self.output.0.lock().expect("session lines");
        guard.lines[start..end].to_vec()
    }

    /// The smbclient process.
    pub fn client_pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the session printed so far.
    pub fn transcript(&self) -> String {
        self.output
            .0
            .lock()
            .expect("session lines")
            .lines
            .join("\n")
    }

    /// Sends `quit` and waits for smbclient to exit (the tree disconnect follows).
    pub fn close(mut self, timeout: Duration) -> Output {
        self.write_line("quit");
        drop(self.stdin.take());
        let start = Instant::now();
        let (status, timed_out) = run::wait_deadline(&mut self.child, timeout);
        Output {
            program: "smbclient session".to_string(),
            status,
            timed_out,
            stdout: String::new(),
            stderr: self.transcript(),
            elapsed: start.elapsed(),
        }
    }

    fn write_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("session open");
        if let Err(e) = writeln!(stdin, "{line}").and_then(|_| stdin.flush()) {
            panic!(
                "smbclient session went away ({e}) before `{line}`:\n{}",
                self.transcript()
            );
        }
    }

    /// Waits until smbclient has read everything written to its stdin.
    fn wait_drained(&mut self, deadline: Instant, command: &str) {
        let fd = self.stdin.as_ref().expect("session open").as_raw_fd();
        loop {
            let mut pending: libc::c_int = 0;
            // SAFETY: FIONREAD writes one int to the pointer we pass; fd is our pipe.
            let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut pending) };
            assert_eq!(rc, 0, "FIONREAD on smbclient's stdin failed");
            if pending == 0 {
                return;
            }
            self.check_deadline(deadline, command);
            thread::sleep(Duration::from_millis(1));
        }
    }

    fn line_count(&self) -> usize {
        self.output.0.lock().expect("session lines").lines.len()
    }

    /// Waits for a line equal to `wanted` at index >= `from`; returns its index.
    fn wait_line(&mut self, wanted: &str, from: usize, deadline: Instant, command: &str) -> usize {
        let output = Arc::clone(&self.output);
        let (lock, cvar) = &*output;
        loop {
            let guard = lock.lock().expect("session lines");
            if let Some(i) = guard.lines[from..].iter().position(|l| l.trim() == wanted) {
                return from + i;
            }
            // Both pipes closed: smbclient is gone and the marker will never come.
            if guard.closed == 2 {
                drop(guard);
                panic!(
                    "smbclient exited while running `{command}`:\n{}",
                    self.transcript()
                );
            }
            let _ = cvar
                .wait_timeout(guard, Duration::from_millis(50))
                .expect("session lines");
            self.check_deadline(deadline, command);
        }
    }

    fn check_deadline(&mut self, deadline: Instant, command: &str) {
        if Instant::now() >= deadline {
            run::kill_group(self.child.id());
            let _ = self.child.wait();
            panic!(
                "smbclient session command `{command}` timed out; session killed:\n{}",
                self.transcript()
            );
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        run::kill_group(self.child.id());
        let _ = self.child.wait();
    }
}

fn spawn_reader(pipe: Box<dyn std::io::Read + Send>, output: Arc<(Mutex<Lines>, Condvar)>) {
    thread::spawn(move || {
        let reader = BufReader::new(pipe);
        for line in reader.split(b'\n').map_while(Result::ok) {
            let text = String::from_utf8_lossy(&line).into_owned();
            let (lock, cvar) = &*output;
            lock.lock().expect("session lines").lines.push(text);
            cvar.notify_all();
        }
        let (lock, cvar) = &*output;
        lock.lock().expect("session lines").closed += 1;
        cvar.notify_all();
    });
}

/// The one connection process that appeared since `before` was taken.
fn new_connection(smbd: &Smbd, before: &[u32]) -> u32 {
    let fresh: Vec<u32> = smbd
        .connections()
        .into_iter()
        .filter(|pid| !before.contains(pid))
        .collect();
    assert_eq!(
        fresh.len(),
        1,
        "expected exactly one new smbd connection process for the session, found {fresh:?} \
         (was another client connecting at the same time?)"
    );
    fresh[0]
}
