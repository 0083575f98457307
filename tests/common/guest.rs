//! What the block-device tests do inside their user-mode Linux guest: device-mapper
//! devices over the guest's disks, ext4 on them, the kernel's SMB client mounting shares,
//! and a sampler of smbd threads in uninterruptible sleep.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::procs;
use super::run;
use super::smbd::{Smbd, PASSWORD, USER};
use super::tools;

/// Kernel modules (below the guest kernel's `kernel/`) the block-device tests load: the
/// device-mapper targets, and the SMB client with the ciphers and hashes SMB 3 signing
/// needs.
pub const MODULES: &[&str] = &[
    "drivers/md/dm-mod",
    "drivers/md/dm-delay",
    "drivers/md/dm-dust",
    "drivers/md/dm-flakey",
    "drivers/md/dm-log-writes",
    "crypto/hmac",
    "crypto/sha512_generic",
    "crypto/cmac",
    "crypto/ccm",
    "crypto/gcm",
    "crypto/ctr",
    "crypto/ghash-generic",
    "crypto/ecb",
    "crypto/seqiv",
    "fs/smb/client/cifs",
];

/// The guest's n-th disk (0: /dev/ubda).
pub fn disk(n: u8) -> PathBuf {
    PathBuf::from(format!("/dev/ubd{}", (b'a' + n) as char))
}

fn sh(cmd: &str, args: &[&str]) -> run::Output {
    let out = run::run(tools::command(cmd).args(args), Duration::from_secs(120));
    assert!(out.success(), "{cmd} {args:?}:\n{}", out.describe());
    out
}

/// Size of a block device in 512-byte sectors.
pub fn sectors(dev: &Path) -> u64 {
    let out = sh("blockdev", &["--getsz", &dev.to_string_lossy()]);
    out.stdout.trim().parse().expect("blockdev --getsz")
}

/// A device-mapper device; removed on drop.
pub struct Dm {
    pub name: String,
}

impl Dm {
    /// `name` with `table`; its node is made at once (the guest runs no udev).
    pub fn create(name: &str, table: &str) -> Dm {
        sh("dmsetup", &["create", name, "--table", table]);
        sh("dmsetup", &["mknodes", name]);
        Dm {
            name: name.to_string(),
        }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/dev/mapper/{}", self.name))
    }

    /// Holds every I/O to the device until `resume` (a disk, or a path to it, that stopped
    /// answering): whoever waits for it sleeps uninterruptibly.
    pub fn suspend(&self) {
        sh(
            "dmsetup",
            &["suspend", "--nolockfs", "--noflush", &self.name],
        );
    }

    pub fn resume(&self) {
        sh("dmsetup", &["resume", &self.name]);
    }

    /// Swaps the table (applies at once: suspend, load, resume).
    pub fn replace(&self, table: &str) {
        self.suspend();
        sh("dmsetup", &["load", &self.name, "--table", table]);
        self.resume();
    }

    /// `dmsetup message NAME 0 TEXT...` (dm-dust's commands).
    pub fn message(&self, text: &[&str]) -> String {
        let mut args = vec!["message", self.name.as_str(), "0"];
        args.extend_from_slice(text);
        sh("dmsetup", &args).stdout
    }

