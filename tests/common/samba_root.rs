//! Optional: run the tests against another Samba release, whose smbd and smbpasswd come
//! from a root file system (e.g. Samba 4.22 from `scripts/testing/samba-rootfs.sh`) instead of
//! the host's installation.
//!
//!     AIO_FORK_SAMBA_ROOT=$(scripts/testing/samba-rootfs.sh) cargo test --test transfers
//!
//! Each such program runs through `scripts/testing/run-in-samba-root.sh`, chrooted into the tree
//! with the module under test bind-mounted over the tree's `vfs/aio_fork.so` and the
//! host's /tmp (where the per-test work dirs live) at the same path inside, so smb.conf,
//! shares and logs need no translation. Clients (smbclient, smbtorture) stay the host's
//! and reach the chrooted smbd over the test namespace's loopback.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::module;

/// The root file system to take smbd and smbpasswd from; unset: the host's Samba.
pub const ENV_SAMBA_ROOT: &str = "AIO_FORK_SAMBA_ROOT";
/// Builds the tree, and names it in failure messages.
const ROOTFS_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/scripts/testing/samba-rootfs.sh"
);
const RUN_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/scripts/testing/run-in-samba-root.sh"
);
/// Written last by samba-rootfs.sh; holds `smbd -V` of the tree.
const STAMP: &str = ".aio_fork-rootfs-complete";

/// The root file system of Samba `release` (an argument of samba-rootfs.sh), built if it
/// is not yet, and its `smbd -V` line.
pub fn built(release: &str) -> (PathBuf, String) {
    // Prints the path at once when the tree is built already; builds it otherwise.
    let out = Command::new(ROOTFS_SCRIPT)
        .arg(release)
        .output()
        .unwrap_or_else(|e| panic!("{ROOTFS_SCRIPT}: {e}"));
    assert!(
        out.status.success(),
        "{ROOTFS_SCRIPT} {release} failed (run it as root with network access):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let stamp = fs::read_to_string(root.join(STAMP)).expect("stamp");
    (root, stamp)
}

/// The root file system in use, if any.
pub fn root() -> Option<PathBuf> {
    env::var_os(ENV_SAMBA_ROOT)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Outer side, before entering the namespace: fails clearly when the tree is not
/// complete, and tells which Samba the test runs against.
pub fn check() {
    let Some(root) = root() else {
        return;
    };
    let version = fs::read_to_string(root.join(STAMP)).unwrap_or_else(|_| {
        panic!(
            "${ENV_SAMBA_ROOT}={}: not a complete Samba root file system; build it with \
             {ROOTFS_SCRIPT} (as root, with network access)",
            root.display()
        )
    });
    println!(
        "smbd from the root file system {} ({})",
        root.display(),
        version.trim()
    );
}

/// The Samba version ("4.22.11") of the root file system in use, from its stamp (`smbd -V`
/// of the tree: "Version 4.22.11-Debian-..."); `None` for the host's Samba.
pub fn version() -> Option<String> {
    let root = root()?;
    let stamp = fs::read_to_string(root.join(STAMP)).ok()?;
    let version = stamp.trim().strip_prefix("Version ")?;
    Some(version.split('-').next()?.to_string())
}

/// The Samba release ("4.22") of the root file system in use; `None` for the host's Samba.
pub fn release() -> Option<String> {
    let version = version()?;
    let mut parts = version.split('.');
    Some(format!("{}.{}", parts.next()?, parts.next()?))
}

/// Per-release variant of a file of expectations when the tests run against a root file
/// system's Samba (outcomes of Samba's own test suites differ between releases):
/// `<stem>-<version>.<ext>` (e.g. expected-4.22.11.txt) if there is one, for a patch
/// release that differs from others of its minor release, else `<stem>-<release>.<ext>`
/// (expected-4.22.txt). For the host's Samba, `default` itself.
pub fn expected_file(default: &str) -> PathBuf {
    let default = Path::new(default);
    let (Some(version), Some(release)) = (version(), release()) else {
        return default.to_path_buf();
    };
    let stem = default.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let ext = default.extension().and_then(|s| s.to_str()).unwrap_or("");
    let exact = default.with_file_name(format!("{stem}-{version}.{ext}"));
    if exact.exists() {
        return exact;
    }
    default.with_file_name(format!("{stem}-{release}.{ext}"))
}

/// A `Command` for Samba program `tool` (smbd, smbpasswd): the host's, or the root file
/// system's with the module under test in place.
pub fn command(tool: &str) -> Command {
    let Some(root) = root() else {
        return super::tools::command(tool);
    };
    let mut cmd = Command::new(RUN_SCRIPT);
    cmd.env("AIO_FORK_ROOTFS", &root);
    // Set on the inner side of the namespace (see namespace.rs).
    if let Some(module) = env::var_os(module::ENV_MODULE) {
        cmd.arg("--module").arg(Path::new(&module));
    }
    cmd.args(["--", tool]);
    cmd
}
