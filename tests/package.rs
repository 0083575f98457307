//! The two ways admins install the module, done for real and checked end to end:
//! the Debian package (`scripts/build-deb.sh`, then `dpkg -i` / `dpkg -r`) and
//! `scripts/install-module.sh` (over the C module and beside it, then `--uninstall`).
//!
//! Nothing reaches the host: each test runs in the harness's private namespace, where
//! `/usr`, `/var` and `/etc` are overlays whose writable layers live on a tmpfs of the
//! test. dpkg, dpkg-divert, man-db's trigger and the script write there for real (the
//! package database in /var/lib/dpkg included), and it all vanishes with the namespace.
//! The checks: the C module is diverted aside and ours serves a share (`vfs objects =
//! aio_fork`, a 1 MiB put and get compared byte for byte, `registered name=...` and an
//! `aio_fork stats` line in the log), and removal brings back the C module's exact bytes.
//! A third test has each refuse to install over the other, cleanly.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use common::module::{self, ModuleKind};
use common::namespace::{run_in_namespace, NsContext};
use common::run::{self, Output};
use common::smbd::{Smbd, SmbdBuilder};
use common::{client, data, samba_root, stats, tools};

const PACKAGE: &str = "samba-vfs-aio-fork-rs";
/// Where the package and the scripts put the module (Debian's MODULESDIR/vfs).
const VFS_DIR: &str = "/usr/lib/x86_64-linux-gnu/samba/vfs";
const MAN_PAGE: &str = "/usr/share/man/man8/aio_fork.8.gz";
/// Where the diverted C module goes (dpkg-divert's default name).
const DIVERTED_SUFFIX: &str = ".distrib";
const FILE_SIZE: u64 = 1 << 20;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
/// The .deb, built by the outer side (it needs the network the namespace lacks, the
/// first time, to install cargo-deb) at a path the inner side can derive.
const DEB: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/target/debian/samba-vfs-aio-fork-rs_",
    env!("CARGO_PKG_VERSION"),
    "-1_amd64.deb"
);
/// The harness's marker for its inner side (namespace.rs, ENV_IN_NS).
const ENV_IN_NS: &str = "AIO_FORK_IN_NS";

// Short test names: the work dir's name holds it, and smbd's socket paths under it
// must fit in a sockaddr_un (108 bytes).
#[test]
fn deb_package_lifecycle() {
    if not_applicable() {
        return;
    }
    if std::env::var_os(ENV_IN_NS).is_none() {
        build_deb();
    }
    run_in_namespace(
        "deb_package_lifecycle",
        Duration::from_secs(10 * 60),
        package_body,
    );
}

#[test]
fn install_script_lifecycle() {
    if not_applicable() {
        return;
    }
    run_in_namespace(
        "install_script_lifecycle",
        Duration::from_secs(10 * 60),
        script_body,
    );
}

#[test]
fn deb_script_conflicts() {
    if not_applicable() {
        return;
    }
    if std::env::var_os(ENV_IN_NS).is_none() {
        build_deb();
    }
    run_in_namespace(
        "deb_script_conflicts",
        Duration::from_secs(10 * 60),
        conflicts_body,
    );
}

/// The package and the script install into the host's Samba; a run against another
/// release's root file system (AIO_FORK_SAMBA_ROOT) has no dpkg database to test.
fn not_applicable() -> bool {
    if let Some(root) = samba_root::root() {
        println!(
            "package tests check the host's Samba installation; not run against {}",
            root.display()
        );
        return true;
    }
    false
}

/// Once per test binary: the tests run in parallel threads, and two `cargo deb` at once
/// would write the same .deb (and, the first time, install cargo-deb twice).
fn build_deb() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(build_deb_now);
}

fn build_deb_now() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-deb.sh");
    // A release build (about 30 s from scratch) and, the first time, cargo-deb.
    let out = run::run_echo(
        &mut std::process::Command::new(script),
        Duration::from_secs(15 * 60),
    );
    assert!(out.success(), "build-deb.sh failed:\n{}", out.describe());
    assert_eq!(
        out.stdout.lines().last().map(str::trim),
        Some(DEB),
        "build-deb.sh reported another .deb than the test expects"
    );
}

