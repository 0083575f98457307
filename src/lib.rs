//! aio_fork: a Samba VFS module that serves a share's asynchronous reads, writes and
//! fsyncs through a bounded pool of forked helper processes.
//!
//! Layout: the folders say on which side of a process boundary code runs, because that
//! decides what it may do.
//! - `abi/`: the edge to smbd's C (bindgen types, smbd functions resolved at load time,
//!   the panic boundary, the log bridge, Samba's profile counters);
//! - `vfs/`: the VFS entry points and their function table per VFS interface, the tevent
//!   requests behind them and their entries in Samba's profile;
//! - `pool/`: the helper pool of one share connection (`Pool::submit`, the one way in:
//!   done at once in smbd from the page cache, queued for a helper, or the next module's;
//!   scheduling, policy, process start-up, timed-out helpers, tevent events, counters,
//!   latency percentiles);
//! - `parent/`: what runs in smbd to start, check, talk to, end and reap the module's processes;
//! - `child/`: what runs in those processes (the helper program `src/bin/aio_fork_helper.rs`:
//!   its zygote, the helpers, their credentials and sandbox), under the rules stated there;
//! - `protocol`: what crosses the sockets between the two sides; `config`: the share's
//!   options, parsed and checked; `xorshift`: cheap random numbers for the helpers' erratic
//!   delays and for tests.
//!
//! Imports go one way: `vfs` uses `pool`, `pool` uses `parent`, `parent` and `child` share
//! only `protocol`; everything in smbd may use `abi`, nothing in `child` does.

#![deny(unsafe_op_in_unsafe_fn)]

mod abi;
mod child;
mod config;
mod parent;
mod pool;
mod protocol;
#[cfg(test)]
mod test_util;
mod vfs;
mod xorshift;

pub use abi::profile_layout::{Layout as ProfileLayout, LAYOUTS as PROFILE_LAYOUTS};
pub use vfs::table::{filled_slots, interface_for_version};

use abi::{ffi, logging, samba};
use std::ffi::{c_void, CString};
use vfs::table as vfs_table;

/// The module's entry point: smbd calls it once when it loads `vfs/<name>.so`.
///
/// # Safety
/// Called by smbd's module loader with its talloc context.
#[no_mangle]
pub unsafe extern "C" fn samba_init_module(_ctx: *mut c_void) -> ffi::NTSTATUS {
    abi::guard::guard(ffi::NT_STATUS_UNSUCCESSFUL, || {
        // SAFETY: runs inside smbd, whose exported functions `register` resolves.
        unsafe { register() }
    })
}

unsafe fn register() -> ffi::NTSTATUS {
    // SAFETY: runs inside smbd's module loader, which exports the functions resolved here.
    unsafe {
        if let Ok(debug) = samba::resolve_debug() {
            logging::install(debug);
        }
        let api = match samba::resolve() {
            Ok(api) => api,
            Err(e) => {
                tracing::error!("aio_fork cannot load: {e}");
                return ffi::NT_STATUS_NOT_SUPPORTED;
            }
        };
        let version = samba::version_string(api);
        let Some(interface) = vfs_table::interface_for_version(&version) else {
            tracing::error!("{}", vfs_table::unknown_release_message(&version));
            return ffi::NT_STATUS_NOT_SUPPORTED;
        };
        let Some(table) = vfs_table::table_for(interface) else {
            return ffi::NT_STATUS_NOT_SUPPORTED;
        };
        abi::profile::init(&version);
        let name = module_name();
        let Ok(cname) = CString::new(name.as_str()) else {
            return ffi::NT_STATUS_UNSUCCESSFUL;
        };
        let status = (api.smb_register_vfs)(interface, cname.as_ptr(), table);
        tracing::debug!(
            name = %name, interface, version = %version, status = format_args!("{status:#x}"),
            "registered"
        );
        status
    }
}

/// The VFS name to register: the file's own base name (`aio_fork.so` → "aio_fork"), so the
/// module can also be installed beside Samba's C module, e.g. as `aio_fork_rs.so`.
fn module_name() -> String {
    abi::module_file::path().map_or_else(|| "aio_fork".into(), |p| name_from_path(&p))
}

fn name_from_path(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = base.strip_suffix(".so").unwrap_or(base);
    let base = base.strip_prefix("lib").unwrap_or(base);
    if base.is_empty() {
        "aio_fork".into()
    } else {
        base.into()
    }
}

/// The helper program's entry point (`src/bin/aio_fork_helper.rs`).
///
/// # Safety
/// `argv` holds `argc` NUL-terminated strings, as the C runtime passes them.
pub unsafe fn helper_program_main(
    argc: libc::c_int,
    argv: *const *const libc::c_char,
) -> libc::c_int {
    // SAFETY: as the caller promises.
    unsafe { child::zygote::main(argc, argv) }
}

#[cfg(test)]
mod tests {
    use super::name_from_path;

    #[test]
    fn registration_name_is_the_file_base_name() {
        assert_eq!(
            name_from_path("/usr/lib/x86_64-linux-gnu/samba/vfs/aio_fork.so"),
            "aio_fork"
        );
        assert_eq!(
            name_from_path("/usr/lib/samba/vfs/aio_fork_rs.so"),
            "aio_fork_rs"
        );
        assert_eq!(name_from_path("target/release/libaio_fork.so"), "aio_fork");
        assert_eq!(name_from_path(".so"), "aio_fork");
    }
}
