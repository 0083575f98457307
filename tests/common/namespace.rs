//! Running a test inside its own network, mount and PID namespace.
//!
//! The test function calls [`run_in_namespace`]. On the outside it re-executes the
//! current test binary, for that one test, under `unshare`; inside (marked by an
//! environment variable) the same function sets the namespace up and runs the body.
//! Port 445, the bind mount over Samba's module file and every process the test
//! starts exist only in there: when the test process (PID 1 inside) exits, the
//! kernel kills whatever is left, and the host never sees any of it.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::id as process_id;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::module::{self, Module, ModuleKind};
use super::{run, samba_root, tools};

/// Set (to 1) in the environment of the re-executed test binary.
const ENV_IN_NS: &str = "AIO_FORK_IN_NS";
/// The per-test scratch directory, created and removed by the outer side.
const ENV_WORKDIR: &str = "AIO_FORK_NS_WORKDIR";
/// Which implementation the module is, detected outside before the bind mount.
const ENV_KIND: &str = "AIO_FORK_MODULE_KIND";
/// Printed by the inner side after the body returned: proves the body really ran
/// (a wrong test name would otherwise run zero tests and "pass").
const DONE_MARK: &str = "AIO_FORK_NS_BODY_COMPLETED";
/// Set when the module is to be installed beside Samba's modules under this name
/// (see [`Install::Beside`]); absent: bind-mounted over `vfs/aio_fork.so`.
const ENV_INSTALL_AS: &str = "AIO_FORK_INSTALL_AS";
/// The name [`run_program_in_namespace`] gives its body in the done mark.
const PROGRAM_NAME: &str = "main program";

/// Where the module under test appears to smbd inside the namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Install {
    /// Bind-mounted over Samba's `vfs/aio_fork.so`: `vfs objects = aio_fork` loads it.
    OverAioFork,
    /// Added as `vfs/<name>.so` while every Samba module stays, the C `aio_fork`
    /// included (`vfs objects = <name>` loads ours; the module registers under its
    /// file's base name). A copy of the vfs directory with the file added is
    /// bind-mounted over it. For side-by-side comparisons in one smbd.
    Beside(String),
}

/// What the test body gets inside the namespace.
#[derive(Debug)]
pub struct NsContext {
    /// The module file under test, already bind-mounted where smbd loads it.
    pub module: Module,
    /// Scratch directory for this test; removed by the outer side afterwards.
    pub workdir: PathBuf,
}

/// Runs `body` inside a private namespace. `test_name` must be the test function's
/// path as libtest knows it (for a top-level test, the function name). The outer
/// side kills the namespace after `limit`.
pub fn run_in_namespace(test_name: &str, limit: Duration, body: impl FnOnce(&NsContext)) {
    if env::var_os(ENV_IN_NS).is_some() {
        let ctx = enter();
        body(&ctx);
        // On a line of its own even if the body printed no newline (libtest's
        // "test X ... " line has none).
        println!("\n{DONE_MARK} {test_name}");
    } else {
        let libtest_args = ["--exact", test_name, "--include-ignored", "--nocapture"];
        let args: Vec<OsString> = libtest_args.iter().map(OsString::from).collect();
        run_outer(test_name, &args, &Install::OverAioFork, limit);
    }
}

/// For a program without libtest (a `harness = false` bench): runs `body` inside a
/// private namespace, the module installed as `install` says. The outer side
/// re-executes the program with its own command-line arguments and kills the
/// namespace after `limit`; it panics if the inner side failed.
pub fn run_program_in_namespace(limit: Duration, install: Install, body: impl FnOnce(&NsContext)) {
    if env::var_os(ENV_IN_NS).is_some() {
        let ctx = enter();
        body(&ctx);
        println!("\n{DONE_MARK} {PROGRAM_NAME}");
    } else {
        let args: Vec<OsString> = env::args_os().skip(1).collect();
        run_outer(PROGRAM_NAME, &args, &install, limit);
    }
}

fn run_outer(test_name: &str, args: &[OsString], install: &Install, limit: Duration) {
    tools::require_all();
    samba_root::check();
    assert_root();
    let module = module::locate();
    println!(
        "module under test: {} ({})",
        module.path.display(),
        module.kind.as_str()
    );
    let workdir = make_workdir(test_name);
    // A private copy: cargo may rebuild (replace) the binary while tests run, and
    // /proc/self/exe is read here because it survives that.
    let exe = workdir.join("test-binary");
    fs::copy("/proc/self/exe", &exe).expect("copy the test binary");
    let mut cmd = tools::command("unshare");
    cmd.args([
        "--net",
        "--mount",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
    ])
    .arg(&exe)
    .args(args)
    .env(ENV_IN_NS, "1")
    .env(ENV_WORKDIR, &workdir)
    .env(module::ENV_MODULE, &module.path)
    .env(ENV_KIND, module.kind.as_str());
    if test_name != PROGRAM_NAME {
        cmd.arg("--test-threads=1");
    }
    if let Install::Beside(name) = install {
        cmd.env(ENV_INSTALL_AS, name);
    }
    let out = run::run_echo(&mut cmd, limit);
    let _ = fs::remove_dir_all(&workdir);
    check_inner(test_name, &out, limit);
}

