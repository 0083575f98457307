//! Raw C interface: the bindgen view of `samba-headers/` (Samba's ABI, talloc, tevent) and
//! the C shim for talloc/tevent macros. Nothing here is safe to call without reading the
//! C documentation of the function; the safe wrappers live next to their users.

#![allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code
)]
#![allow(clippy::all)]

use std::os::raw::{c_int, c_void};

include!(concat!(env!("OUT_DIR"), "/samba_abi.rs"));

// `src/abi/shim.c`: talloc/tevent macros as functions.
extern "C" {
    pub fn aio_fork_req_create(
        mem_ctx: *mut c_void,
        pstate: *mut *mut c_void,
        size: usize,
    ) -> *mut tevent_req;
    pub fn aio_fork_req_data(req: *mut tevent_req) -> *mut c_void;
    pub fn aio_fork_req_callback_data(req: *mut tevent_req) -> *mut c_void;
    pub fn aio_fork_req_done(req: *mut tevent_req);
    pub fn aio_fork_req_error(req: *mut tevent_req, err: c_int) -> bool;
    pub fn aio_fork_add_fd(
        ev: *mut tevent_context,
        mem_ctx: *mut c_void,
        fd: c_int,
        flags: u16,
        handler: tevent_fd_handler_t,
        private_data: *mut c_void,
    ) -> *mut tevent_fd;
    pub fn aio_fork_add_timer(
        ev: *mut tevent_context,
        mem_ctx: *mut c_void,
        after_usec: u64,
        handler: tevent_timer_handler_t,
        private_data: *mut c_void,
    ) -> *mut tevent_timer;
    pub fn aio_fork_set_destructor(
        ptr: *mut c_void,
        destructor: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
    );
    pub fn aio_fork_talloc_new(parent: *const c_void) -> *mut c_void;
    pub fn aio_fork_talloc_free(ptr: *mut c_void) -> c_int;
}

pub const NT_STATUS_OK: NTSTATUS = 0;
pub const NT_STATUS_UNSUCCESSFUL: NTSTATUS = 0xC000_0001;
pub const NT_STATUS_NOT_SUPPORTED: NTSTATUS = 0xC000_00BB;
