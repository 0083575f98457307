//! A private smbd: its own smb.conf, state directories, user database and log, all
//! under one directory; listening on 127.0.0.1:445 of the test's network namespace.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::procs::{self, Proc};
use super::stats::{self, Stats};
use super::{run, samba_root};

/// The SMB user: root, because smbd must be able to become it and it always exists.
pub const USER: &str = "root";
/// Its SMB password (in the private passdb only).
pub const PASSWORD: &str = "AioFork-Test-Pw1";
pub const PORT: u16 = 445;
pub const ADDRESS: &str = "127.0.0.1";

const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A share and its extra options (`path`, `read only = no`, `guest ok = no` are
/// always set).
#[derive(Clone, Debug)]
pub struct Share {
    pub name: String,
    pub options: Vec<(String, String)>,
}

/// Builds the configuration; [`SmbdBuilder::start`] starts smbd.
#[derive(Clone, Debug)]
pub struct SmbdBuilder {
    dir: PathBuf,
    globals: Vec<(String, String)>,
    shares: Vec<Share>,
    /// Extra environment variables for smbd.
    env: Vec<(String, String)>,
}

impl SmbdBuilder {
    /// The standard shares: `plain` (no VFS module), `aio` (`vfs objects = aio_fork`)
    /// and `aio_erratic` (aio_fork with the random 5-24 ms helper delay).
    pub fn new(dir: &Path) -> Self {
        SmbdBuilder::without_shares(dir)
            .share("plain", &[])
            .share("aio", &[("vfs objects", "aio_fork")])
            .share(
                "aio_erratic",
                &[
                    ("vfs objects", "aio_fork"),
                    ("vfs_aio_fork:erratic_testing_mode", "yes"),
                ],
            )
    }

    /// No shares yet; add them with [`SmbdBuilder::share`].
    pub fn without_shares(dir: &Path) -> Self {
        SmbdBuilder {
            dir: dir.to_path_buf(),
            globals: Vec::new(),
            shares: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Adds a share with extra options.
    pub fn share(mut self, name: &str, options: &[(&str, &str)]) -> Self {
        let options = options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.shares.push(Share {
            name: name.to_string(),
            options,
        });
        self
    }

    /// Adds (or, coming later, overrides) a `[global]` option.
    pub fn global(mut self, key: &str, value: &str) -> Self {
        self.globals.push((key.to_string(), value.to_string()));
        self
    }

    /// Sets an environment variable for smbd (e.g. `LD_PRELOAD`, for a benchmark).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The smb.conf text.
    pub fn config_text(&self) -> String {
        let d = self.dir.display();
        let mut text = String::from("[global]\n");
        let base = [
            ("netbios name", "AIOFORKTEST".to_string()),
            ("workgroup", "WORKGROUP".to_string()),
            ("server role", "standalone server".to_string()),
            ("private dir", format!("{d}/private")),
            ("lock directory", format!("{d}/lock")),
            ("state directory", format!("{d}/state")),
            ("cache directory", format!("{d}/cache")),
            ("pid directory", format!("{d}/pid")),
            ("ncalrpc dir", format!("{d}/ncalrpc")),
            ("passdb backend", format!("tdbsam:{d}/private/passdb.tdb")),
            ("smb ports", PORT.to_string()),
            ("interfaces", ADDRESS.to_string()),
            ("bind interfaces only", "yes".to_string()),
            ("load printers", "no".to_string()),
            ("printcap name", "/dev/null".to_string()),
            ("disable spoolss", "yes".to_string()),
            // SMB1 suites (raw.*, base.*) need NT1.
            ("server min protocol", "NT1".to_string()),
            ("log file", format!("{d}/log.smbd")),
            ("max log size", "0".to_string()),
            // The module's stats lines are debug class aio_fork, level 2.
            ("log level", "1 aio_fork:5".to_string()),
        ];
        for (key, value) in base
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .chain(self.globals.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        {
            let _ = writeln!(text, "    {key} = {value}");
        }
        for share in &self.shares {
            let _ = writeln!(text, "\n[{}]", share.name);
            let _ = writeln!(
                text,
                "    path = {}",
                self.share_path(&share.name).display()
            );
            let _ = writeln!(text, "    read only = no\n    guest ok = no");
            for (key, value) in &share.options {
                let _ = writeln!(text, "    {key} = {value}");
            }
        }
        text
    }

    fn share_path(&self, share: &str) -> PathBuf {
        self.dir.join("shares").join(share)
    }

    /// Writes the configuration, adds the user, starts smbd and waits for its port.
    pub fn start(self) -> Smbd {
        self.make_dirs();
        let conf = self.dir.join("smb.conf");
        fs::write(&conf, self.config_text()).expect("write smb.conf");
        add_user(&conf);
        let child = spawn_smbd(&self.dir, &conf, &self.env);
        let smbd = Smbd {
            dir: self.dir.clone(),
            conf,
            shares: self.shares.iter().map(|s| s.name.clone()).collect(),
            child,
        };
        smbd.wait_ready();
        smbd
    }

    fn make_dirs(&self) {
        for sub in ["private", "lock", "state", "cache", "pid", "ncalrpc"] {
            fs::create_dir_all(self.dir.join(sub)).expect("create smbd state dir");
        }
        for share in &self.shares {
            fs::create_dir_all(self.share_path(&share.name)).expect("create share dir");
        }
    }
}

fn add_user(conf: &Path) {
    let input = format!("{PASSWORD}\n{PASSWORD}\n");
    let out = run::run_with_input(
        samba_root::command("smbpasswd")
            .arg("-c")
            .arg(conf)
            .args(["-s", "-a", USER]),
        Duration::from_secs(30),
        input.as_bytes(),
    );
    assert!(out.success(), "smbpasswd failed:\n{}", out.describe());
}

fn spawn_smbd(dir: &Path, conf: &Path, env: &[(String, String)]) -> Child {
    let console = File::create(dir.join("smbd.console")).expect("create smbd.console");
    let console_err = console.try_clone().expect("dup smbd.console");
    let mut cmd = samba_root::command("smbd");
    cmd.arg("-s")
        .arg(conf)
        .args(["-F", "--no-process-group"])
        .stdin(Stdio::null())
        .stdout(console)
        .stderr(console_err)
        .envs(env.iter().map(|(k, v)| (k, v)));
    // Its own process group: stopping it can then take every child along.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    run::spawn(&mut cmd)
}

/// A running smbd; stopped (with all its children) on drop.
#[derive(Debug)]
pub struct Smbd {
    pub dir: PathBuf,
    pub conf: PathBuf,
    pub shares: Vec<String>,
    child: Child,
}

impl Smbd {
    /// The main smbd's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `//127.0.0.1/<share>`.
    pub fn unc(&self, share: &str) -> String {
        assert!(
            self.shares.iter().any(|s| s == share),
            "no share {share:?} configured (have {:?})",
            self.shares
        );
        format!("//{ADDRESS}/{share}")
    }

    /// `-U` argument for clients.
    pub fn credentials(&self) -> String {
        format!("{USER}%{PASSWORD}")
    }

    /// The directory a share serves, to check files behind smbd's back.
    pub fn share_path(&self, share: &str) -> PathBuf {
        self.dir.join("shares").join(share)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("log.smbd")
    }

    /// smbd's whole log so far.
    pub fn log_text(&self) -> String {
        let bytes = fs::read(self.log_path()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The last lines of the log and of smbd's console output, for messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let console = fs::read(self.dir.join("smbd.console")).unwrap_or_default();
        format!(
            "--- {} (tail) ---\n{}\n--- smbd console (tail) ---\n{}",
            self.log_path().display(),
            run::tail(&self.log_text(), lines),
            run::tail(&String::from_utf8_lossy(&console), lines)
        )
    }

    /// The `aio_fork stats` lines logged at tree disconnect so far.
    pub fn stats(&self) -> Vec<Stats> {
        stats::at_disconnect(&self.all_stats())
    }

    /// Every `aio_fork stats` line so far, including the running snapshots.
    pub fn all_stats(&self) -> Vec<Stats> {
        stats::parse_log(&self.log_text())
    }

    /// Live per-connection smbd processes.
    pub fn connections(&self) -> Vec<u32> {
        procs::connection_pids(&procs::snapshot(), self.pid())
    }

    /// Waits until no client connection is left and every process in the namespace
    /// is smbd itself, its daemons (notifyd, cleanupd) or the test process: then every
    /// tree disconnect has happened and its stats line is in the log.
    pub fn wait_idle(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let extra = self.unexpected_processes();
            if extra.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "smbd did not become idle within {timeout:?}; still running: {extra:?}\n{}",
                self.log_tail(30)
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn unexpected_processes(&self) -> Vec<Proc> {
        let main = self.pid();
        let me = std::process::id();
        procs::snapshot()
            .into_iter()
            .filter(|p| p.is_live() && p.pid != main && p.pid != me)
            // smbd's own daemons (children not named like connection processes).
            .filter(|p| p.ppid != main || procs::is_smbd_comm(&p.comm))
            .collect()
    }

    fn wait_ready(&self) {
        let addr: SocketAddr = format!("{ADDRESS}:{PORT}").parse().expect("address");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            assert!(
                procs::snapshot()
                    .iter()
                    .any(|p| p.pid == self.pid() && p.is_live()),
                "smbd exited during startup\n{}",
                self.log_tail(40)
            );
            assert!(
                Instant::now() < deadline,
                "smbd did not accept connections on {addr} within {START_TIMEOUT:?}\n{}",
                self.log_tail(40)
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, a grace period, then SIGKILL of smbd's whole process group.
    fn stop(&mut self) {
        run::signal(self.pid(), libc::SIGTERM);
        let (_status, _timed_out) = run::wait_deadline(&mut self.child, STOP_TIMEOUT);
    }
}

impl Drop for Smbd {
    fn drop(&mut self) {
        self.stop();
    }
}
