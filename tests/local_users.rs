//! Local users: a shell user who is also the SMB user (same uid, no groups, no
//! capabilities) cannot reach into that user's zygote and helpers, whatever
//! `fs.suid_dumpable` says.
//!
//! - `same_uid_user_cannot_reach_helpers`: in a user-mode Linux guest (the sysctl is not
//!   namespaced; there it is the guest kernel's, the host's stays as it is), with
//!   `fs.suid_dumpable` at 0 and then at 1, alice keeps a session with helpers open
//!   (`min helpers = 2`), and a process of hers (the test binary run again with her uid
//!   and gid, no supplementary groups, no capabilities) tries five ways in against each
//!   of her module processes (zygote, helpers): PTRACE_SEIZE and stop it, read
//!   /proc/PID/mem, read /proc/PID/environ, list /proc/PID/fd (and reopen what it lists),
//!   and process_vm_readv. Each must be refused. The same five against an ordinary
//!   process of hers (`sleep`, holding a file open) must all succeed: the positive control
//!   that shows the probes can succeed at all (Yama's ptrace_scope, if the guest kernel has
//!   it, is set to 0 for the run). The module processes are started under each setting
//!   (dumpability is decided at exec and credential changes, not later).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::client::Session;
use common::namespace::{run_in_uml, NsContext};
use common::procs;
use common::run;
use common::smbd::SmbdBuilder;
use common::tools;
use common::users::{self, User};

const TEST: &str = "same_uid_user_cannot_reach_helpers";
/// Set in the environment of the test binary run as the user: which processes to probe
/// (`pid:address,...`), instead of the test.
const PROBE_ENV: &str = "AIO_FORK_SAME_UID_PROBE";
/// Lines the probe prints: `PROBE <pid> <way> allowed|denied <detail>`.
const PROBE_MARK: &str = "PROBE";
const WAYS: [&str; 5] = ["ptrace", "mem", "environ", "fd", "vm_readv"];
const SUID_DUMPABLE: &str = "/proc/sys/fs/suid_dumpable";
const PTRACE_SCOPE: &str = "/proc/sys/kernel/yama/ptrace_scope";
const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn same_uid_user_cannot_reach_helpers() {
    if let Ok(targets) = std::env::var(PROBE_ENV) {
        probe::run(&targets);
        return;
    }
    run_in_uml(TEST, Duration::from_secs(600), &[], &[], same_uid);
}

