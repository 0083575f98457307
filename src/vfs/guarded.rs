//! smbd's own calls on a share's files, kept off a device known to hang.
//!
//! Around reads and writes smbd makes many calls of its own in its main thread: a file's
//! write time and DOS attributes at close, other xattrs, stat by name, truncate,
//! allocation, opens, directory listings, links and unlinks. On a device that stopped answering, each would
//! wait uninterruptibly, holding the connection, and smbd's exit, for good. Once a helper
//! has been found hanging on a device (`pool::breaker`), these calls on its files answer
//! EIO at once (the client sees NT_STATUS_IO_DEVICE_ERROR) until a probe finds the device
//! answering again. A close still closes, after handing the last reference to a helper
//! (`pool::closing`). While no device hangs, a call costs one look at a thread-local map.
//!
//! `fstat` is not refused: it reads the kernel's inode of an open file (no I/O on local
//! file systems), and Samba 4.17 leaks the descriptor, then panics, when the fstat before a
//! close fails.
//!
//! What stays out of reach: a call that reaches a device before any helper has been seen
//! hanging there (an open or stat of a file whose inode is not cached, a directory listing
//! that updates the access time) waits as on a plain share, since nothing is known yet.
//!
//! The functions here share the contract of the VFS entry points: smbd calls them through
//! the module's table with the arguments its VFS layer documents.
#![allow(clippy::missing_safety_doc)]

use super::ops::pool_of;
use crate::abi::ffi;
use crate::abi::guard::guard;
use crate::abi::samba::api;
use crate::pool::breaker;
use std::ffi::{c_char, c_void};
use std::os::fd::{BorrowedFd, RawFd};

type Handle = *mut ffi::vfs_handle_struct;
type Fsp = *mut ffi::files_struct;
type Name = *const ffi::smb_filename;
type Stat = *mut ffi::stat_ex;

/// NT_STATUS_IO_DEVICE_ERROR: what smbd maps EIO to.
const NT_STATUS_IO_DEVICE_ERROR: ffi::NTSTATUS = 0xC000_0185;

/// The descriptor that names the file of `fsp` (its O_PATH one, always open), or the
/// working directory (the share's root) for none.
unsafe fn fd_of(fsp: *const ffi::files_struct) -> RawFd {
    if fsp.is_null() {
        return libc::AT_FDCWD;
    }
    // SAFETY: a files_struct smbd passed in (the module's contract).
    unsafe { (api().fsp_get_pathref_fd)(fsp) }
}

/// Whether the file open as `fd` is on a device known to hang; counted on the share.
unsafe fn hung(handle: Handle, fd: RawFd) -> bool {
    if !breaker::open_for(fd) {
        return false;
    }
    // SAFETY: the handle smbd passed in (the module's contract).
    if let Some(pool) = unsafe { pool_of(handle) } {
        pool.note_hung_refusal();
    }
    true
}

/// errno EIO and the C failure value `v`.
fn eio<T>(v: T) -> T {
    nix::errno::Errno::EIO.set();
    v
}

/// A guarded slot: `$name(handle, args...)` answers `$refused` when the file named by
/// `$on` (an fsp argument, or `cwd` for a path relative to the share's root) is on a hung
/// device, and otherwise is the next module's `smb_vfs_call_$name`.
macro_rules! guarded {
    ($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty, on $on:tt, refused $refused:expr) => {
        pub unsafe extern "C" fn $name(handle: Handle, $($arg: $ty),*) -> $ret {
            guard($refused, || {
                // SAFETY: arguments as smbd passed them; the next handle per the VFS chain.
                unsafe {
                    if hung(handle, guarded!(@fd $on)) {
                        return eio($refused);
                    }
                    (api().next.$name)((*handle).next, $($arg),*)
                }
            })
        }
    };
    (@fd cwd) => { libc::AT_FDCWD };
    (@fd $fsp:ident) => { fd_of($fsp as *const ffi::files_struct) };
}

