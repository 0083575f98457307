//! One async VFS request as smbd sees it: a tevent request whose state is a `ReqState`
//! living in talloc memory, served by the pool or handed to the next module.
//!
//! The private `unsafe fn`s here share one contract: `req` is a live request made by
//! `send`, whose state is a `ReqState`.

use crate::abi::ffi;
use crate::abi::samba::api;
use crate::pool::{Action, JobId, Pool, Spec, Submitted};
use crate::protocol::Op;
use crate::vfs::profiling::Pending;
use std::ffi::c_void;
use std::rc::Rc;
use std::{mem, ptr};

/// Samba's VFS_PWRITE_APPEND_OFFSET (source3/include/vfs.h, 4.22+).
const VFS_PWRITE_APPEND_OFFSET: i64 = -1;

/// Lives in the tevent request's state memory, dropped by its talloc destructor.
pub struct ReqState {
    /// The tevent request owning this state.
    req: *mut ffi::tevent_req,
    pool: Option<Rc<Pool>>,
    job: Option<JobId>,
    handle: *mut ffi::vfs_handle_struct,
    ev: *mut ffi::tevent_context,
    fsp: *mut ffi::files_struct,
    op: Op,
    data: *mut u8,
    len: usize,
    offset: i64,
    /// Bytes done before the next module took over (see `Action::Fallback`).
    done_before_fallback: usize,
    result: isize,
    aio: ffi::vfs_aio_state,
    /// Its entry in Samba's profile, until answered or handed on.
    profile: Option<Pending>,
}

/// The arguments of a `*_send` call.
pub struct SendArgs {
    pub op: Op,
    pub handle: *mut ffi::vfs_handle_struct,
    pub mem_ctx: *mut c_void,
    pub ev: *mut ffi::tevent_context,
    pub fsp: *mut ffi::files_struct,
    pub data: *mut u8,
    pub len: usize,
    pub offset: i64,
}

/// Creates the tevent request and starts it. Returns NULL only when talloc fails (smbd
/// maps that to ENOMEM). `snum` is the share's service number (for Samba's profile).
///
/// # Safety
/// The arguments are those smbd passed to a `*_send` VFS call.
pub unsafe fn send(args: SendArgs, pool: Option<Rc<Pool>>, snum: i32) -> *mut ffi::tevent_req {
    // SAFETY: the arguments are those smbd passed to a `*_send` VFS call (the contract).
    unsafe {
        let mut state: *mut c_void = ptr::null_mut();
        let req = ffi::aio_fork_req_create(args.mem_ctx, &mut state, mem::size_of::<ReqState>());
        if req.is_null() {
            return ptr::null_mut();
        }
        debug_assert_eq!(state as usize % mem::align_of::<ReqState>(), 0);
        ptr::write(
            state as *mut ReqState,
            ReqState {
                req,
                pool,
                job: None,
                handle: args.handle,
                ev: args.ev,
                fsp: args.fsp,
                op: args.op,
                data: args.data,
                len: args.len,
                offset: args.offset,
                done_before_fallback: 0,
                result: -1,
                aio: ffi::vfs_aio_state {
                    error: 0,
                    duration: 0,
                },
                profile: Pending::begin(args.op, args.len, snum),
            },
        );
        ffi::aio_fork_set_destructor(state, Some(state_destructor));

        let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| start(req)));
        if started.is_err() {
            tracing::error!("panic while starting a request: answering EIO");
            fail_now(req, libc::EIO);
        }
        req
    }
}

