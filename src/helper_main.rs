//! The helper process: what runs in the child after `fork()`.
//!
//! smbd may have other threads (pthreadpool) when it forks, so the child may only make
//! async-signal-safe calls: no allocation, no locks, no tracing, no talloc, no Rust std
//! machinery that could allocate or panic. Everything here is a raw syscall on memory the
//! parent prepared before the fork (the shared buffer) or on the stack.
//!
//! The loop: receive a request and its fd, do the I/O between the fd and the shared buffer,
//! close the fd, send the reply. EOF on the socket (smbd closed it or died) ends the helper;
//! PR_SET_PDEATHSIG covers an smbd that dies without closing. Arithmetic is explicit
//! (wrapping/saturating) so that not even a debug build's overflow check can panic here.

use crate::protocol::{Op, Reply, Request, FLAG_ERRATIC};
use std::mem::{size_of, zeroed, MaybeUninit};

/// The shared buffer the parent mapped (MAP_SHARED) before forking.
#[derive(Clone, Copy)]
pub struct SharedBuf {
    pub ptr: *mut u8,
    pub len: usize,
}

/// The child's name in /proc/<pid>/comm (at most 15 bytes), so admins and tests see helpers.
pub const HELPER_COMM: &[u8; 16] = b"aio_fork_helper\0";

/// Entry point of the forked child. Never returns.
///
/// # Safety
/// Must be called only in a freshly forked child; `sock` is the child's end of the
/// socketpair and `buf` a shared mapping valid in this process.
pub unsafe fn run(sock: libc::c_int, buf: SharedBuf, parent: libc::pid_t) -> ! {
    setup_process(sock, parent);
    let mut rng = Rng::seeded();
    loop {
        let mut fd: libc::c_int = -1;
        let req = match receive(sock, &mut fd) {
            Received::Request(req) => req,
            Received::Again => continue,
            Received::Closed => libc::_exit(0),
        };
        let reply = serve(&req, fd, buf, &mut rng);
        if fd >= 0 {
            libc::close(fd);
        }
        if !send_reply(sock, &reply) {
            libc::_exit(0);
        }
    }
}

/// Dies with smbd, gets a recognisable name, default signal handling, no fd but `sock`,
/// and enters the sandbox.
unsafe fn setup_process(sock: libc::c_int, parent: libc::pid_t) {
    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    if libc::getppid() != parent {
        // smbd died between fork() and prctl(): nobody will ever send us work.
        libc::_exit(0);
    }

    reset_signals();
    close_all_but(sock);
    // Named once it holds nothing of smbd's, just before confinement (prctl is outside
    // the seccomp allow-list). Credentials stay those of the smbd thread that forked: the
    // set*id syscalls are outside the allow-list too, and giving up the saved uid would
    // stop smbd, when it runs as another user, from ending a hung helper.
    libc::prctl(libc::PR_SET_NAME, HELPER_COMM.as_ptr() as libc::c_ulong);
    crate::helper_sandbox::enter();
}

/// Default handling and no mask for every signal: smbd's handlers write to its tevent
/// signal pipe, which a child must not touch.
pub(crate) unsafe fn reset_signals() {
    let mut dfl: libc::sigaction = zeroed();
    dfl.sa_sigaction = libc::SIG_DFL;
    for sig in 1..32 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
        }
    }
    let mut none: libc::sigset_t = zeroed();
    libc::sigemptyset(&mut none);
    libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
}

/// Closes every descriptor inherited from the parent except the control socket.
pub(crate) unsafe fn close_all_but(keep: libc::c_int) {
    if keep > 0 {
        close_range(0, keep as libc::c_uint - 1);
    }
    close_range(keep as libc::c_uint + 1, libc::c_uint::MAX);
}

unsafe fn close_range(first: libc::c_uint, last: libc::c_uint) {
    if libc::syscall(libc::SYS_close_range, first, last, 0) == 0 {
        return;
    }
    // Kernels before 5.9: close one by one up to the descriptor limit.
    let mut lim: libc::rlimit = zeroed();
    let top = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
        lim.rlim_cur.min(1 << 20) as libc::c_uint
    } else {
        1024
    };
    let mut fd = first;
    while fd <= last && fd < top {
        libc::close(fd as libc::c_int);
        fd += 1;
    }
}

enum Received {
    Request(Request),
    /// Interrupted, or a malformed message that was dropped after its reply.
    Again,
    Closed,
}

/// Receives one request and the fd that came with it.
unsafe fn receive(sock: libc::c_int, fd: &mut libc::c_int) -> Received {
    let mut req = MaybeUninit::<Request>::zeroed();
    let mut iov = libc::iovec {
        iov_base: req.as_mut_ptr() as *mut libc::c_void,
        iov_len: size_of::<Request>(),
    };
    // Room for one SCM_RIGHTS fd; u64 array for cmsghdr alignment.
    let mut cmsg_buf = [0u64; 8];
    let mut msg: libc::msghdr = zeroed();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_buf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = size_of::<[u64; 8]>();

    let n = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC);
    if n == 0 {
        return Received::Closed;
    }
    if n < 0 {
        return if *libc::__errno_location() == libc::EINTR {
            Received::Again
        } else {
            Received::Closed
        };
    }
    *fd = take_fd(&msg);
    if n as usize != size_of::<Request>() || msg.msg_flags & libc::MSG_TRUNC != 0 {
        // Not one of ours: answer EINVAL so the parent does not wait forever.
        let reply = Reply {
            seq: 0,
            result: -(libc::EINVAL as i64),
            duration_ns: 0,
        };
        if *fd >= 0 {
            libc::close(*fd);
        }
        if !send_reply(sock, &reply) {
            libc::_exit(0);
        }
        return Received::Again;
    }
    Received::Request(req.assume_init())
}

