//! The zygote: the helper program as smbd starts it, one per share connection and user.
//!
//! smbd spawns the program (`posix_spawn`: no copy of smbd's memory, no descriptor but the
//! control socket) from the thread serving a request, so it starts with that user's
//! effective ids; it takes them for good, enters its sandbox, says hello, and then forks
//! the helpers on smbd's behalf. Helpers are its children: it reaps them as they die
//! (signalfd on SIGCHLD), ends them when smbd asks (smbd may be acting as another user
//! then, and could not signal them itself), and hands smbd for each new one its control
//! socket and its sealed shared-buffer memfd.

use super::helper::{self, SharedBuf};
use super::sys::{self, cvt, errno};
use super::{credentials, exit, sandbox};
use crate::protocol::{self, ZygoteHello, ZygoteOp, ZygoteReply, ZygoteRequest};
use std::mem::{size_of, zeroed};

/// The zygote's name in /proc/<pid>/comm.
pub const ZYGOTE_COMM: &[u8; 16] = b"aio_fork_zygote\0";
/// The descriptor smbd puts the control socket on.
pub const CONTROL_FD: libc::c_int = 3;
/// The first argument that makes the program a zygote.
pub const ZYGOTE_ARG: &[u8] = b"zygote";

/// Most helpers one zygote may have at once (smbd asks for at most `max helpers`).
const MAX_CHILDREN: usize = 1024;

/// The program's `main`: `aio_fork_helper zygote <protocol version> <smbd pid>`, the
/// control socket on fd 3.
///
/// # Safety
/// `argv` holds `argc` NUL-terminated strings, as the C runtime passes them.
pub unsafe fn main(argc: libc::c_int, argv: *const *const libc::c_char) -> libc::c_int {
    // First, while root still holds the real uid: the user cannot attach before it.
    if sys::never_dumpable().is_err() {
        return exit::SANDBOX;
    }
    sys::close_all_but(CONTROL_FD);
    // SAFETY: as the caller promises.
    let Some(parent) = (unsafe { parse_args(argc, argv) }) else {
        return exit::USAGE;
    };
    if credentials::become_effective_user().is_err() {
        return exit::CREDENTIALS;
    }
    // Again: a change of effective ids would have made it dumpable per the sysctl.
    if sys::never_dumpable().is_err() {
        return exit::SANDBOX;
    }
    // After the credentials: changing them clears the parent-death signal.
    if sys::die_with_parent(parent).is_err() {
        return exit::ORPHAN;
    }
    sys::set_up_signals();
    let sigchld = child_signals();
    sys::set_name(ZYGOTE_COMM);
    let ([_, uid, _], [_, gid, _]) = credentials::ids();
    if sigchld < 0 || sandbox::enter(&sandbox::ZYGOTE).is_err() {
        return exit::SANDBOX;
    }
    let hello = ZygoteHello {
        version: protocol::PROTOCOL_VERSION,
        // SAFETY: getpid takes no arguments.
        pid: unsafe { libc::getpid() },
        uid,
        gid,
    };
    if !sys::send_with_fds(CONTROL_FD, protocol::as_bytes(&hello), &[]) {
        return 0;
    }
    serve(CONTROL_FD, sigchld)
}

/// `zygote <version> <pid>` with this build's version: the smbd pid.
///
/// # Safety
/// `argv` holds `argc` NUL-terminated strings.
unsafe fn parse_args(argc: libc::c_int, argv: *const *const libc::c_char) -> Option<i32> {
    if argc != 4 {
        return None;
    }
    // SAFETY: i < argc, and each argument is a NUL-terminated string (caller's promise).
    let arg = |i: usize| unsafe { std::ffi::CStr::from_ptr(*argv.add(i)) }.to_bytes();
    if arg(1) != ZYGOTE_ARG || parse_u32(arg(2))? != protocol::PROTOCOL_VERSION {
        return None;
    }
    i32::try_from(parse_u32(arg(3))?).ok()
}

fn parse_u32(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 10 {
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(d - b'0');
    }
    u32::try_from(n).ok()
}

/// SIGCHLD blocked and readable from a signalfd, so that dead helpers are reaped at once.
fn child_signals() -> libc::c_int {
    // SAFETY: a signal set on the stack; blocking SIGCHLD only defers it to the signalfd.
    unsafe {
        let mut set: libc::sigset_t = zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)
    }
}

/// The live helpers: pids not reaped yet, so a pid here can only be our own child.
struct Children {
    pids: [libc::pid_t; MAX_CHILDREN],
    len: usize,
}

impl Children {
    fn add(&mut self, pid: libc::pid_t) -> bool {
        if self.len == MAX_CHILDREN {
            return false;
        }
        self.pids[self.len] = pid;
        self.len += 1;
        true
    }

    fn contains(&self, pid: libc::pid_t) -> bool {
        self.pids[..self.len].contains(&pid)
    }

    fn remove(&mut self, pid: libc::pid_t) {
        if let Some(i) = self.pids[..self.len].iter().position(|&p| p == pid) {
            self.len -= 1;
            self.pids[i] = self.pids[self.len];
        }
    }
}

