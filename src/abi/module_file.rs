//! The module's own file: where smbd loaded it from, and the helper program beside it.

use std::ffi::{c_void, CStr, CString};

/// The helper program's file name, looked for next to the module file.
pub const HELPER_PROGRAM_NAME: &str = "aio_fork_helper";

/// The helper program: `configured` (`aio_fork:helper program`), else the one in the
/// module file's directory (`<MODULESDIR>/vfs/aio_fork_helper` when installed).
pub fn helper_program(configured: Option<&str>) -> CString {
    let path = match configured {
        Some(p) => p.to_string(),
        None => {
            let module = path().unwrap_or_default();
            let dir = module.rsplit_once('/').map_or(".", |(d, _)| d).to_string();
            format!("{dir}/{HELPER_PROGRAM_NAME}")
        }
    };
    CString::new(path).unwrap_or_else(|_| CString::from(c"/nonexistent"))
}

/// The path smbd loaded this module from.
pub fn path() -> Option<String> {
    // SAFETY: Dl_info is plain C data; all zeroes is a valid value.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the loader's tables for an address inside this library.
    let found = unsafe { libc::dladdr(path as *const c_void, &mut info) } != 0;
    if !found || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dladdr returned a NUL-terminated path owned by the loader.
    Some(
        unsafe { CStr::from_ptr(info.dli_fname) }
            .to_string_lossy()
            .into_owned(),
    )
}