    /// Reads the device has completed (field 1 of its /sys/block/dm-N/stat).
    pub fn reads_completed(&self) -> u64 {
        let target = fs::read_link(self.path()).ok();
        let name = match target {
            Some(t) => t.file_name().map(|n| n.to_string_lossy().into_owned()),
            None => None,
        };
        let name = name.unwrap_or_else(|| {
            // A node made by `dmsetup mknodes` is a device file: find dm-N by its number.
            let out = sh(
                "dmsetup",
                &["info", "-c", "--noheadings", "-o", "minor", &self.name],
            );
            format!("dm-{}", out.stdout.trim())
        });
        let stat = fs::read_to_string(format!("/sys/block/{name}/stat")).expect("dm stat");
        stat.split_whitespace()
            .next()
            .and_then(|f| f.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Dm {
    fn drop(&mut self) {
        let _ = run::run(
            tools::command("dmsetup").args(["resume", &self.name]),
            Duration::from_secs(10),
        );
    }
}

/// ext4 on `dev`, mounted at `dir` (made if missing).
pub fn ext4(dev: &Path, dir: &Path) {
    ext4_with(dev, dir, "defaults");
}

/// ext4 on `dev`, mounted at `dir` with mount `options`.
pub fn ext4_with(dev: &Path, dir: &Path, options: &str) {
    sh("mkfs.ext4", &["-q", "-F", &dev.to_string_lossy()]);
    fs::create_dir_all(dir).expect("mount point");
    sh(
        "mount",
        &[
            "-o",
            options,
            &dev.to_string_lossy(),
            &dir.to_string_lossy(),
        ],
    );
}

/// The 512-byte sectors of the device a file occupies, extent by extent (`filefrag`).
pub fn file_sectors(path: &Path) -> Vec<(u64, u64)> {
    let out = sh("filefrag", &["-v", "-b512", &path.to_string_lossy()]);
    // "   0:        0..    2047:      34816..     36863:   2048: ..."
    out.stdout
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(':').map(str::trim).collect();
            if fields.len() < 4 || fields[0].parse::<u64>().is_err() {
                return None;
            }
            let (start, end) = fields[2].split_once("..")?;
            Some((start.trim().parse().ok()?, end.trim().parse().ok()?))
        })
        .collect()
}

/// Bind-mounts `from` over `to` (a share's directory onto a directory of a disk).
pub fn bind(from: &Path, to: &Path) {
    fs::create_dir_all(from).expect("bind source");
    fs::create_dir_all(to).expect("bind target");
    sh(
        "mount",
        &["--bind", &from.to_string_lossy(), &to.to_string_lossy()],
    );
}

/// Writes back dirty pages and drops the guest's page cache, so reads go to the disks.
pub fn drop_caches() {
    sh("sync", &[]);
    fs::write("/proc/sys/vm/drop_caches", "3").expect("drop caches");
}

/// `share` mounted at `dir` by the kernel's SMB client with `options` (besides the
/// credentials). `nosharesock` among them gives the mount a connection (and so an smbd
/// process) of its own.
pub fn mount_cifs(smbd: &Smbd, share: &str, dir: &Path, options: &str) {
    fs::create_dir_all(dir).expect("cifs mount point");
    let opts = format!("username={USER},password={PASSWORD},{options}");
    sh(
        "mount",
        &[
            "-t",
            "cifs",
            &smbd.unc(share),
            &dir.to_string_lossy(),
            "-o",
            &opts,
        ],
    );
}

/// Unmounts a cifs mount; false if it did not within `timeout`.
pub fn unmount(dir: &Path, timeout: Duration) -> bool {
    run::run(tools::command("umount").arg(dir), timeout).success()
}

/// The connection process serving each share (`smbstatus -S`).
pub fn share_pids(smbd: &Smbd) -> Vec<(String, u32)> {
    let out = run::run(
        tools::command("smbstatus")
            .arg("-s")
            .arg(&smbd.conf)
            .arg("-S"),
        Duration::from_secs(30),
    );
    out.stdout
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let share = f.next()?.to_string();
            let pid = f.next()?.parse().ok()?;
            Some((share, pid))
        })
        .collect()
}

/// One thread of an smbd process seen in uninterruptible sleep.
#[derive(Clone, Debug)]
pub struct DSample {
    /// Seconds since the sampler started.
    pub at: f64,
    pub pid: u32,
    pub tid: u32,
    pub wchan: String,
    /// Its kernel stack, function names joined by spaces.
    pub stack: String,
}

/// Samples every 50 ms the threads of every process named smbd for state D.
pub struct DSampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(Vec<DSample>, u64)>,
}

impl DSampler {
    pub fn start() -> DSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let start = Instant::now();
            let (mut found, mut rounds) = (Vec::new(), 0u64);
            while !flag.load(Ordering::Relaxed) {
                rounds += 1;
                for p in procs::snapshot()
                    .iter()
                    .filter(|p| procs::is_smbd_comm(&p.comm))
                {
                    found.extend(d_threads(p.pid, start.elapsed().as_secs_f64()));
                }
                thread::sleep(Duration::from_millis(50));
            }
            (found, rounds)
        });
        DSampler { stop, thread }
    }

    /// Every sample seen, and how many rounds were taken.
    pub fn finish(self) -> (Vec<DSample>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("sampler thread")
    }
}

fn d_threads(pid: u32, at: f64) -> Vec<DSample> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| t.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|tid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
            let state = procs::parse_stat(&stat)?.state;
            (state == 'D').then(|| DSample {
                at,
                pid,
                tid,
                wchan: fs::read_to_string(format!("/proc/{pid}/task/{tid}/wchan"))
                    .unwrap_or_default(),
                stack: kernel_stack(pid, tid),
            })
        })
        .collect()
}

/// The function names of a thread's kernel stack (`[<0>] name+0x../0x..` lines).
fn kernel_stack(pid: u32, tid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/task/{tid}/stack"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.split('+').next())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether process `pid` is gone (or a zombie).
pub fn gone(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| procs::parse_stat(&s))
        .map_or(true, |p| !p.is_live())
}