unsafe fn start(req: *mut ffi::tevent_req) {
    // SAFETY: per this function's contract: a live request made by `send` (state: ReqState).
    unsafe {
        let state = state_of(req);
        let Some(pool) = state.pool.clone() else {
            fall_back(req, 0);
            return;
        };
        // Samba 4.22+: a write on an append-only POSIX handle comes with this offset (smbd
        // checked the handle's flag); the fd has O_APPEND and the data goes to the end.
        let append = state.op == Op::Write && state.offset == VFS_PWRITE_APPEND_OFFSET;
        if state.offset < 0 && state.op != Op::Fsync && !append {
            // What pread(2)/pwrite(2) answer; no helper needed for that.
            finish_now(req, -1, libc::EINVAL, 0);
            return;
        }
        let spec = Spec {
            req,
            ev: state.ev,
            op: if append { Op::Append } else { state.op },
            fd: (api().fsp_get_io_fd)(state.fsp),
            offset: state.offset,
            len: state.len,
            data: state.data,
        };
        // SAFETY: smbd's buffer of len bytes, alive as long as the request.
        match pool.submit(spec) {
            Submitted::Queued(id) => state_of(req).job = Some(id),
            Submitted::Done {
                result,
                error,
                duration_ns,
            } => finish_now(req, result, error, duration_ns),
            Submitted::Fallback { done } => fall_back(req, done),
        }
    }
}

/// Completes a request within its `*_send`: the result is delivered once smbd's loop runs.
unsafe fn finish_now(req: *mut ffi::tevent_req, result: isize, error: i32, duration_ns: u64) {
    // SAFETY: per this function's contract: a live request made by `send` (state: ReqState).
    unsafe {
        set_result(req, result, error, duration_ns);
        answered(req, duration_ns);
        ffi::aio_fork_req_done(req);
        let _ = ffi::tevent_req_post(req, state_of(req).ev);
    }
}

/// The module answered the request itself: Samba's profile counts it here.
unsafe fn answered(req: *mut ffi::tevent_req, io_ns: u64) {
    // SAFETY: per this function's contract: a live request made by `send` (state: ReqState).
    if let Some(profile) = unsafe { state_of(req) }.profile.take() {
        profile.served(io_ns);
    }
}

/// Records the result `recv` will give (bytes, or -1 with `error`); the caller then marks
/// the request done (or posts it).
unsafe fn set_result(req: *mut ffi::tevent_req, result: isize, error: i32, duration_ns: u64) {
    // SAFETY: per this function's contract: a live request made by `send` (state: ReqState).
    unsafe {
        let state = state_of(req);
        state.job = None;
        state.result = result;
        state.aio = ffi::vfs_aio_state {
            error,
            duration: duration_ns,
        };
    }
}

/// Fails a request that could not even start.
unsafe fn fail_now(req: *mut ffi::tevent_req, error: i32) {
    // SAFETY: per this function's contract: a live request made by `send` (state: ReqState).
    unsafe {
        ffi::aio_fork_req_error(req, error);
        let _ = ffi::tevent_req_post(req, state_of(req).ev);
    }
}

/// Runs what the pool decided, once it no longer holds its state.
pub fn run_action(action: Action) {
    match action {
        Action::Finish {
            req,
            result,
            error,
            duration_ns,
        } => {
            // SAFETY: the pool only hands out actions of live requests (a freed request
            // removes its actions in `Pool::forget`).
            unsafe {
                set_result(req, result, error, duration_ns);
                answered(req, duration_ns);
                ffi::aio_fork_req_done(req);
            }
        }
        // SAFETY: as above.
        Action::Fallback { req, done } => unsafe { fall_back(req, done) },
    }
}

