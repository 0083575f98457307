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
    let (module, workdir, exe) = prepare_outer(test_name);
    let mut cmd = tools::command("unshare");
    cmd.args(UNSHARE_ARGS).arg(&exe).args(args);
    for (key, value) in inner_env(&module, &workdir, install) {
        cmd.env(key, value);
    }
    if test_name != PROGRAM_NAME {
        cmd.arg("--test-threads=1");
    }
    let out = run::run_echo(&mut cmd, limit);
    let _ = fs::remove_dir_all(&workdir);
    check_inner(test_name, &out, limit);
}

/// The private namespaces of a test: network, mounts, PIDs (the test is PID 1).
const UNSHARE_ARGS: [&str; 6] = [
    "--net",
    "--mount",
    "--pid",
    "--fork",
    "--kill-child",
    "--mount-proc",
];

/// Checks the host, finds the module and makes the test's scratch directory with a
/// private copy of the test binary in it: cargo may rebuild (replace) the binary while
/// tests run, and /proc/self/exe is read here because it survives that.
fn prepare_outer(test_name: &str) -> (Module, PathBuf, PathBuf) {
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
    let exe = workdir.join("test-binary");
    fs::copy("/proc/self/exe", &exe).expect("copy the test binary");
    (module, workdir, exe)
}

/// What the re-executed test binary learns from its environment.
fn inner_env(module: &Module, workdir: &Path, install: &Install) -> Vec<(&'static str, OsString)> {
    let mut env = vec![
        (ENV_IN_NS, OsString::from("1")),
        (ENV_WORKDIR, workdir.as_os_str().to_owned()),
        (module::ENV_MODULE, module.path.as_os_str().to_owned()),
        (ENV_KIND, OsString::from(module.kind.as_str())),
    ];
    if let Install::Beside(name) = install {
        env.push((ENV_INSTALL_AS, OsString::from(name)));
    }
    env
}

/// The user-mode Linux kernel of Debian's `user-mode-linux` package.
const UML_KERNEL: &str = "linux.uml";
/// What a guest needs besides the kernel: module loading (quota formats, device-mapper
/// targets and the SMB client are modules).
const UML_TOOLS: [&str; 2] = [UML_KERNEL, "insmod"];
/// Its memory: smbd, the test's files (on the guest's tmpfs) and its caches.
const UML_MEMORY: &str = "mem=1536M";

/// Runs `body` as `run_in_namespace` does, but under a Linux kernel of its own: Debian's
/// user-mode Linux, booted on the host's root file system (hostfs, read and written as
/// root), for kernel features the host's kernel may lack (disk quotas: CONFIG_QFMT_V2;
/// device-mapper targets; the kernel's SMB client). `disks` sparse files of the given sizes
/// in MiB are the guest's block devices /dev/ubda, /dev/ubdb, ...; `modules` (paths below
/// the kernel's `kernel/` directory, without `.ko`) are loaded with what they depend on.
/// The scratch directory the body gets is a tmpfs of the guest (unix sockets do not work
/// on hostfs). The guest powers off after the body.
pub fn run_in_uml(
    test_name: &str,
    limit: Duration,
    disks: &[u64],
    modules: &[&str],
    body: impl FnOnce(&NsContext),
) {
    if env::var_os(ENV_IN_NS).is_some() {
        run_in_namespace(test_name, limit, body);
        return;
    }
    let guest = boot_guest(test_name, limit, disks, modules);
    let exit = fs::read_to_string(guest.workdir.join("exit-code")).unwrap_or_default();
    let _ = fs::remove_dir_all(&guest.workdir);
    assert_eq!(
        exit.trim(),
        "0",
        "test `{test_name}` failed in its user-mode Linux guest (exit {:?}; output above)",
        exit.trim()
    );
    check_inner(test_name, &guest.out, limit);
}

/// As `run_in_uml`, for a body that ends by cutting the guest's power (it never returns):
/// `body` gets, besides the context, a directory on the host's file system that outlives
/// the guest, where it records what it expects to find on the disks; after the guest is
/// gone, `verify` gets that directory and the disk images. The body must create
/// `CUT_MARK` in it just before the cut.
pub fn run_in_uml_until_cut(
    test_name: &str,
    limit: Duration,
    disks: &[u64],
    modules: &[&str],
    body: impl FnOnce(&NsContext, &Path),
    verify: impl FnOnce(&Path, &[PathBuf]),
) {
    if env::var_os(ENV_IN_NS).is_some() {
        let ctx = enter();
        let record = ctx.workdir.parent().expect("guest dir").join("record");
        body(&ctx, &record);
        println!("\n{DONE_MARK} {test_name}");
        return;
    }
    let guest = boot_guest(test_name, limit, disks, modules);
    let record = guest.workdir.join("record");
    let cut = record.join(CUT_MARK).exists();
    if cut {
        verify(&record, &guest.disks);
    }
    let _ = fs::remove_dir_all(&guest.workdir);
    assert!(
        !guest.out.timed_out,
        "test `{test_name}` did not finish within {limit:?}"
    );
    assert!(
        cut,
        "test `{test_name}`: the guest ended without cutting its power (output above)"
    );
}

