//! The sandbox of the module's processes: `no_new_privs` and a seccomp allow-list. A
//! helper may make the few syscalls of its loop; anything else (open, exec, socket, kill,
//! ...) fails with EPERM, so a helper that were made to misbehave could still only read and
//! write the descriptors smbd hands it. The zygote's list adds what making helpers takes.
//! Filters are constants: installing one allocates nothing.

use super::sys::cvt;
use libc::sock_filter;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64

// Offsets in struct seccomp_data.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

const fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// What the helper loop calls (see `helper`): socket I/O, file I/O on passed fds (write:
/// appends; readahead: a hint before a large read), close, the erratic-mode sleep, the
/// clock, and exiting.
const HELPER_CALLS: [libc::c_long; 18] = [
    libc::SYS_recvmsg,
    libc::SYS_write,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_pread64,
    libc::SYS_readahead,
    libc::SYS_pwrite64,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_close,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_clock_gettime,
    SYS_GETTIMEOFDAY,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_rt_sigreturn,
    libc::SYS_restart_syscall,
];

/// x86_64's vDSO clock may fall back to the gettimeofday syscall. aarch64 has no such
/// syscall: clock_gettime stands in, so both lists have one shape.
#[cfg(target_arch = "x86_64")]
const SYS_GETTIMEOFDAY: libc::c_long = libc::SYS_gettimeofday;
#[cfg(target_arch = "aarch64")]
const SYS_GETTIMEOFDAY: libc::c_long = libc::SYS_clock_gettime;

/// What the zygote calls to make a helper (socketpair, sealed memfd, mapping, fork), to
/// reap and end its children, and what a new helper calls before its own
/// filter is in place (prctl, close_range, signal set-up). A filter is inherited by every
/// child and filters only add up, so the helpers' calls must be allowed here too.
const ZYGOTE_CALLS: [libc::c_long; 22] = [
    libc::SYS_recvfrom,
    libc::SYS_socketpair,
    libc::SYS_memfd_create,
    libc::SYS_ftruncate,
    libc::SYS_fcntl,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_clone,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_read,
    libc::SYS_ppoll,
    libc::SYS_kill,
    libc::SYS_prctl,
    libc::SYS_seccomp,
    libc::SYS_close_range,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_getrlimit,
    libc::SYS_prlimit64,
];

/// A seccomp program: check the architecture (kill on a foreign one), load the syscall
/// number, one jeq+ret per allowed syscall, EPERM for everything else.
pub struct Filter<const N: usize>([sock_filter; N]);

const fn filter_len(calls: usize) -> usize {
    4 + 2 * calls + 1
}

const fn build_filter<const N: usize>(a: &[libc::c_long], b: &[libc::c_long]) -> Filter<N> {
    let mut f = [stmt(0, 0); N];
    f[0] = stmt(LD_W_ABS, ARCH_OFFSET);
    f[1] = jump(JEQ_K, AUDIT_ARCH, 1, 0);
    f[2] = stmt(RET_K, libc::SECCOMP_RET_KILL_PROCESS);
    f[3] = stmt(LD_W_ABS, NR_OFFSET);
    let mut i = 0;
    while i < a.len() + b.len() {
        let nr = if i < a.len() { a[i] } else { b[i - a.len()] };
        f[4 + 2 * i] = jump(JEQ_K, nr as u32, 0, 1);
        f[5 + 2 * i] = stmt(RET_K, libc::SECCOMP_RET_ALLOW);
        i += 1;
    }
    f[N - 1] = stmt(
        RET_K,
        libc::SECCOMP_RET_ERRNO | (libc::EPERM as u32 & libc::SECCOMP_RET_DATA),
    );
    Filter(f)
}

pub const HELPER_LEN: usize = filter_len(HELPER_CALLS.len());
const ZYGOTE_LEN: usize = filter_len(HELPER_CALLS.len() + ZYGOTE_CALLS.len());

/// The helpers' filter: their I/O loop and nothing else.
pub const HELPER: Filter<HELPER_LEN> = build_filter(&HELPER_CALLS, &[]);
/// The zygote's filter: the helpers' calls and what making and reaping them takes.
pub const ZYGOTE: Filter<ZYGOTE_LEN> = build_filter(&HELPER_CALLS, &ZYGOTE_CALLS);

/// Sets no_new_privs and installs `filter`; `Err(errno)` if the kernel refused (the
/// caller must then exit: it never serves unconfined).
pub fn enter<const N: usize>(filter: &Filter<N>) -> Result<(), libc::c_int> {
    let prog = libc::sock_fprog {
        len: N as u16,
        filter: filter.0.as_ptr() as *mut sock_filter,
    };
    // SAFETY: two prctl calls on constant data; irreversible for this process, as meant.
    unsafe {
        cvt(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) as i64)?;
        cvt(libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        ) as i64)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};
    use std::os::fd::AsRawFd;

    /// Runs `f` in a forked, sandboxed child; returns the child's exit code.
    fn in_sandbox(f: fn(libc::c_int) -> i32, fd: libc::c_int) -> i32 {
        // SAFETY: the child only makes raw syscalls and exits with _exit.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => unsafe {
                if enter(&HELPER).is_err() {
                    libc::_exit(100);
                }
                libc::_exit(f(fd));
            },
            ForkResult::Parent { child } => match waitpid(child, None).unwrap() {
                WaitStatus::Exited(_, code) => code,
                other => panic!("sandboxed child ended with {other:?}"),
            },
        }
    }

    /// The child's exit code for a call that must be refused: 0 if it failed with EPERM.
    fn refused_with_eperm(result: i64) -> i32 {
        if result < 0 && errno() == libc::EPERM {
            0
        } else {
            1
        }
    }

    fn errno() -> i32 {
        // SAFETY: reads this thread's errno.
        unsafe { *libc::__errno_location() }
    }

    #[test]
    fn sandboxed_process_can_read_a_passed_fd() {
        let file = std::fs::File::open("/proc/self/cmdline").unwrap();
        let code = in_sandbox(
            |fd| {
                let mut b = [0u8; 4];
                // SAFETY: reads into a stack buffer.
                let n = unsafe { libc::pread(fd, b.as_mut_ptr() as *mut _, 4, 0) };
                if n > 0 {
                    0
                } else {
                    1
                }
            },
            file.as_raw_fd(),
        );
        assert_eq!(code, 0);
    }

    #[test]
    fn sandboxed_process_cannot_open_files() {
        let code = in_sandbox(
            |_| {
                // SAFETY: a constant C string.
                let fd = unsafe { libc::open(c"/etc/hostname".as_ptr(), libc::O_RDONLY) };
                refused_with_eperm(fd as i64)
            },
            -1,
        );
        assert_eq!(code, 0, "open() must fail with EPERM in the sandbox");
    }

    #[test]
    fn sandboxed_process_cannot_exec() {
        let code = in_sandbox(
            |_| {
                let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
                let envp = [std::ptr::null()];
                // SAFETY: NULL-terminated argument vectors of constant strings.
                let r = unsafe { libc::execve(argv[0], argv.as_ptr(), envp.as_ptr()) };
                refused_with_eperm(r as i64)
            },
            -1,
        );
        assert_eq!(code, 0, "execve() must fail with EPERM in the sandbox");
    }

    #[test]
    fn sandboxed_process_cannot_signal_others() {
        let code = in_sandbox(
            |_| {
                // SAFETY: signal 0 only checks permission.
                let r = unsafe { libc::kill(1, 0) };
                refused_with_eperm(r as i64)
            },
            -1,
        );
        assert_eq!(code, 0);
    }
}
