//! Raw syscall helpers of the child side. One convention: a call that fails answers
//! `Err(errno)`; nothing allocates.

use std::mem::zeroed;

pub fn errno() -> libc::c_int {
    // SAFETY: reads this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// `Ok(n)` for a non-negative result, else `Err(errno)`.
pub fn cvt(r: i64) -> Result<i64, libc::c_int> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

/// A syscall's result as the protocol's reply carries it: bytes, or `-errno`.
pub fn as_result(r: isize) -> i64 {
    match cvt(r as i64) {
        Ok(n) => n,
        Err(e) => -(e as i64),
    }
}

/// Ends the process at once: no atexit handlers, no unwinding (nothing of Rust's runtime
/// may run here).
pub fn exit(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no memory of ours.
    unsafe { libc::_exit(code) }
}

/// Closes `fd` if it is one (-1 is not).
pub fn close(fd: libc::c_int) {
    if fd >= 0 {
        // SAFETY: a descriptor this process owns and forgets here.
        unsafe { libc::close(fd) };
    }
}

/// Default handling for every signal, none blocked; but the termination signals smbd sends
/// its whole process group when it shuts down (SIGTERM), and those of a terminal or an
/// init system (SIGINT, SIGHUP, SIGQUIT), are ignored. A helper ends when smbd ends it
/// (SIGKILL), when its parent dies (PR_SET_PDEATHSIG) or when its socket closes: never in
/// the middle of a request, by a signal meant for smbd (the request would be retried, or
/// handed to the next module, in a connection that is going away).
pub fn set_up_signals() {
    // SAFETY: sigaction and sigprocmask on stack data; no handler of ours is installed.
    unsafe {
        let mut dfl: libc::sigaction = zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        let mut ign: libc::sigaction = zeroed();
        ign.sa_sigaction = libc::SIG_IGN;
        for sig in 1..32 {
            let ignored = matches!(
                sig,
                libc::SIGTERM | libc::SIGINT | libc::SIGHUP | libc::SIGQUIT
            );
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::sigaction(sig, if ignored { &ign } else { &dfl }, std::ptr::null_mut());
            }
        }
        let mut none: libc::sigset_t = zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}

/// Closes every descriptor but `keep`.
pub fn close_all_but(keep: libc::c_int) {
    if keep > 0 {
        close_range(0, keep as libc::c_uint - 1);
    }
    close_range((keep as libc::c_uint).wrapping_add(1), libc::c_uint::MAX);
}

fn close_range(first: libc::c_uint, last: libc::c_uint) {
    // SAFETY: closing descriptors this process owns; nothing refers to them afterwards.
    unsafe {
        if libc::syscall(libc::SYS_close_range, first, last, 0) == 0 {
            return;
        }
        // Kernels before 5.9: one by one up to the descriptor limit.
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
}

/// Dies with the parent, and checks that the parent is still `parent` (it may have died
/// before the request took effect).
pub fn die_with_parent(parent: libc::pid_t) -> Result<(), ()> {
    // SAFETY: prctl on this process; getppid has no arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if libc::getppid() == parent {
            Ok(())
        } else {
            Err(())
        }
    }
}

/// Makes the process non-dumpable, and checks that it is. The kernel does so by itself
/// for a program exec'd with a real uid other than its effective one only while
/// `fs.suid_dumpable` is 0; made explicit, it holds whatever the sysctl says: a process
/// of the same uid cannot ptrace this one (nor attach to it: a tracer that got in first
/// would keep it), read its memory (the buffer it shares with smbd) or reach its
/// descriptors through /proc, and no core dump is written. Forked children inherit it;
/// exec and a change of effective ids reset it, hence the check after every such step.
pub fn never_dumpable() -> Result<(), ()> {
    // SAFETY: prctl on this process with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong);
        if libc::prctl(libc::PR_GET_DUMPABLE) == 0 {
            Ok(())
        } else {
            Err(())
        }
    }
}

/// The process's name in /proc/<pid>/comm (at most 15 bytes and a NUL).
pub fn set_name(name: &[u8; 16]) {
    // SAFETY: a NUL-terminated constant.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong) };
}

pub fn now_ns() -> u64 {
    // SAFETY: clock_gettime into a stack timespec.
    let ts = unsafe {
        let mut ts: libc::timespec = zeroed();
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
        ts
    };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

pub fn sleep_ms(ms: u64) {
    let mut ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: nanosleep on stack timespecs.
    while unsafe { libc::nanosleep(&ts, &mut ts) } != 0 && errno() == libc::EINTR {}
}

/// Sends one datagram (`bytes`) with `fds` attached; true once it went out whole.
pub fn send_with_fds(sock: libc::c_int, bytes: &[u8], fds: &[libc::c_int]) -> bool {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // Room for up to 4 descriptors; u64 for cmsghdr alignment.
    let mut cmsg_buf = [0u64; 8];
    // SAFETY: msghdr and control buffer on the stack, CMSG_* within cmsg_buf (fds.len() <= 4).
    unsafe {
        let mut msg: libc::msghdr = zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() && fds.len() <= 4 {
            let len = std::mem::size_of_val(fds) as u32;
            msg.msg_control = cmsg_buf.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = libc::CMSG_SPACE(len) as usize;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(len) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(cmsg) as *mut libc::c_int,
                fds.len(),
            );
        }
        loop {
            let n = libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL);
            if n == bytes.len() as isize {
                return true;
            }
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smbds_shutdown_signal_does_not_end_a_helper_sigkill_does() {
        // SAFETY: the child only makes async-signal-safe calls, then waits to be killed.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            set_up_signals();
            loop {
                // SAFETY: pause takes no arguments.
                unsafe { libc::pause() };
            }
        }
        assert!(pid > 0);
        std::thread::sleep(std::time::Duration::from_millis(100));
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
            // SAFETY: signalling our own child.
            assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut status = 0;
        // SAFETY: our own child, without waiting.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) }, 0);
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        // SAFETY: reaping our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
    }
}