fn package_body(ctx: &NsContext) {
    let c_module = reveal_c_module();
    // The .deb lives in the checkout, which could sit under an overlaid directory.
    let deb = ctx.workdir.join("package.deb");
    fs::copy(DEB, &deb).expect("copy the .deb into the work dir");
    private_system(&ctx.workdir);

    let target = vfs_file("aio_fork");
    let diverted = diverted_path(&target);

    checked(tools::command("dpkg").arg("-i").arg(&deb), "dpkg -i");
    assert!(
        dpkg_status().contains("install ok installed"),
        "dpkg -s {PACKAGE} after install: {}",
        dpkg_status()
    );
    assert_eq!(diverter(&target), PACKAGE, "diversion of {target:?}");
    assert_eq!(
        read(&diverted),
        c_module,
        "the C module must be kept, unchanged, at {diverted:?}"
    );
    let ours = read(&target);
    assert_ne!(ours, c_module, "{target:?} is still the C module");
    let helper = target.with_file_name("aio_fork_helper");
    let mode = fs::metadata(&helper).map(|m| m.permissions().mode() & 0o777);
    assert_eq!(
        mode.ok(),
        Some(0o755),
        "the package must install {helper:?} (0755)"
    );
    assert!(
        Path::new(MAN_PAGE).is_file(),
        "the package did not install {MAN_PAGE}"
    );
    let man = checked(
        tools::command("man").args(["-P", "cat", "-l", MAN_PAGE]),
        "man -l",
    );
    for section in ["OPTIONS", "aio_fork:max helpers", "LOGGING", "EXAMPLES"] {
        assert!(man.stdout.contains(section), "man page lacks {section:?}");
    }

    {
        let smbd = SmbdBuilder::without_shares(&ctx.workdir)
            .share("pkg", &[("vfs objects", "aio_fork")])
            .start();
        round_trip(&smbd, "pkg", &ctx.workdir, 1);
        smbd.wait_idle(Duration::from_secs(60));
        check_served(&smbd, "pkg", "aio_fork");
    } // smbd stops here: dpkg -r below replaces the file it has mapped.

    checked(tools::command("dpkg").args(["-r", PACKAGE]), "dpkg -r");
    assert!(
        !dpkg_status().contains("install ok installed"),
        "{PACKAGE} still installed after dpkg -r"
    );
    assert_eq!(diverter(&target), "", "diversion left after dpkg -r");
    assert_eq!(
        read(&target),
        c_module,
        "dpkg -r must put Samba's C module back at {target:?}"
    );
    assert!(!diverted.exists(), "{diverted:?} left after dpkg -r");
    assert!(
        !Path::new(MAN_PAGE).exists(),
        "{MAN_PAGE} left after dpkg -r"
    );
}

fn script_body(ctx: &NsContext) {
    assert_eq!(
        ctx.module.kind,
        ModuleKind::Rust,
        "this test installs the project's module (registering under its file's name); \
         the module under test is Samba's C module"
    );
    let c_module = reveal_c_module();
    // Copies, in case the checkout sits under an overlaid directory.
    let script = ctx.workdir.join("install-module.sh");
    fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-module.sh"),
        &script,
    )
    .expect("copy install-module.sh");
    let built = ctx.workdir.join("libaio_fork.so");
    fs::copy(&ctx.module.path, &built).expect("copy the module under test");
    let helper = common::module::helper_program(&ctx.module).expect("helper program");
    fs::copy(&helper, ctx.workdir.join("aio_fork_helper")).expect("copy the helper program");
    private_system(&ctx.workdir);

    let over = vfs_file("aio_fork");
    let beside = vfs_file("aio_fork_rs");
    let diverted = diverted_path(&over);
    let install = |extra: &[&str]| {
        let mut cmd = tools::command("bash");
        cmd.arg(&script).arg("--module").arg(&built).args(extra);
        checked(&mut cmd, &format!("install-module.sh {extra:?}"));
    };
    install(&[]);
    install(&["--name", "aio_fork_rs"]);
    // Again: an update over an earlier install must work and keep the one diversion.
    install(&[]);

    assert_eq!(diverter(&over), "LOCAL", "diversion of {over:?}");
    assert_eq!(read(&diverted), c_module, "C module kept at {diverted:?}");
    assert_ne!(read(&over), c_module, "{over:?} is still the C module");
    assert_eq!(diverter(&beside), "", "{beside:?} needs no diversion");
    assert_eq!(
        read(&beside),
        read(&over),
        "both names hold the same module"
    );

    {
        let smbd = SmbdBuilder::without_shares(&ctx.workdir)
            .share("over", &[("vfs objects", "aio_fork")])
            .share("beside", &[("vfs objects", "aio_fork_rs")])
            .start();
        round_trip(&smbd, "over", &ctx.workdir, 2);
        round_trip(&smbd, "beside", &ctx.workdir, 3);
        smbd.wait_idle(Duration::from_secs(60));
        check_served(&smbd, "over", "aio_fork");
        check_served(&smbd, "beside", "aio_fork_rs");
    }

    let uninstall = |extra: &[&str]| {
        let mut cmd = tools::command("bash");
        cmd.arg(&script).arg("--uninstall").args(extra);
        checked(
            &mut cmd,
            &format!("install-module.sh --uninstall {extra:?}"),
        );
    };
    uninstall(&[]);
    uninstall(&["--name", "aio_fork_rs"]);
    assert_eq!(diverter(&over), "", "diversion left after --uninstall");
    assert_eq!(
        read(&over),
        c_module,
        "--uninstall must restore the C module"
    );
    assert!(!diverted.exists(), "{diverted:?} left after --uninstall");
    assert!(!beside.exists(), "{beside:?} left after --uninstall");
    let helper = vfs_file("aio_fork").with_file_name("aio_fork_helper");
    assert!(!helper.exists(), "{helper:?} left after --uninstall");
}

