//! The smbd functions the module calls, resolved once at load time with `dlsym`.
//!
//! Not linking them keeps one build loadable into several Samba releases (their private
//! libraries version every symbol per release) and lets unit tests link without smbd.

use crate::abi::ffi;
use std::ffi::{c_void, CStr};
use std::sync::OnceLock;

pub struct SambaApi {
    pub smb_register_vfs: unsafe extern "C" fn(i32, *const i8, *const c_void) -> ffi::NTSTATUS,
    pub smb_vfs_call_connect: Resolved<ffi::smb_vfs_call_connect_fn>,
    pub smb_vfs_call_disconnect: Resolved<ffi::smb_vfs_call_disconnect_fn>,
    pub smb_vfs_call_pread_send: Resolved<ffi::smb_vfs_call_pread_send_fn>,
    pub smb_vfs_call_pwrite_send: Resolved<ffi::smb_vfs_call_pwrite_send_fn>,
    pub smb_vfs_call_fsync_send: Resolved<ffi::smb_vfs_call_fsync_send_fn>,
    pub pread_recv: Resolved<ffi::smb_vfs_rw_recv_fn>,
    pub pwrite_recv: Resolved<ffi::smb_vfs_rw_recv_fn>,
    pub fsync_recv: Resolved<ffi::smb_vfs_fsync_recv_fn>,
    pub fsp_get_io_fd: Resolved<ffi::fsp_get_io_fd_fn>,
    pub fsp_get_pathref_fd: Resolved<ffi::fsp_get_pathref_fd_fn>,
    /// The next module's functions of the slots `vfs::guarded` fills.
    pub next: NextCalls,
    pub lp_parm_const_string: Resolved<ffi::lp_parm_const_string_fn>,
    pub lp_servicenumber: Resolved<ffi::lp_servicenumber_fn>,
    pub global_event_context: Resolved<ffi::global_event_context_fn>,
    pub samba_version_string: Resolved<ffi::samba_version_string_fn>,
}

/// `smb_vfs_call_<slot>` of each slot `vfs::guarded` fills: the next module's function.
pub struct NextCalls {
    pub close: Resolved<ffi::aio_fork_close_fn>,
    pub pread: Resolved<ffi::aio_fork_pread_fn>,
    pub pwrite: Resolved<ffi::aio_fork_pwrite_fn>,
    pub fchmod: Resolved<ffi::aio_fork_fchmod_fn>,
    pub fchown: Resolved<ffi::aio_fork_fchown_fn>,
    pub fntimes: Resolved<ffi::aio_fork_fntimes_fn>,
    pub ftruncate: Resolved<ffi::aio_fork_ftruncate_fn>,
    pub fallocate: Resolved<ffi::aio_fork_fallocate_fn>,
    pub fdopendir: Resolved<ffi::aio_fork_fdopendir_fn>,
    pub fget_dos_attributes: Resolved<ffi::aio_fork_fget_dos_attributes_fn>,
    pub fset_dos_attributes: Resolved<ffi::aio_fork_fset_dos_attributes_fn>,
    pub fgetxattr: Resolved<ffi::aio_fork_fgetxattr_fn>,
    pub flistxattr: Resolved<ffi::aio_fork_flistxattr_fn>,
    pub fremovexattr: Resolved<ffi::aio_fork_fremovexattr_fn>,
    pub fsetxattr: Resolved<ffi::aio_fork_fsetxattr_fn>,
    pub openat: Resolved<ffi::aio_fork_openat_fn>,
    pub mkdirat: Resolved<ffi::aio_fork_mkdirat_fn>,
    pub unlinkat: Resolved<ffi::aio_fork_unlinkat_fn>,
    pub fstatat: Resolved<ffi::aio_fork_fstatat_fn>,
    pub symlinkat: Resolved<ffi::aio_fork_symlinkat_fn>,
    pub linkat: Resolved<ffi::aio_fork_linkat_fn>,
    pub mknodat: Resolved<ffi::aio_fork_mknodat_fn>,
    pub stat: Resolved<ffi::aio_fork_stat_fn>,
    pub lstat: Resolved<ffi::aio_fork_lstat_fn>,
}

impl NextCalls {
    fn resolve() -> Result<NextCalls, String> {
        Ok(NextCalls {
            close: sym("smb_vfs_call_close")?,
            pread: sym("smb_vfs_call_pread")?,
            pwrite: sym("smb_vfs_call_pwrite")?,
            fchmod: sym("smb_vfs_call_fchmod")?,
            fchown: sym("smb_vfs_call_fchown")?,
            fntimes: sym("smb_vfs_call_fntimes")?,
            ftruncate: sym("smb_vfs_call_ftruncate")?,
            fallocate: sym("smb_vfs_call_fallocate")?,
            fdopendir: sym("smb_vfs_call_fdopendir")?,
            fget_dos_attributes: sym("smb_vfs_call_fget_dos_attributes")?,
            fset_dos_attributes: sym("smb_vfs_call_fset_dos_attributes")?,
            fgetxattr: sym("smb_vfs_call_fgetxattr")?,
            flistxattr: sym("smb_vfs_call_flistxattr")?,
            fremovexattr: sym("smb_vfs_call_fremovexattr")?,
            fsetxattr: sym("smb_vfs_call_fsetxattr")?,
            openat: sym("smb_vfs_call_openat")?,
            mkdirat: sym("smb_vfs_call_mkdirat")?,
            unlinkat: sym("smb_vfs_call_unlinkat")?,
            fstatat: sym("smb_vfs_call_fstatat")?,
            symlinkat: sym("smb_vfs_call_symlinkat")?,
            linkat: sym("smb_vfs_call_linkat")?,
            mknodat: sym("smb_vfs_call_mknodat")?,
            stat: sym("smb_vfs_call_stat")?,
            lstat: sym("smb_vfs_call_lstat")?,
        })
    }
}