/// The first descriptor passed with SCM_RIGHTS, or -1; any further ones are closed.
unsafe fn take_fd(msg: &libc::msghdr) -> libc::c_int {
    let mut found = -1;
    let mut cmsg = libc::CMSG_FIRSTHDR(msg);
    while !cmsg.is_null() {
        let c = &*cmsg;
        if c.cmsg_level == libc::SOL_SOCKET && c.cmsg_type == libc::SCM_RIGHTS {
            let data = libc::CMSG_DATA(cmsg) as *const libc::c_int;
            let count = (c.cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize)
                / size_of::<libc::c_int>();
            for i in 0..count {
                let fd = std::ptr::read_unaligned(data.add(i));
                if found < 0 {
                    found = fd;
                } else {
                    libc::close(fd);
                }
            }
        }
        cmsg = libc::CMSG_NXTHDR(msg, cmsg);
    }
    found
}

/// Does the I/O of one request; the reply says how many bytes moved, or -errno.
unsafe fn serve(req: &Request, fd: libc::c_int, buf: SharedBuf, rng: &mut Rng) -> Reply {
    let mut reply = Reply {
        seq: req.seq,
        result: 0,
        duration_ns: 0,
    };
    if req.flags & FLAG_ERRATIC != 0 {
        sleep_ms(1 + rng.next() % 20);
    }
    let start = now_ns();
    reply.result = match (Op::from_raw(req.op), fd >= 0) {
        (_, false) => -(libc::EBADF as i64),
        (None, _) => -(libc::EINVAL as i64),
        (Some(_), _) if req.len > buf.len as u64 => -(libc::EINVAL as i64),
        (Some(Op::Read), _) => read_full(fd, buf.ptr, req.len as usize, req.offset),
        (Some(Op::Write), _) => write_full(fd, buf.ptr, req.len as usize, Some(req.offset)),
        (Some(Op::Append), _) => write_full(fd, buf.ptr, req.len as usize, None),
        (Some(Op::Fsync), _) => {
            if libc::fsync(fd) == 0 {
                0
            } else {
                -(errno() as i64)
            }
        }
    };
    reply.duration_ns = now_ns().saturating_sub(start);
    reply
}

/// pread until `len` bytes, end of file, or an error (returned as -errno if nothing was read).
unsafe fn read_full(fd: libc::c_int, buf: *mut u8, len: usize, offset: i64) -> i64 {
    if len == 0 {
        // Still ask the kernel: it checks the offset and the handle as for any read.
        return syscall_result(libc::pread(fd, buf as *mut libc::c_void, 0, offset));
    }
    let mut done = 0usize;
    while done < len {
        let n = libc::pread(
            fd,
            buf.add(done) as *mut libc::c_void,
            len - done,
            offset.wrapping_add(done as i64),
        );
        match n {
            0 => break,
            n if n > 0 => done += n as usize,
            _ if errno() == libc::EINTR => continue,
            _ if done > 0 => break,
            _ => return -(errno() as i64),
        }
    }
    done as i64
}

/// pwrite (or, without an offset, write to an O_APPEND fd) until `len` bytes are written
/// or an error (returned as -errno if nothing was written).
unsafe fn write_full(fd: libc::c_int, buf: *const u8, len: usize, offset: Option<i64>) -> i64 {
    let write_at = |done: usize| {
        let from = buf.add(done) as *const libc::c_void;
        match offset {
            Some(off) => libc::pwrite(fd, from, len - done, off.wrapping_add(done as i64)),
            None => libc::write(fd, from, len - done),
        }
    };
    if len == 0 {
        return syscall_result(write_at(0));
    }
    let mut done = 0usize;
    while done < len {
        let n = write_at(done);
        match n {
            n if n > 0 => done += n as usize,
            _ if n < 0 && errno() == libc::EINTR => continue,
            _ if done > 0 => break,
            0 => return -(libc::EIO as i64),
            _ => return -(errno() as i64),
        }
    }
    done as i64
}

unsafe fn syscall_result(n: isize) -> i64 {
    if n < 0 {
        -(errno() as i64)
    } else {
        n as i64
    }
}

unsafe fn send_reply(sock: libc::c_int, reply: &Reply) -> bool {
    loop {
        let n = libc::send(
            sock,
            reply as *const Reply as *const libc::c_void,
            size_of::<Reply>(),
            libc::MSG_NOSIGNAL,
        );
        if n == size_of::<Reply>() as isize {
            return true;
        }
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        return false;
    }
}

unsafe fn errno() -> libc::c_int {
    *libc::__errno_location()
}

unsafe fn now_ns() -> u64 {
    let mut ts: libc::timespec = zeroed();
    libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

unsafe fn sleep_ms(ms: u64) {
    let mut ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    while libc::nanosleep(&ts, &mut ts) != 0 && errno() == libc::EINTR {}
}

/// xorshift64: erratic delays only need to differ between helpers and requests.
struct Rng(u64);

impl Rng {
    unsafe fn seeded() -> Rng {
        Rng((now_ns() ^ ((libc::getpid() as u64) << 32)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}