fn serve(sock: libc::c_int, sigchld: libc::c_int) -> libc::c_int {
    let mut children = Children {
        pids: [0; MAX_CHILDREN],
        len: 0,
    };
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
        // SAFETY: two pollfds on the stack, no timeout, no signal mask change.
        let r = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, std::ptr::null(), std::ptr::null()) };
        if r < 0 {
            continue; // EINTR
        }
        if fds[1].revents != 0 {
            reap(sigchld, &mut children);
        }
        if fds[0].revents != 0 && !serve_one(sock, &mut children) {
            // smbd is done with us; helpers follow (parent-death signal).
            return 0;
        }
    }
}

fn reap(sigchld: libc::c_int, children: &mut Children) {
    // SAFETY: reads signalfd records into a stack buffer, then reaps our own children.
    unsafe {
        let mut info: libc::signalfd_siginfo = zeroed();
        while libc::read(
            sigchld,
            &mut info as *mut _ as *mut libc::c_void,
            size_of::<libc::signalfd_siginfo>(),
        ) > 0
        {}
        loop {
            let pid = libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG | libc::__WALL);
            if pid <= 0 {
                break;
            }
            children.remove(pid);
        }
    }
}

/// Reads one request and answers it; false when smbd closed the socket.
fn serve_one(sock: libc::c_int, children: &mut Children) -> bool {
    let mut req = ZygoteRequest::default();
    // SAFETY: recv into a plain-data message on the stack, at most its size.
    let n = unsafe {
        libc::recv(
            sock,
            &mut req as *mut _ as *mut libc::c_void,
            size_of::<ZygoteRequest>(),
            0,
        )
    };
    if n == 0 || (n < 0 && errno() != libc::EINTR) {
        return false;
    }
    if n as usize != size_of::<ZygoteRequest>() {
        return true;
    }
    match req.op {
        op if op == ZygoteOp::Spawn as u32 => {
            let mut fds = [-1; 2];
            let reply = match spawn_helper(req.buf_size as usize, &mut fds, children) {
                Ok(pid) => ZygoteReply { pid, error: 0 },
                Err(error) => ZygoteReply { pid: -1, error },
            };
            let passed = if reply.error == 0 { &fds[..] } else { &[] };
            sys::send_with_fds(sock, protocol::as_bytes(&reply), passed);
            fds.into_iter().for_each(sys::close);
        }
        op if op == ZygoteOp::End as u32 && children.contains(req.pid) => {
            // SAFETY: a live, unreaped child of ours: the pid cannot name another process.
            unsafe { libc::kill(req.pid, libc::SIGKILL) };
        }
        _ => {}
    }
    true
}

/// Forks a helper; on success `fds` holds smbd's socket end and the memfd.
fn spawn_helper(
    size: usize,
    fds: &mut [libc::c_int; 2],
    children: &mut Children,
) -> Result<i32, i32> {
    let mut pair = [-1; 2];
    // SAFETY: socketpair into a two-element array.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        )
    } as i64)?;
    fds[0] = pair[0];
    let result = buffer_and_fork(size, pair[1], fds, children);
    sys::close(pair[1]);
    result
}

fn buffer_and_fork(
    size: usize,
    child_sock: libc::c_int,
    fds: &mut [libc::c_int; 2],
    children: &mut Children,
) -> Result<i32, i32> {
    // SAFETY: a constant name; the descriptor is ours (closed by the caller).
    let memfd = unsafe {
        libc::memfd_create(
            c"aio_fork_buffer".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    fds[1] = cvt(memfd as i64)? as libc::c_int;
    // Sealed: neither side can shrink the buffer under the other's mapping.
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: size and seals on the memfd just made; a new shared mapping of it.
    let ptr = unsafe {
        cvt(libc::ftruncate(fds[1], size as libc::off_t) as i64)?;
        cvt(libc::fcntl(fds[1], libc::F_ADD_SEALS, seals) as i64)?;
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fds[1],
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(errno());
    }
    // SAFETY: getpid takes no arguments.
    let me = unsafe { libc::getpid() };
    // A plain fork of this small, single-threaded program.
    // SAFETY: clone without CLONE_VM: the child gets its own copy of this process.
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0) };
    if pid == 0 {
        let buf = SharedBuf {
            ptr: ptr as *mut u8,
            len: size,
        };
        // SAFETY: just forked; the socket and the mapping are the child's own now.
        unsafe { helper::run(child_sock, buf, me) };
    }
    let e = errno();
    // SAFETY: the parent's view of the mapping made above; the child keeps its own.
    unsafe { libc::munmap(ptr, size) };
    if pid < 0 {
        return Err(e);
    }
    let pid = pid as libc::pid_t;
    if !children.add(pid) {
        // SAFETY: our unreaped child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        return Err(libc::EAGAIN);
    }
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::parse_u32;

    #[test]
    fn numbers_on_the_command_line() {
        assert_eq!(parse_u32(b"0"), Some(0));
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_u32(b""), None);
        assert_eq!(parse_u32(b"12a"), None);
        assert_eq!(parse_u32(b"-1"), None);
    }
}
