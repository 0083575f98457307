//! The zygote: a small process forked from smbd once, early (at the first tree connect,
//! while smbd is small), that forks the helpers on smbd's behalf.
//!
//! Forking copies the forking process's page tables: a helper forked from an smbd that
//! grew to gigabytes costs tens of milliseconds, one forked from the zygote stays at the
//! cost of smbd's size at connect time. Helpers are the zygote's children: it reaps them
//! as they die (signalfd on SIGCHLD), and hands smbd for each new one its control socket,
//! its shared-buffer memfd and a pidfd (which, unlike a pid, can never name another process).
//!
//! Like a helper, the zygote only makes async-signal-safe raw syscalls (it was forked from a
//! possibly multi-threaded smbd).

use crate::helper_main::{self, SharedBuf};
use std::mem::{size_of, zeroed};

/// The zygote's name in /proc/<pid>/comm.
pub const ZYGOTE_COMM: &[u8; 16] = b"aio_fork_zygote\0";

/// smbd asks for a helper with a shared buffer of this many bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpawnRequest {
    pub buf_size: u64,
}

/// The answer; on success it carries three fds: socket, memfd, pidfd (in that order).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpawnReply {
    pub pid: i32,
    /// 0, or the errno of what failed.
    pub error: i32,
}

/// Entry point of the forked zygote. Never returns.
///
/// # Safety
/// Only in a freshly forked child; `sock` is its end of the control socketpair.
pub unsafe fn run(sock: libc::c_int, parent: libc::pid_t) -> ! {
    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    if libc::getppid() != parent {
        libc::_exit(0);
    }
    helper_main::reset_signals();
    helper_main::close_all_but(sock);
    let sigchld = child_signals();
    libc::prctl(libc::PR_SET_NAME, ZYGOTE_COMM.as_ptr() as libc::c_ulong);
    loop {
        let mut fds = [
            libc::pollfd {
                fd: sock,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sigchld,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if libc::poll(fds.as_mut_ptr(), 2, -1) < 0 {
            continue; // EINTR
        }
        if fds[1].revents != 0 {
            reap(sigchld);
        }
        if fds[0].revents != 0 {
            serve_one(sock);
        }
    }
}

/// SIGCHLD blocked and readable from a signalfd, so that dead helpers are reaped at once.
unsafe fn child_signals() -> libc::c_int {
    let mut set: libc::sigset_t = zeroed();
    libc::sigemptyset(&mut set);
    libc::sigaddset(&mut set, libc::SIGCHLD);
    libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
    if fd < 0 {
        libc::_exit(1);
    }
    fd
}

unsafe fn reap(sigchld: libc::c_int) {
    let mut info: libc::signalfd_siginfo = zeroed();
    while libc::read(
        sigchld,
        &mut info as *mut _ as *mut libc::c_void,
        size_of::<libc::signalfd_siginfo>(),
    ) > 0
    {}
    while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG | libc::__WALL) > 0 {}
}

/// Reads one spawn request and answers it; exits when smbd closed the socket.
unsafe fn serve_one(sock: libc::c_int) {
    let mut req = SpawnRequest::default();
    let n = libc::recv(
        sock,
        &mut req as *mut _ as *mut libc::c_void,
        size_of::<SpawnRequest>(),
        0,
    );
    if n == 0 || (n < 0 && *libc::__errno_location() != libc::EINTR) {
        // smbd is done with us: reap the helpers that already ended, then go.
        while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG | libc::__WALL) > 0 {}
        libc::_exit(0);
    }
    if n as usize != size_of::<SpawnRequest>() {
        return;
    }
    let mut fds = [-1; 3];
    let reply = match spawn_helper(req.buf_size as usize, &mut fds) {
        Ok(pid) => SpawnReply { pid, error: 0 },
        Err(error) => SpawnReply { pid: -1, error },
    };
    send_reply(sock, &reply, if reply.error == 0 { &fds } else { &[] });
    for fd in fds {
        if fd >= 0 {
            libc::close(fd);
        }
    }
}

/// Forks a helper; on success `fds` holds smbd's socket end, the memfd and the pidfd.
unsafe fn spawn_helper(size: usize, fds: &mut [libc::c_int; 3]) -> Result<i32, i32> {
    let errno = || *libc::__errno_location();
    let mut pair = [-1; 2];
    if libc::socketpair(
        libc::AF_UNIX,
        libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
        0,
        pair.as_mut_ptr(),
    ) < 0
    {
        return Err(errno());
    }
    fds[0] = pair[0];
    fds[1] = libc::memfd_create(c"aio_fork_buffer".as_ptr(), libc::MFD_CLOEXEC);
    if fds[1] < 0 || libc::ftruncate(fds[1], size as libc::off_t) < 0 {
        let e = errno();
        libc::close(pair[1]);
        return Err(e);
    }
    let ptr = libc::mmap(
        std::ptr::null_mut(),
        size,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED,
        fds[1],
        0,
    );
    if ptr == libc::MAP_FAILED {
        let e = errno();
        libc::close(pair[1]);
        return Err(e);
    }
    let me = libc::getpid();
    let pid = libc::fork();
    if pid == 0 {
        let buf = SharedBuf {
            ptr: ptr as *mut u8,
            len: size,
        };
        helper_main::run(pair[1], buf, me);
    }
    let e = errno();
    libc::munmap(ptr, size);
    libc::close(pair[1]);
    if pid < 0 {
        return Err(e);
    }
    fds[2] = libc::syscall(libc::SYS_pidfd_open, pid, 0) as libc::c_int;
    if fds[2] < 0 {
        let e = errno();
        libc::kill(pid, libc::SIGKILL);
        return Err(e);
    }
    Ok(pid)
}

unsafe fn send_reply(sock: libc::c_int, reply: &SpawnReply, fds: &[libc::c_int]) {
    let mut iov = libc::iovec {
        iov_base: reply as *const SpawnReply as *mut libc::c_void,
        iov_len: size_of::<SpawnReply>(),
    };
    let mut cmsg_buf = [0u64; 8];
    let mut msg: libc::msghdr = zeroed();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let bytes = std::mem::size_of_val(fds) as u32;
        msg.msg_control = cmsg_buf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = libc::CMSG_SPACE(bytes) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(bytes) as usize;
        std::ptr::copy_nonoverlapping(
            fds.as_ptr(),
            libc::CMSG_DATA(cmsg) as *mut libc::c_int,
            fds.len(),
        );
    }
    while libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) < 0
        && *libc::__errno_location() == libc::EINTR
    {}
}