guarded!(pread(fsp: Fsp, data: *mut c_void, n: usize, offset: libc::off_t) -> isize, on fsp, refused -1);
guarded!(pwrite(fsp: Fsp, data: *const c_void, n: usize, offset: libc::off_t) -> isize, on fsp, refused -1);
guarded!(fchmod(fsp: Fsp, mode: libc::mode_t) -> i32, on fsp, refused -1);
guarded!(fchown(fsp: Fsp, uid: libc::uid_t, gid: libc::gid_t) -> i32, on fsp, refused -1);
guarded!(fntimes(fsp: Fsp, ft: *mut ffi::smb_file_time) -> i32, on fsp, refused -1);
guarded!(ftruncate(fsp: Fsp, offset: libc::off_t) -> i32, on fsp, refused -1);
guarded!(fallocate(fsp: Fsp, mode: u32, offset: libc::off_t, len: libc::off_t) -> i32, on fsp, refused -1);
guarded!(fdopendir(fsp: Fsp, mask: *const c_char, attr: u32) -> *mut ffi::__dirstream, on fsp, refused std::ptr::null_mut());
guarded!(fget_dos_attributes(fsp: Fsp, dosmode: *mut u32) -> ffi::NTSTATUS, on fsp, refused NT_STATUS_IO_DEVICE_ERROR);
guarded!(fset_dos_attributes(fsp: Fsp, dosmode: u32) -> ffi::NTSTATUS, on fsp, refused NT_STATUS_IO_DEVICE_ERROR);
guarded!(fgetxattr(fsp: Fsp, name: *const c_char, value: *mut c_void, size: usize) -> isize, on fsp, refused -1);
guarded!(flistxattr(fsp: Fsp, list: *mut c_char, size: usize) -> isize, on fsp, refused -1);
guarded!(fremovexattr(fsp: Fsp, name: *const c_char) -> i32, on fsp, refused -1);
guarded!(fsetxattr(fsp: Fsp, name: *const c_char, value: *const c_void, size: usize, flags: i32) -> i32, on fsp, refused -1);
guarded!(openat(dirfsp: *const ffi::files_struct, name: Name, fsp: Fsp, how: *const ffi::vfs_open_how) -> i32, on dirfsp, refused -1);
guarded!(mkdirat(dirfsp: Fsp, name: Name, mode: libc::mode_t) -> i32, on dirfsp, refused -1);
guarded!(unlinkat(dirfsp: Fsp, name: Name, flags: i32) -> i32, on dirfsp, refused -1);
guarded!(fstatat(dirfsp: *const ffi::files_struct, name: Name, sbuf: Stat, flags: i32) -> i32, on dirfsp, refused -1);
guarded!(symlinkat(target: Name, dirfsp: Fsp, name: Name) -> i32, on dirfsp, refused -1);
guarded!(linkat(srcfsp: Fsp, old: Name, dstfsp: Fsp, new: Name, flags: i32) -> i32, on dstfsp, refused -1);
guarded!(mknodat(dirfsp: Fsp, name: Name, mode: libc::mode_t, dev: libc::dev_t) -> i32, on dirfsp, refused -1);
guarded!(stat(name: *mut ffi::smb_filename) -> i32, on cwd, refused -1);
guarded!(lstat(name: *mut ffi::smb_filename) -> i32, on cwd, refused -1);

/// A close always closes. On a hung device a helper gets a duplicate of the descriptor
/// first, so that smbd's close is not the file's last (see `pool::closing`); an `O_PATH`
/// descriptor releases nothing and is closed as it is.
pub unsafe extern "C" fn close(handle: Handle, fsp: Fsp) -> i32 {
    guard(-1, || {
        // SAFETY: arguments as smbd passed them; the next handle per the VFS chain.
        unsafe {
            if breaker::any_open() {
                hand_over_if_hung(handle, fd_of(fsp));
            }
            (api().next.close)((*handle).next, fsp)
        }
    })
}

/// Hands a duplicate of `fd` to a helper of the share if its file is on a hung device and
/// opened for I/O.
unsafe fn hand_over_if_hung(handle: Handle, fd: RawFd) {
    if fd < 0 || !breaker::open_for(fd) {
        return;
    }
    // SAFETY: F_GETFL only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || flags & libc::O_PATH != 0 {
        return;
    }
    // SAFETY: the handle smbd passed in (the module's contract).
    let Some(pool) = (unsafe { pool_of(handle) }) else {
        return;
    };
    // SAFETY: smbd's descriptor of the file, open until its close right after.
    if let Ok(dup) = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned() {
        pool.hand_over_close(dup);
    }
}