fn check_inner(test_name: &str, out: &run::Output, limit: Duration) {
    assert!(
        !out.timed_out,
        "test `{test_name}` did not finish within {limit:?}; its namespace was killed"
    );
    assert!(
        out.success(),
        "test `{test_name}` failed inside its namespace (its output is above)"
    );
    let mark = format!("{DONE_MARK} {test_name}");
    assert!(
        out.stdout.lines().any(|l| l.trim() == mark),
        "the namespaced run did not execute the body of `{test_name}`: is the name given \
         to run_in_namespace exactly the test function's name?"
    );
}

fn assert_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests need root: they create namespaces, bind-mount the module and run smbd"
    );
}

fn make_workdir(test_name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // Short: smbd's unix sockets live below this directory, and a socket path may not
    // exceed 108 bytes.
    let safe: String = test_name
        .chars()
        .take(24)
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let dir = env::temp_dir().join(format!("aio_fork_it.{safe}.{}.{nanos}", process_id()));
    fs::create_dir_all(&dir).expect("create test work dir");
    dir
}

/// Inner side: loopback up, mounts private, module bind-mounted.
fn enter() -> NsContext {
    run_checked(tools::command("ip").args(["link", "set", "lo", "up"]));
    // Without this, mounts could propagate back to the host's mount namespace.
    run_checked(tools::command("mount").args(["--make-rprivate", "/"]));
    let module = Module {
        path: PathBuf::from(env::var_os(module::ENV_MODULE).expect("module path in env")),
        kind: ModuleKind::parse(&env::var(ENV_KIND).expect("module kind in env")),
    };
    let workdir = PathBuf::from(env::var_os(ENV_WORKDIR).expect("work dir in env"));
    match env::var(ENV_INSTALL_AS) {
        Ok(name) => add_module_beside(&module, &name, &workdir),
        Err(_) => bind_module(&module, &workdir),
    }
    NsContext { module, workdir }
}

fn bind_module(module: &Module, workdir: &Path) {
    let target = module::installed_path();
    assert!(
        target.is_file(),
        "{} does not exist: the bind mount needs it as a mount point; install it with `{}`",
        target.display(),
        tools::INSTALL_HINT
    );
    install_in_copy(module, "aio_fork", workdir);
}

/// Copies Samba's vfs module directory into `workdir`, puts the module in it as
/// `<name>.so` (with the helper program beside it, as a package installs it), and
/// bind-mounts the copy over the original.
fn install_in_copy(module: &Module, name: &str, workdir: &Path) {
    let vfs_dir = module::modules_dir().join("vfs");
    let copy = workdir.join("vfs-modules");
    // `cp -a` keeps symlinks as they are (some modules may be links).
    run_checked(tools::command("cp").arg("-a").arg(&vfs_dir).arg(&copy));
    let file = copy.join(format!("{name}.so"));
    let _ = fs::remove_file(&file);
    fs::copy(&module.path, &file).expect("copy module");
    if let Some(helper) = module::helper_program(module) {
        fs::copy(&helper, copy.join(module::HELPER_PROGRAM)).expect("copy helper program");
    }
    run_checked(
        tools::command("mount")
            .arg("--bind")
            .arg(&copy)
            .arg(&vfs_dir),
    );
    let mounted = fs::read(vfs_dir.join(format!("{name}.so"))).expect("read installed module");
    let wanted = fs::read(&module.path).expect("read module under test");
    assert!(
        mounted == wanted,
        "bind mount of {} over {} did not take effect",
        copy.display(),
        vfs_dir.display()
    );
}

fn add_module_beside(module: &Module, name: &str, workdir: &Path) {
    assert!(
        !name.is_empty() && !name.contains('/') && name != "aio_fork",
        "module name {name:?}: use Install::OverAioFork to replace aio_fork"
    );
    install_in_copy(module, name, workdir);
}

fn run_checked(cmd: &mut std::process::Command) {
    let out = run::run(cmd, Duration::from_secs(30));
    assert!(out.success(), "namespace setup failed:\n{}", out.describe());
}
