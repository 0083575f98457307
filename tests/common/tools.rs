//! Locating the external programs the tests drive. A missing tool fails the test
//! with the install command: these tests never skip.

use std::env;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian packages that provide every tool below.
pub const INSTALL_HINT: &str = "apt-get install -y samba samba-vfs-modules samba-common-bin \
     smbclient samba-testsuite iproute2 util-linux mount user-mode-linux kmod quota";

/// Every program the harness runs, checked before a test starts.
pub const REQUIRED: &[&str] = &[
    "smbd",
    "smbpasswd",
    "smbclient",
    "smbtorture",
    "unshare",
    "ip",
    "mount",
];

/// sbin directories are searched too: `cargo test` may run with a PATH without them.
const EXTRA_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// The directories tools are looked for in: PATH, then [`EXTRA_DIRS`]. Also the PATH to
/// give a script the tests run, which calls tools by name.
pub fn search_path() -> OsString {
    let path_var = env::var_os("PATH").unwrap_or_default();
    let dirs = env::split_paths(&path_var).chain(EXTRA_DIRS.iter().map(PathBuf::from));
    env::join_paths(dirs).expect("no ':' in a PATH entry")
}

/// Absolute path of `tool`, or a panic that names it and the install command.
pub fn path_of(tool: &str) -> PathBuf {
    for dir in env::split_paths(&search_path()) {
        let candidate = dir.join(tool);
        if is_executable(&candidate) {
            return candidate;
        }
    }
    panic!(
        "required tool `{tool}` not found in PATH nor in {EXTRA_DIRS:?}; \
         install it with `{INSTALL_HINT}` (these tests never skip)"
    );
}

/// A `Command` for `tool`, resolved to its absolute path.
pub fn command(tool: &str) -> Command {
    Command::new(path_of(tool))
}

/// Fails with a clear message if any required tool is missing.
pub fn require_all() {
    for tool in REQUIRED {
        path_of(tool);
    }
}

fn is_executable(path: &Path) -> bool {
    match path.metadata() {
        Ok(meta) => meta.is_file() && meta.permissions().mode() & 0o111 != 0,
        Err(_) => false,
    }
}