/// The package and install-module.sh both divert vfs/aio_fork.so: each must refuse
/// while the other holds the diversion, say why, and leave everything as it was.
fn conflicts_body(ctx: &NsContext) {
    // Also ends libtest's "test ... " line, so that the harness's done mark that follows
    // the body stands on a line of its own.
    println!("package and install-module.sh, each over the other");
    let c_module = reveal_c_module();
    let deb = ctx.workdir.join("package.deb");
    fs::copy(DEB, &deb).expect("copy the .deb into the work dir");
    let script = ctx.workdir.join("install-module.sh");
    fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-module.sh"),
        &script,
    )
    .expect("copy install-module.sh");
    let built = ctx.workdir.join("libaio_fork.so");
    fs::copy(&ctx.module.path, &built).expect("copy the module under test");
    let helper = common::module::helper_program(&ctx.module).expect("helper program");
    fs::copy(&helper, ctx.workdir.join("aio_fork_helper")).expect("copy the helper program");
    private_system(&ctx.workdir);
    let target = vfs_file("aio_fork");
    let script_cmd = |args: &[&str]| {
        let mut cmd = tools::command("bash");
        cmd.arg(&script).args(args);
        run::run(&mut cmd, Duration::from_secs(120))
    };

    // Installed by the script: dpkg -i fails in preinst and cleans up after itself.
    let out = script_cmd(&["--module", built.to_str().expect("UTF-8 path")]);
    assert!(out.success(), "install-module.sh:\n{}", out.describe());
    let installed = read(&target);
    let dpkg = run::run(
        tools::command("dpkg").arg("-i").arg(&deb),
        Duration::from_secs(120),
    );
    assert!(
        !dpkg.success(),
        "dpkg -i must refuse over a LOCAL diversion"
    );
    assert!(
        dpkg.combined().contains("already diverted by 'LOCAL'")
            && dpkg.combined().contains("install-module.sh --uninstall"),
        "dpkg -i should say why and what to do:\n{}",
        dpkg.describe()
    );
    assert!(
        dpkg_status().is_empty() || dpkg_status().ends_with(" not-installed"),
        "package state after the refused install: {}",
        dpkg_status()
    );
    let audit = checked(tools::command("dpkg").arg("--audit"), "dpkg --audit");
    assert!(
        audit.stdout.trim().is_empty(),
        "dpkg database not clean:\n{}",
        audit.stdout
    );
    assert_eq!(diverter(&target), "LOCAL");
    assert_eq!(
        read(&target),
        installed,
        "the refused package changed the module"
    );
    let out = script_cmd(&["--uninstall"]);
    assert!(
        out.success(),
        "install-module.sh --uninstall:\n{}",
        out.describe()
    );
    assert_eq!(read(&target), c_module);

    // Installed by the package: the script refuses both ways and names the package.
    checked(tools::command("dpkg").arg("-i").arg(&deb), "dpkg -i");
    let packaged = read(&target);
    for args in [
        vec!["--module", built.to_str().expect("UTF-8 path")],
        vec!["--uninstall"],
    ] {
        let out = script_cmd(&args);
        assert!(!out.success(), "install-module.sh {args:?} must refuse");
        assert!(
            out.stderr.contains(PACKAGE),
            "install-module.sh {args:?} should name the package:\n{}",
            out.describe()
        );
    }
    assert_eq!(diverter(&target), PACKAGE);
    assert_eq!(
        read(&target),
        packaged,
        "the refused script changed the module"
    );
    checked(tools::command("dpkg").args(["-r", PACKAGE]), "dpkg -r");
    assert_eq!(read(&target), c_module);
    assert_eq!(diverter(&target), "");
}

/// Undoes the harness's bind mount of a vfs directory holding the module under test
/// (these tests install the module themselves), checks that the host's Samba is in
/// its packaged state, and returns the C module's bytes.
fn reveal_c_module() -> Vec<u8> {
    let target = module::installed_path();
    assert_eq!(
        target,
        vfs_file("aio_fork"),
        "smbd's MODULESDIR is not Debian's; the package is laid out for {VFS_DIR}"
    );
    let vfs_dir = target.parent().expect("vfs dir");
    checked(tools::command("umount").arg(vfs_dir), "umount");
    assert_eq!(
        diverter(&target),
        "",
        "the host already has a diversion of {target:?} (package or install-module.sh \
         installed there?): these tests need Samba's packaged state"
    );
    let owner = checked(
        tools::command("dpkg-query").arg("-S").arg(&target),
        "dpkg-query -S",
    );
    assert!(
        owner.stdout.starts_with("samba-vfs-modules:"),
        "{target:?} should belong to samba-vfs-modules: {}",
        owner.stdout
    );
    read(&target)
}