/// Serves the request (from byte `done` on) through the next module in the VFS chain.
unsafe fn fall_back(req: *mut ffi::tevent_req, done: usize) {
    // SAFETY: per this function's contract: a live request made by `send` (state: ReqState).
    unsafe {
        let state = state_of(req);
        state.job = None;
        state.done_before_fallback = done;
        // The next module counts what it serves.
        if let Some(profile) = state.profile.take() {
            profile.handed_on(done);
        }
        let api = api();
        let next = (*state.handle).next;
        let mem = state as *mut ReqState as *mut c_void;
        let offset = if state.offset == VFS_PWRITE_APPEND_OFFSET {
            VFS_PWRITE_APPEND_OFFSET
        } else {
            state.offset.wrapping_add(done as i64)
        };
        let rest = state.len - done;
        let subreq = match state.op {
            Op::Read => (api.smb_vfs_call_pread_send)(
                next,
                mem,
                state.ev,
                state.fsp,
                state.data.add(done) as *mut c_void,
                rest,
                offset,
            ),
            Op::Write | Op::Append => (api.smb_vfs_call_pwrite_send)(
                next,
                mem,
                state.ev,
                state.fsp,
                state.data.add(done) as *const c_void,
                rest,
                offset,
            ),
            Op::Fsync => (api.smb_vfs_call_fsync_send)(next, mem, state.ev, state.fsp),
            // Not a request smbd sends (the module's own, see `pool::closing`).
            Op::Close => ptr::null_mut(),
        };
        if subreq.is_null() {
            fail_now(req, libc::ENOMEM);
            return;
        }
        ffi::tevent_req_set_callback(subreq, Some(fallback_done), req as *mut c_void);
    }
}

unsafe extern "C" fn fallback_done(subreq: *mut ffi::tevent_req) {
    crate::abi::guard::guard((), || {
        // SAFETY: tevent calls us with the subrequest we created and its callback data.
        unsafe {
            let req = ffi::aio_fork_req_callback_data(subreq) as *mut ffi::tevent_req;
            let state = state_of(req);
            let mut aio = ffi::vfs_aio_state {
                error: 0,
                duration: 0,
            };
            let api = api();
            let r = match state.op {
                Op::Read => (api.pread_recv)(subreq, &mut aio),
                Op::Write | Op::Append => (api.pwrite_recv)(subreq, &mut aio),
                Op::Fsync => (api.fsync_recv)(subreq, &mut aio) as isize,
                Op::Close => -1,
            };
            ffi::aio_fork_talloc_free(subreq as *mut c_void);
            let done = state.done_before_fallback as isize;
            let result = match r {
                r if r >= 0 => done + r,
                _ if done > 0 => done,
                _ => -1,
            };
            let error = if result < 0 { aio.error } else { 0 };
            set_result(req, result, error, aio.duration);
            ffi::aio_fork_req_done(req);
        }
    })
}

/// The `*_recv` side: the result, or -1 with `aio.error`.
///
/// # Safety
/// `req` is a request created by `send`.
pub unsafe fn recv(req: *mut ffi::tevent_req, aio: *mut ffi::vfs_aio_state) -> isize {
    // SAFETY: per this function's contract: a live request made by `send` (state: ReqState).
    unsafe {
        let mut tstate = ffi::tevent_req_state::TEVENT_REQ_INIT;
        let mut err: u64 = 0;
        if ffi::tevent_req_is_error(req, &mut tstate, &mut err) {
            (*aio).error = match tstate {
                ffi::tevent_req_state::TEVENT_REQ_USER_ERROR => err as i32,
                ffi::tevent_req_state::TEVENT_REQ_TIMED_OUT => libc::ETIMEDOUT,
                _ => libc::ENOMEM,
            };
            return -1;
        }
        let state = state_of(req);
        *aio = state.aio;
        state.result
    }
}

unsafe fn state_of<'a>(req: *mut ffi::tevent_req) -> &'a mut ReqState {
    // SAFETY: per this function's contract: a live request made by `send` (state: ReqState).
    unsafe { &mut *(ffi::aio_fork_req_data(req) as *mut ReqState) }
}

/// talloc destructor of the state: smbd freed the request (done, or client gone).
unsafe extern "C" fn state_destructor(ptr: *mut c_void) -> libc::c_int {
    crate::abi::guard::guard(0, || {
        // SAFETY: ptr is the ReqState written in `send`; talloc calls this once.
        unsafe {
            let state = ptr as *mut ReqState;
            if let (Some(pool), Some(job)) = ((*state).pool.as_ref(), (*state).job) {
                pool.forget(job, (*state).req);
            }
            // Freed unanswered (client gone): counted as Samba counts its own.
            if let Some(profile) = (*state).profile.take() {
                profile.served(0);
            }
            ptr::drop_in_place(state);
        }
        0
    })
}