fn same_uid(ctx: &NsContext) {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("guest kernel {}", kernel.trim());
    match fs::read_to_string(PTRACE_SCOPE) {
        Ok(scope) => {
            println!("yama ptrace_scope was {}: set to 0", scope.trim());
            fs::write(PTRACE_SCOPE, "0").expect("set ptrace_scope");
        }
        Err(_) => println!("no Yama in this kernel"),
    }
    let alice = users::add_unix_users(&ctx.workdir, &["alice"]).remove(0);
    let smbd = SmbdBuilder::without_shares(&ctx.workdir)
        .share(
            "aio",
            &[
                ("vfs objects", "aio_fork"),
                ("aio_fork:inline cached reads", "no"),
                ("aio_fork:min helpers", "2"),
                ("aio_fork:idle timeout", "600"),
            ],
        )
        .start();
    users::add_smb_user(&smbd, &alice);
    let share = smbd.share_path("aio");
    std::os::unix::fs::chown(&share, Some(alice.uid), Some(alice.gid)).expect("chown share");
    fs::write(share.join("data.bin"), vec![42u8; 256 << 10]).expect("seed file");
    let held = ctx.workdir.join("held.txt");
    fs::write(&held, "an ordinary file of alice's\n").expect("write held file");

    let mut problems = Vec::new();
    for setting in ["0", "1"] {
        let mut control = spawn_control(&alice, &held);
        fs::write(SUID_DUMPABLE, setting).expect("set fs.suid_dumpable");
        let now = fs::read_to_string(SUID_DUMPABLE).unwrap_or_default();
        assert_eq!(
            now.trim(),
            setting,
            "fs.suid_dumpable did not take {setting}"
        );
        let mut session = Session::open_as(&smbd, "aio", &alice.credentials(), TIMEOUT);
        let local = ctx.workdir.join(format!("got-{setting}.bin"));
        session.run(&format!("get data.bin {}", local.display()), TIMEOUT);
        let module = module_processes(session.server_pid);
        let mut targets: Vec<(String, u32)> =
            module.iter().map(|p| (p.comm.clone(), p.pid)).collect();
        targets.push(("control (sleep)".to_string(), control.id()));
        let results = probe_as(&alice, &targets);
        println!("fs.suid_dumpable = {setting}: what alice's own process could do");
        for (what, pid) in &targets {
            let row: Vec<String> = WAYS
                .iter()
                .map(|way| match results.get(&(*pid, way.to_string())) {
                    Some((true, detail)) => format!("{way}: ALLOWED ({detail})"),
                    Some((false, detail)) => format!("{way}: denied ({detail})"),
                    None => format!("{way}: no answer"),
                })
                .collect();
            println!("  {what} {pid}: {}", row.join("; "));
            let is_control = *pid == control.id();
            for way in WAYS {
                let allowed = results.get(&(*pid, way.to_string())).map(|r| r.0);
                if is_control && allowed != Some(true) {
                    problems.push(format!(
                        "suid_dumpable {setting}: the control process {pid}: {way} did not \
                         succeed ({allowed:?}): the probe proves nothing"
                    ));
                }
                if !is_control && allowed != Some(false) {
                    problems.push(format!(
                        "suid_dumpable {setting}: {what} {pid}: alice's process could {way} \
                         ({:?})",
                        results.get(&(*pid, way.to_string()))
                    ));
                }
            }
        }
        let zygotes = module
            .iter()
            .filter(|p| p.comm == procs::ZYGOTE_COMM)
            .count();
        let helpers = module.len() - zygotes;
        if zygotes != 1 || helpers < 2 {
            problems.push(format!(
                "suid_dumpable {setting}: {zygotes} zygotes and {helpers} helpers under \
                 alice's connection (want 1 and at least 2)"
            ));
        }
        let _ = session.close(TIMEOUT);
        let _ = control.kill();
        let _ = control.wait();
        smbd.wait_idle(TIMEOUT);
    }
    fs::write(SUID_DUMPABLE, "0").expect("reset fs.suid_dumpable");
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

/// The module processes (zygote and helpers) under connection `conn`, once the zygote
/// and `min helpers` are there and set up.
fn module_processes(conn: u32) -> Vec<procs::Proc> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let found: Vec<procs::Proc> = procs::snapshot()
            .into_iter()
            .filter(|p| {
                p.is_live()
                    && p.ppid == conn
                    && (p.comm == procs::ZYGOTE_COMM || p.comm == procs::HELPER_COMM)
            })
            .collect();
        let helpers = found
            .iter()
            .filter(|p| p.comm == procs::HELPER_COMM)
            .count();
        let settled = found.iter().all(|p| sandboxed(p.pid));
        if (helpers >= 2 && settled) || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` has entered its seccomp filter (its set-up is over).
fn sandboxed(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().eq(["Seccomp:", "2"]))
        })
        .unwrap_or(false)
}

/// An ordinary process of `user`: `sleep`, with `held` open on its standard input.
fn spawn_control(user: &User, held: &Path) -> Child {
    fs::set_permissions(held, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod held file");
    let mut cmd = tools::command("sleep");
    cmd.arg("600")
        .uid(user.uid)
        .gid(user.gid)
        .stdin(fs::File::open(held).expect("open held file"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    run::spawn(&mut cmd)
}

/// A readable address in `pid`'s memory, read by root from /proc/PID/maps, for the probes
/// that read memory: a helper's shared buffer (what it shares with smbd), else the start
/// of the first readable mapping.
fn readable_address(pid: u32) -> u64 {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let readable = |l: &&str| {
        l.split_whitespace()
            .nth(1)
            .is_some_and(|p| p.starts_with('r'))
    };
    maps.lines()
        .filter(readable)
        .find(|l| l.contains("/memfd:aio_fork_buffer"))
        .or_else(|| maps.lines().find(readable))
        .and_then(|l| u64::from_str_radix(l.split('-').next()?, 16).ok())
        .unwrap_or(0)
}

/// Runs this test binary again as `user` (its uid and gid, no supplementary groups; with
/// no root id left the kernel gives it no capabilities) to probe `targets`: what it found,
/// per (pid, way): allowed, and what it saw or the error.
fn probe_as(user: &User, targets: &[(String, u32)]) -> BTreeMap<(u32, String), (bool, String)> {
    let spec: Vec<String> = targets
        .iter()
        .map(|(_, pid)| format!("{pid}:{:x}", readable_address(*pid)))
        .collect();
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(PROBE_ENV, spec.join(","))
        .uid(user.uid)
        .gid(user.gid)
        .current_dir("/");
    let out = run::run(&mut cmd, TIMEOUT);
    assert!(out.success(), "the probe failed:\n{}", out.describe());
    let ids = out
        .stdout
        .lines()
        .find(|l| l.starts_with("PROBER "))
        .unwrap_or("PROBER ?");
    println!("  ({ids})");
    let mut results = BTreeMap::new();
    for line in out.stdout.lines() {
        let mut words = line.splitn(5, ' ');
        if words.next() != Some(PROBE_MARK) {
            continue;
        }
        let (Some(pid), Some(way), Some(verdict)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        let detail = words.next().unwrap_or("").to_string();
        results.insert(
            (pid.parse().expect("pid"), way.to_string()),
            (verdict == "allowed", detail),
        );
    }
    results
}

/// The probing side: runs as the user, tries each way into each target and prints one
/// line per try.
mod probe {
    use std::fs;
    use std::io;
    use std::os::fd::AsRawFd;

    pub fn run(spec: &str) {
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        // On a line of its own: libtest's "test ... " has no newline.
        println!(
            "\nPROBER Uid {} Gid {} Groups [{}] CapEff {} CapPrm {}",
            field("Uid:"),
            field("Gid:"),
            field("Groups:"),
            field("CapEff:"),
            field("CapPrm:")
        );
        for target in spec.split(',') {
            let (pid, addr) = target.split_once(':').expect("pid:address");
            let pid: i32 = pid.parse().expect("pid");
            let addr = u64::from_str_radix(addr, 16).expect("address");
            report(pid, "ptrace", seize_and_stop(pid));
            report(pid, "mem", read_mem(pid, addr));
            report(pid, "environ", read_environ(pid));
            report(pid, "fd", list_fds(pid));
            report(pid, "vm_readv", vm_readv(pid, addr));
        }
    }

    fn report(pid: i32, way: &str, result: io::Result<String>) {
        match result {
            Ok(detail) => println!("{} {pid} {way} allowed {detail}", super::PROBE_MARK),
            Err(e) => println!("{} {pid} {way} denied {e}", super::PROBE_MARK),
        }
    }

    fn check(r: libc::c_long) -> io::Result<libc::c_long> {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    /// PTRACE_SEIZE, PTRACE_INTERRUPT and waiting for the stop, then letting it go.
    fn seize_and_stop(pid: i32) -> io::Result<String> {
        // SAFETY: ptrace requests on another process; no memory of ours is handed over.
        unsafe {
            check(libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0))?;
            check(libc::ptrace(libc::PTRACE_INTERRUPT, pid, 0, 0))?;
            let mut status = 0;
            let waited = libc::waitpid(pid, &mut status, libc::__WALL);
            let stopped = waited == pid && libc::WIFSTOPPED(status);
            libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
            Ok(if stopped {
                "seized and stopped".to_string()
            } else {
                format!("seized, wait gave {waited} status {status:#x}")
            })
        }
    }

    fn read_mem(pid: i32, addr: u64) -> io::Result<String> {
        let file = fs::File::open(format!("/proc/{pid}/mem"))?;
        let mut buf = [0u8; 16];
        // SAFETY: pread into a stack buffer of its length.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                addr as libc::off_t,
            )
        };
        check(n as libc::c_long)?;
        Ok(format!("{n} bytes at {addr:#x}"))
    }

    fn read_environ(pid: i32) -> io::Result<String> {
        let bytes = fs::read(format!("/proc/{pid}/environ"))?;
        Ok(format!("{} bytes", bytes.len()))
    }

    /// Lists the fd directory, reads where each points, and reopens each one it can.
    fn list_fds(pid: i32) -> io::Result<String> {
        let mut seen = Vec::new();
        let mut reopened = 0;
        for entry in fs::read_dir(format!("/proc/{pid}/fd"))? {
            let path = entry?.path();
            let target = fs::read_link(&path)?;
            if fs::File::open(&path).is_ok() {
                reopened += 1;
            }
            seen.push(target.display().to_string());
        }
        Ok(format!("{} fds {seen:?}, {reopened} reopened", seen.len()))
    }

    fn vm_readv(pid: i32, addr: u64) -> io::Result<String> {
        let mut buf = [0u8; 16];
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: reads into our stack buffer; the remote address is only read by the kernel.
        let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
        check(n as libc::c_long)?;
        Ok(format!("{n} bytes at {addr:#x}"))
    }
}