/// Makes /usr, /var and /etc of this mount namespace writable copies of the host's:
/// overlays whose upper layers are on a tmpfs under `workdir`.
fn private_system(workdir: &Path) {
    for dir in ["/usr", "/var", "/etc"] {
        assert!(
            !workdir.starts_with(dir),
            "the test work dir {workdir:?} is under {dir}, which the test overlays; \
             set TMPDIR elsewhere"
        );
    }
    let base = workdir.join("overlays");
    fs::create_dir_all(&base).expect("create overlay dir");
    checked(
        tools::command("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&base),
        "mount tmpfs",
    );
    for dir in ["/usr", "/var", "/etc"] {
        let layer = base.join(dir.trim_start_matches('/'));
        let (upper, work) = (layer.join("upper"), layer.join("work"));
        fs::create_dir_all(&upper).expect("create upper dir");
        fs::create_dir_all(&work).expect("create work dir");
        let options = format!(
            "lowerdir={dir},upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        checked(
            tools::command("mount").args(["-t", "overlay", "overlay", "-o", &options, dir]),
            "mount overlay",
        );
    }
}

/// Puts a 1 MiB file through `share` and gets it back; both must match byte for byte.
fn round_trip(smbd: &Smbd, share: &str, workdir: &Path, seed: u64) {
    let source = workdir.join(format!("{share}.in"));
    let back = workdir.join(format!("{share}.out"));
    data::write_random_file(&source, FILE_SIZE, seed);
    let put = client::put(smbd, share, &source, "file.bin", CLIENT_TIMEOUT);
    assert!(put.success(), "put to {share}:\n{}", put.describe());
    data::compare_files(&source, &smbd.share_path(share).join("file.bin"))
        .unwrap_or_else(|e| panic!("put to {share}: {e}\n{}", smbd.log_tail(30)));
    let get = client::get(smbd, share, "file.bin", &back, CLIENT_TIMEOUT);
    assert!(get.success(), "get from {share}:\n{}", get.describe());
    data::compare_files(&source, &back)
        .unwrap_or_else(|e| panic!("get from {share}: {e}\n{}", smbd.log_tail(30)));
}

/// The log shows the module loaded under `name` and its stats line for `share`, which
/// counts the 1 MiB written (by helpers) and read (by helpers, or from the page cache
/// in smbd: `inline cached reads`).
fn check_served(smbd: &Smbd, share: &str, name: &str) {
    let log = smbd.log_text();
    let token = format!("name={name}");
    assert!(
        log.lines()
            .any(|l| l.contains("registered") && l.split_whitespace().any(|t| t == token)),
        "no `registered {token}` line in smbd's log\n{}",
        smbd.log_tail(40)
    );
    let total = stats::total_for(&smbd.stats(), share);
    println!("{share}: {total:?}");
    assert!(
        total.lines >= 1,
        "no `aio_fork stats share={share}` line at level 2\n{}",
        smbd.log_tail(40)
    );
    assert!(
        total.pwrite_bytes >= FILE_SIZE && total.pread_bytes >= FILE_SIZE,
        "share {share}: the module wrote {} and read {} bytes, expected at least {FILE_SIZE} each",
        total.pwrite_bytes,
        total.pread_bytes
    );
}

fn vfs_file(name: &str) -> PathBuf {
    Path::new(VFS_DIR).join(format!("{name}.so"))
}

fn diverted_path(target: &Path) -> PathBuf {
    let mut text = target.as_os_str().to_owned();
    text.push(DIVERTED_SUFFIX);
    PathBuf::from(text)
}

/// Who diverts `path`: "" for nobody, "LOCAL", or a package name.
fn diverter(path: &Path) -> String {
    let out = checked(
        tools::command("dpkg-divert").arg("--listpackage").arg(path),
        "dpkg-divert --listpackage",
    );
    out.stdout.trim().to_string()
}

fn dpkg_status() -> String {
    let out = run::run(
        tools::command("dpkg-query").args(["-W", "-f=${Status}", PACKAGE]),
        Duration::from_secs(30),
    );
    out.stdout
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn checked(cmd: &mut std::process::Command, what: &str) -> Output {
    let out = run::run(cmd, Duration::from_secs(120));
    assert!(out.success(), "{what} failed:\n{}", out.describe());
    out
}
