//! Which module file is under test, and where smbd looks for it.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{run, tools};

/// Overrides the module file under test (e.g. a copy of Samba's C module).
pub const ENV_MODULE: &str = "AIO_FORK_MODULE";
/// In every build of Samba's `vfs_aio_fork.c` (its DEBUG locations), never in ours.
const C_MODULE_MARKER: &str = "source3/modules/vfs_aio_fork.c";
/// File name cargo gives the cdylib in `target/<profile>/`.
pub const CDYLIB_NAME: &str = "libaio_fork.so";

/// Which implementation the module file is: tests check each one's own documented
/// behaviour, so the harness itself can be validated against Samba's C module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleKind {
    /// This project's module: any request size, bounded pool, stats lines.
    Rust,
    /// Samba's own `vfs_aio_fork.c` (recognised by content): requests
    /// over 128 KiB fail, no pool options, no stats lines, helpers are plain forks.
    SambaC,
}

impl ModuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleKind::Rust => "rust",
            ModuleKind::SambaC => "samba-c",
        }
    }

    pub fn parse(text: &str) -> ModuleKind {
        match text {
            "rust" => ModuleKind::Rust,
            "samba-c" => ModuleKind::SambaC,
            other => panic!("unknown module kind {other:?}"),
        }
    }
}

/// The module file under test.
#[derive(Clone, Debug)]
pub struct Module {
    pub path: PathBuf,
    pub kind: ModuleKind,
}

/// `$AIO_FORK_MODULE` if set, else `target/<profile>/libaio_fork.so` next to the test
/// binary (which lives in `target/<profile>/deps/`). Panics if the file is missing.
pub fn locate() -> Module {
    let path = match env::var_os(ENV_MODULE) {
        Some(p) => PathBuf::from(p),
        None => default_path(),
    };
    assert!(
        path.is_file(),
        "module under test not found at {}: build it with `cargo build` (same profile as \
         the tests), or point ${ENV_MODULE} at a module file",
        path.display()
    );
    let path = fs::canonicalize(&path).expect("canonicalize module path");
    let kind = detect_kind(&path);
    Module { path, kind }
}

fn default_path() -> PathBuf {
    let exe = env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("unexpected test binary location {}", exe.display()));
    profile_dir.join(CDYLIB_NAME)
}

/// Samba's C module is recognised by content, wherever it lies (even diverted by a
/// package): its debug messages carry its source file name.
fn detect_kind(path: &Path) -> ModuleKind {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let marker = C_MODULE_MARKER.as_bytes();
    if bytes.windows(marker.len()).any(|w| w == marker) {
        ModuleKind::SambaC
    } else {
        ModuleKind::Rust
    }
}

/// The helper program's file name: installed next to the module file.
pub const HELPER_PROGRAM: &str = "aio_fork_helper";

/// The helper program built with the module (next to it in `target/<profile>/`); `None`
/// for Samba's C module, which needs none.
pub fn helper_program(module: &Module) -> Option<PathBuf> {
    if module.kind != ModuleKind::Rust {
        return None;
    }
    let path = module.path.with_file_name(HELPER_PROGRAM);
    assert!(
        path.is_file(),
        "helper program {} missing next to the module: build it with `cargo build`",
        path.display()
    );
    Some(path)
}

/// smbd's MODULESDIR, from `smbd -b`.
pub fn modules_dir() -> PathBuf {
    let out = run::run(tools::command("smbd").arg("-b"), Duration::from_secs(30));
    assert!(out.success(), "smbd -b failed:\n{}", out.describe());
    out.stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("MODULESDIR:"))
        .map(|dir| PathBuf::from(dir.trim()))
        .unwrap_or_else(|| panic!("no MODULESDIR in `smbd -b` output:\n{}", out.stdout))
}

/// Where `vfs objects = aio_fork` makes smbd load the module from.
pub fn installed_path() -> PathBuf {
    modules_dir().join("vfs").join("aio_fork.so")
}
