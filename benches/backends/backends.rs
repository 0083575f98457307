//! The async I/O backends compared, how a share selects each, and the order they run
//! in within one repeat.

use crate::common::module::ModuleKind;
use crate::report;
use crate::workloads;

/// Our module's name in the benchmark's smbd (`vfs objects = aio_fork_rs`).
pub const OUR_MODULE: &str = "aio_fork_rs";

/// One async I/O backend and how a share selects it.
pub struct Backend {
    pub name: &'static str,
    pub vfs_objects: Option<&'static str>,
    /// Further share options (a variant of a module).
    pub options: &'static [(&'static str, &'static str)],
    /// Which helper processes it forks, if any (for the helper-memory section).
    pub helpers: Option<ModuleKind>,
}

pub const BACKENDS: [Backend; 6] = [
    Backend {
        name: report::REFERENCE,
        vfs_objects: None,
        options: &[],
        helpers: None,
    },
    Backend {
        name: "aio_pthread",
        vfs_objects: Some("aio_pthread"),
        options: &[],
        helpers: None,
    },
    Backend {
        name: "io_uring",
        vfs_objects: Some("io_uring"),
        options: &[],
        helpers: None,
    },
    Backend {
        name: "aio_fork_c",
        vfs_objects: Some("aio_fork"),
        options: &[],
        helpers: Some(ModuleKind::SambaC),
    },
    Backend {
        name: OUR_MODULE,
        vfs_objects: Some(OUR_MODULE),
        options: &[],
        helpers: Some(ModuleKind::Rust),
    },
    // Ours with every read sent to a helper (no inline preadv2(RWF_NOWAIT) of cached
    // data): what the inline path is worth, and what a helper round trip costs.
    Backend {
        name: "rs_noinline",
        vfs_objects: Some(OUR_MODULE),
        options: &[("aio_fork:inline cached reads", "no")],
        helpers: Some(ModuleKind::Rust),
    },
];

/// Samba's C aio_fork answers EINVAL to any read or write over 128 KiB
/// (source3/modules/vfs_aio_fork.c: `if (n > 128*1024)`, "TODO: support variable
/// buffers"), which clients see as NT_STATUS_INVALID_PARAMETER: the workloads with larger
/// requests are recorded as its known limit, not run.
pub const KNOWN_LIMITS: [(&str, &[&str], &str); 1] = [(
    "aio_fork_c",
    &[
        workloads::SEQ_READ,
        workloads::SEQ_WRITE,
        workloads::COLD_READ,
        workloads::COLD_READ_MID,
        workloads::SEQ_WRITE_MID,
        workloads::STREAM_READ,
        workloads::MEM_GET,
        workloads::MEM_SMBCLIENT,
    ],
    "expected: Samba's C aio_fork refuses requests over 128 KiB with EINVAL \
     (NT_STATUS_INVALID_PARAMETER; vfs_aio_fork.c: n > 128*1024)",
)];

/// The backends given XFS shares too: the reference, a kernel-async one, and ours.
pub const XFS_BACKENDS: [&str; 3] = [report::REFERENCE, "io_uring", OUR_MODULE];

pub fn by_name(name: &str) -> &'static Backend {
    BACKENDS
        .iter()
        .find(|b| b.name == name)
        .expect("a backend of BACKENDS")
}

/// Share options that select `backend`; `sync_always`: smbd fsyncs after every write.
pub fn share_options(backend: &Backend, sync_always: bool) -> Vec<(&'static str, &'static str)> {
    let mut options = Vec::new();
    if let Some(module) = backend.vfs_objects {
        options.push(("vfs objects", module));
    }
    options.extend_from_slice(backend.options);
    if sync_always {
        // smbd then follows every write with an fsync through the VFS (strict sync
        // is the default; set anyway, since without it "sync always" does nothing).
        options.push(("sync always", "yes"));
        options.push(("strict sync", "yes"));
    }
    options
}

pub fn sync_share(backend: &Backend) -> String {
    format!("{}_sync", backend.name)
}

pub fn xfs_share(backend: &Backend) -> String {
    format!("{}_xfs", backend.name)
}

/// `items` rotated left by `by`: within a repeat every backend runs once, and across
/// repeats (and client counts) each takes every position in turn, so none always runs
/// first (after another workload) or last.
pub fn rotated<T: Copy>(items: &[T], by: usize) -> Vec<T> {
    if items.is_empty() {
        return Vec::new();
    }
    let k = by % items.len();
    items[k..].iter().chain(&items[..k]).copied().collect()
}
