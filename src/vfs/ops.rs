//! The VFS entry points smbd calls. Each catches panics (none may unwind into C) and
//! answers with an error smbd understands instead.
//!
//! The `unsafe extern "C"` functions here share one contract: smbd calls them through the
//! module's function table with the arguments its VFS layer documents.
#![allow(clippy::missing_safety_doc)]

use crate::abi::ffi;
use crate::abi::guard::guard;
use crate::abi::samba::api;
use crate::config::Config;
use crate::pool::Pool;
use crate::protocol::Op;
use crate::vfs::request::{self, SendArgs};
use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr;
use std::rc::Rc;

/// What the module keeps per share connection, in `handle->data`.
struct Share {
    pool: Rc<Pool>,
    /// The share's service number (`lp_servicenumber`), smbd's `SNUM(conn)`.
    snum: i32,
}

/// The share connection's state.
unsafe fn share_of<'a>(handle: *mut ffi::vfs_handle_struct) -> Option<&'a Share> {
    // SAFETY: arguments as smbd's VFS layer passes them (the module's contract).
    unsafe { ((*handle).data as *const Share).as_ref() }
}

/// The share's pool.
pub(super) unsafe fn pool_of(handle: *mut ffi::vfs_handle_struct) -> Option<Rc<Pool>> {
    // SAFETY: arguments as smbd's VFS layer passes them (the module's contract).
    unsafe { share_of(handle).map(|s| s.pool.clone()) }
}

unsafe extern "C" fn free_pool(data: *mut *mut c_void) {
    guard((), || {
        // SAFETY: smbd passes &handle->data, which holds our Box<Share> or NULL.
        unsafe {
            let boxed = std::mem::replace(&mut *data, ptr::null_mut()) as *mut Share;
            if !boxed.is_null() {
                drop(Box::from_raw(boxed));
            }
        }
    })
}

pub unsafe extern "C" fn connect(
    handle: *mut ffi::vfs_handle_struct,
    service: *const c_char,
    user: *const c_char,
) -> libc::c_int {
    guard(-1, || {
        // SAFETY: arguments as smbd passed them; next handle per the VFS chain.
        unsafe {
            let api = api();
            let ret = (api.smb_vfs_call_connect)((*handle).next, service, user);
            if ret < 0 {
                return ret;
            }
            let share = CStr::from_ptr(service).to_string_lossy().into_owned();
            let snum = (api.lp_servicenumber)(service);
            let (cfg, rejected) =
                Config::parse(|prefix, option| share_option(snum, prefix, option));
            for r in &rejected {
                tracing::warn!(share = %share, "{r}");
            }
            tracing::info!(
                share = %share,
                max_helpers = cfg.max_helpers,
                min_helpers = cfg.min_helpers,
                idle_timeout_s = cfg.idle_timeout.as_secs(),
                erratic = cfg.erratic_testing_mode,
                "aio_fork connected"
            );
            let ev = (api.global_event_context)();
            let program = crate::abi::module_file::helper_program(cfg.helper_program.as_deref());
            let pool = Pool::new(share, cfg, program, ev, request::run_action);
            (*handle).data = Box::into_raw(Box::new(Share { pool, snum })) as *mut c_void;
            (*handle).free_data = Some(free_pool);
            0
        }
    })
}

/// One option's raw smb.conf value for share `snum`, if set.
unsafe fn share_option(snum: i32, prefix: &str, option: &str) -> Option<String> {
    // SAFETY: arguments as smbd's VFS layer passes them (the module's contract).
    unsafe {
        let (prefix, option) = (CString::new(prefix).ok()?, CString::new(option).ok()?);
        let v = (api().lp_parm_const_string)(snum, prefix.as_ptr(), option.as_ptr(), ptr::null());
        (!v.is_null()).then(|| CStr::from_ptr(v).to_string_lossy().into_owned())
    }
}

pub unsafe extern "C" fn disconnect(handle: *mut ffi::vfs_handle_struct) {
    guard((), || {
        // SAFETY: handle as smbd passed it; data is ours (set in connect).
        unsafe {
            if let Some(pool) = pool_of(handle) {
                tracing::info!(
                    "aio_fork stats share={} {}",
                    pool.share(),
                    pool.final_stats()
                );
                drop(pool);
                if let Some(free) = (*handle).free_data.take() {
                    free(&mut (*handle).data);
                }
            }
            (api().smb_vfs_call_disconnect)((*handle).next);
        }
    })
}

unsafe fn send(args: SendArgs) -> *mut ffi::tevent_req {
    guard(ptr::null_mut(), || {
        // SAFETY: args are what smbd passed to the *_send call.
        unsafe {
            let share = share_of(args.handle);
            let snum = share.map_or(-1, |s| s.snum);
            request::send(args, share.map(|s| s.pool.clone()), snum)
        }
    })
}

/// A data-moving `*_send` entry point: pread's buffer is written, pwrite's only read;
/// both go to the pool the same way.
macro_rules! io_send {
    ($name:ident, $op:expr, $data:ty) => {
        pub unsafe extern "C" fn $name(
            handle: *mut ffi::vfs_handle_struct,
            mem_ctx: *mut c_void,
            ev: *mut ffi::tevent_context,
            fsp: *mut ffi::files_struct,
            data: $data,
            n: usize,
            offset: libc::off_t,
        ) -> *mut ffi::tevent_req {
            // SAFETY: arguments as smbd's VFS layer passes them (the module's contract).
            unsafe {
                send(SendArgs {
                    op: $op,
                    handle,
                    mem_ctx,
                    ev,
                    fsp,
                    data: data as *mut u8,
                    len: n,
                    offset,
                })
            }
        }
    };
}

io_send!(pread_send, Op::Read, *mut c_void);
io_send!(pwrite_send, Op::Write, *const c_void);

pub unsafe extern "C" fn fsync_send(
    handle: *mut ffi::vfs_handle_struct,
    mem_ctx: *mut c_void,
    ev: *mut ffi::tevent_context,
    fsp: *mut ffi::files_struct,
) -> *mut ffi::tevent_req {
    // SAFETY: arguments as smbd's VFS layer passes them (the module's contract).
    unsafe {
        send(SendArgs {
            op: Op::Fsync,
            handle,
            mem_ctx,
            ev,
            fsp,
            data: ptr::null_mut(),
            len: 0,
            offset: 0,
        })
    }
}

unsafe fn recv(req: *mut ffi::tevent_req, aio: *mut ffi::vfs_aio_state) -> isize {
    guard(-1, || {
        // SAFETY: req is one of ours (smbd calls the recv of the module whose send ran).
        unsafe {
            (*aio).error = libc::EIO; // in case of a panic below
            request::recv(req, aio)
        }
    })
}

/// A `*_recv` entry point returning bytes moved. pread and pwrite each need their own
/// function: the table check (`vfs::table`) finds slots by function address.
macro_rules! io_recv {
    ($name:ident) => {
        pub unsafe extern "C" fn $name(
            req: *mut ffi::tevent_req,
            aio: *mut ffi::vfs_aio_state,
        ) -> libc::ssize_t {
            // SAFETY: arguments as smbd's VFS layer passes them (the module's contract).
            unsafe { recv(req, aio) }
        }
    };
}

io_recv!(pread_recv);
io_recv!(pwrite_recv);

pub unsafe extern "C" fn fsync_recv(
    req: *mut ffi::tevent_req,
    aio: *mut ffi::vfs_aio_state,
) -> libc::c_int {
    // SAFETY: arguments as smbd's VFS layer passes them (the module's contract).
    unsafe { recv(req, aio) as libc::c_int }
}
