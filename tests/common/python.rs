//! Clients written in Python on Samba's own client library (Debian `python3-samba`:
//! `samba.samba3.libsmb_samba_internal`), for requests smbclient never sends (odd
//! offsets and sizes) and for several requests in flight on one connection.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::run;

/// Debian's interpreter, the one python3-samba installs into (a `python3` found first
/// in PATH, e.g. a pyenv shim, may lack the bindings).
pub const PYTHON: &str = "/usr/bin/python3";
/// What provides the bindings.
pub const INSTALL_HINT: &str = "apt-get install -y python3-samba";

/// `python3 <script>`; fails the test with the install command when the bindings are
/// missing.
pub fn command(script: &Path) -> Command {
    check();
    let mut cmd = Command::new(PYTHON);
    cmd.arg(script);
    cmd
}

/// Checks once per process that the interpreter imports Samba's client library.
pub fn check() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let out = run::run(
            Command::new(PYTHON).args([
                "-c",
                "from samba.samba3 import libsmb_samba_internal, param",
            ]),
            Duration::from_secs(60),
        );
        assert!(
            out.success(),
            "{PYTHON} cannot import Samba's Python client library; install it with \
             `{INSTALL_HINT}` (these tests never skip):\n{}",
            out.describe()
        );
    });
}