/// Samba's debug log entry points (libsamba-debug).
#[derive(Clone, Copy)]
pub struct DebugApi {
    pub debug_add_class: Resolved<ffi::debug_add_class_fn>,
    pub debuglevel_get_class: Resolved<ffi::debuglevel_get_class_fn>,
    pub dbghdrclass: Resolved<ffi::dbghdrclass_fn>,
    pub dbgtext: Resolved<ffi::dbgtext_fn>,
}

/// bindgen's `*_fn` typedefs are `Option<fn>`; this is the resolved, non-null function.
pub type Resolved<T> = <T as Unwrap>::Fn;

pub trait Unwrap {
    type Fn: Copy;
}
impl<F: Copy> Unwrap for Option<F> {
    type Fn = F;
}

static API: OnceLock<SambaApi> = OnceLock::new();

/// The resolved API. Only valid after `resolve()` succeeded (samba_init_module ensures it:
/// smbd calls no other entry point of a module whose init failed).
pub fn api() -> &'static SambaApi {
    API.get()
        .expect("aio_fork: Samba API used before samba_init_module resolved it")
}

/// Resolves every function; on failure names the first missing symbol.
pub fn resolve() -> Result<&'static SambaApi, String> {
    if let Some(api) = API.get() {
        return Ok(api);
    }
    let api = SambaApi {
        smb_register_vfs: sym("smb_register_vfs")?,
        smb_vfs_call_connect: sym("smb_vfs_call_connect")?,
        smb_vfs_call_disconnect: sym("smb_vfs_call_disconnect")?,
        smb_vfs_call_pread_send: sym("smb_vfs_call_pread_send")?,
        smb_vfs_call_pwrite_send: sym("smb_vfs_call_pwrite_send")?,
        smb_vfs_call_fsync_send: sym("smb_vfs_call_fsync_send")?,
        // Samba 4.17-4.23 export the first name; from 4.24 it is a macro over the second.
        pread_recv: sym_either("smb_vfs_call_pread_recv", "SMB_VFS_PREAD_RECV")?,
        pwrite_recv: sym_either("smb_vfs_call_pwrite_recv", "SMB_VFS_PWRITE_RECV")?,
        fsync_recv: sym_either("smb_vfs_call_fsync_recv", "SMB_VFS_FSYNC_RECV")?,
        fsp_get_io_fd: sym("fsp_get_io_fd")?,
        fsp_get_pathref_fd: sym("fsp_get_pathref_fd")?,
        next: NextCalls::resolve()?,
        lp_parm_const_string: sym("lp_parm_const_string")?,
        lp_servicenumber: sym("lp_servicenumber")?,
        global_event_context: sym("global_event_context")?,
        samba_version_string: sym("samba_version_string")?,
    };
    Ok(API.get_or_init(|| api))
}

/// The debug functions alone: logging can work even when the rest of the API cannot.
pub fn resolve_debug() -> Result<DebugApi, String> {
    Ok(DebugApi {
        debug_add_class: sym("debug_add_class")?,
        debuglevel_get_class: sym("debuglevel_get_class")?,
        dbghdrclass: sym("dbghdrclass")?,
        dbgtext: sym("dbgtext")?,
    })
}

/// The function exported under `name` or, if smbd has none by that name, under `other`
/// (a function renamed between releases, same signature).
fn sym_either<F: Copy>(name: &str, other: &str) -> Result<F, String> {
    sym(name)
        .or_else(|_| sym(other))
        .map_err(|_| format!("smbd exports neither '{name}' nor '{other}'"))
}

/// Looks `name` up in the process (smbd and the libraries it loaded).
fn sym<F: Copy>(name: &str) -> Result<F, String> {
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
    let cname = std::ffi::CString::new(name).map_err(|e| e.to_string())?;
    // SAFETY: dlsym with RTLD_DEFAULT and a valid C string only reads the loader's tables.
    let ptr = unsafe { libc::dlsym(libc::RTLD_DEFAULT, cname.as_ptr()) };
    if ptr.is_null() {
        return Err(format!("smbd does not export '{name}'"));
    }
    // SAFETY: F is a function pointer type of pointer size (asserted) whose C prototype
    // in samba-headers/samba_abi.h matches the exported symbol.
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&ptr) })
}

/// `samba_version_string()`, e.g. "4.17.12-Debian".
pub fn version_string(api: &SambaApi) -> String {
    // SAFETY: returns a static C string owned by libsmbconf.
    let s = unsafe { (api.samba_version_string)() };
    if s.is_null() {
        return String::new();
    }
    // SAFETY: non-null, NUL-terminated, static.
    unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
}