/// The file a power-cut body creates in its record directory right before the cut.
pub const CUT_MARK: &str = "power-cut";

/// A finished guest: its scratch directory (on the host), disks and console output.
struct GuestRun {
    workdir: PathBuf,
    disks: Vec<PathBuf>,
    out: run::Output,
}

/// Boots a guest that runs test `test_name` inside it (see `run_in_uml`).
fn boot_guest(test_name: &str, limit: Duration, disks: &[u64], modules: &[&str]) -> GuestRun {
    for tool in UML_TOOLS {
        tools::path_of(tool);
    }
    let (module, workdir, exe) = prepare_outer(test_name);
    let kernel = tools::command(UML_KERNEL);
    let guest_dir = workdir.join("guest");
    fs::create_dir_all(workdir.join("record")).expect("record dir");
    let mut env = inner_env(&module, &guest_dir, &Install::OverAioFork);
    env.extend(
        ["PATH", "HOME", "RUST_BACKTRACE"]
            .into_iter()
            .filter_map(|key| Some((key, env::var_os(key)?))),
    );
    let exit_file = workdir.join("exit-code");
    let mut script = String::from("#!/bin/sh\n");
    script.push_str(&format!(
        "export PATH=/usr/sbin:/usr/bin:/sbin:/bin\n\
         mount -t proc proc /proc && mount -t sysfs sys /sys\n\
         mkdir -p /dev/shm && mount -t tmpfs tmpfs /dev/shm\n\
         [ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd\n\
         {UML_LOAD}\
         for m in {modules}; do load kernel/$m.ko; done\n\
         mkdir -p {guest} && mount -t tmpfs -o size=1G tmpfs {guest}\n\
         cd {cwd}\n",
        modules = modules.join(" "),
        guest = shell_quote(guest_dir.as_os_str()),
        cwd = shell_quote(env::current_dir().expect("cwd").as_os_str()),
    ));
    script.push_str("env -i");
    for (key, value) in &env {
        script.push_str(&format!(" {key}={}", shell_quote(value)));
    }
    script.push_str(&format!(
        " {}",
        shell_quote(tools::path_of("unshare").as_os_str())
    ));
    for arg in UNSHARE_ARGS {
        script.push_str(&format!(" {arg}"));
    }
    script.push_str(&format!(
        " {} --exact {test_name} --include-ignored --nocapture --test-threads=1\n\
         echo $? > {}\n\
         poweroff -f\n",
        shell_quote(exe.as_os_str()),
        shell_quote(exit_file.as_os_str()),
    ));
    let init = workdir.join("init.sh");
    fs::write(&init, script).expect("write the guest's init");
    fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod init");
    let mut cmd = kernel;
    cmd.args([
        UML_MEMORY,
        "rootfstype=hostfs",
        "rootflags=/",
        "rw",
        "quiet",
    ])
    .arg(format!("init={}", init.display()))
    .args(["con=null", "con0=null,fd:1"]);
    let mut images = Vec::new();
    for (i, mib) in disks.iter().enumerate() {
        let disk = workdir.join(format!("disk{i}.img"));
        fs::File::create(&disk)
            .and_then(|f| f.set_len(mib << 20))
            .expect("create a guest disk");
        cmd.arg(format!("ubd{i}={}", disk.display()));
        images.push(disk);
    }
    let out = run::run_echo(&mut cmd, limit);
    GuestRun {
        workdir,
        disks: images,
        out,
    }
}

/// A guest's `load MODULE`: insmod of a module after what it depends on (from
/// modules.dep), each once.
const UML_LOAD: &str = "dir=/usr/lib/uml/modules/$(uname -r)\n\
    load() { for d in $(grep \"^$1:\" $dir/modules.dep | cut -d: -f2 | tr ' ' '\\n' | tac); do load $d; done; \
    grep -qx \"$1\" /dev/shm/.loaded 2>/dev/null || { insmod $dir/$1 && echo $1 >> /dev/shm/.loaded; }; }\n";

/// `text` in single quotes for sh.
fn shell_quote(text: &std::ffi::OsStr) -> String {
    format!("'{}'", text.to_string_lossy().replace('\'', "'\\''"))
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
