//! A hostile helper program, for tests only (the package ships `aio_fork_helper` alone).
//!
//! smbd starts it as it starts the real one (`aio_fork:helper program` names it):
//! `<path> zygote <version> <smbd pid>`, its control socket on fd 3, an empty environment,
//! the request's user in its effective ids. It speaks `src/protocol.rs` (the same file,
//! compiled in) and breaks it in one way, named by the file name it was started under:
//! the tests make one link to it per misbehaviour (see [`Mode`]). `hostile.conf` in the
//! link's directory says for whom: `uid=N` (another user gets the real helper program,
//! `real=PATH`, exec'd in its place with the same arguments) and `seed=N` (for `random`).
//!
//! It is the user's own process doing what that user could do: it takes the user's ids for
//! good and runs unsandboxed. Its helpers die with it, and it with smbd, only so that a test
//! leaves nothing behind.

#[path = "../../src/protocol.rs"]
#[allow(dead_code)]
mod protocol;
#[path = "../../src/xorshift.rs"]
mod xorshift;

use protocol::{as_bytes, Reply, Request, ZygoteHello, ZygoteReply, ZygoteRequest};
use std::ffi::{CString, OsString};
use std::io;
use std::mem::size_of;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use xorshift::XorShift64;

const CONTROL_FD: i32 = 3;
/// What `scribble` writes into its buffer.
pub const MARK: u8 = 0xA5;

/// How the program misbehaves: the zygote (`Zygote*`) or its helpers (the others, with a
/// zygote that does its part right).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Hello with another protocol version.
    HelloVersion,
    /// Hello claiming root's uid and gid.
    HelloIds,
    /// No hello at all; requests are read and never answered.
    NoHello,
    /// Hello, then spawn requests are read and never answered.
    SpawnNothing,
    /// Every spawn answered with an error.
    SpawnError,
    /// A helper handed over without its buffer.
    SpawnMissingFds,
    /// A helper handed over with three more descriptors (one a pidfd of smbd).
    SpawnExtraFds,
    /// A helper, but the pid given is the main smbd's.
    SpawnForeignPid,
    /// The helper is a grandchild (its parent exits), not the zygote's child.
    SpawnGrandchild,
    /// The helper's socket is a SOCK_STREAM one.
    SpawnStreamSocket,
    /// A buffer of one page instead of the size asked for.
    SpawnSmallBuffer,
    /// A buffer not sealed against shrinking.
    SpawnUnsealedBuffer,
    /// A buffer on hugetlbfs (where the kernel makes one).
    SpawnHugetlbBuffer,
    /// Replies to each request with the next request's sequence number.
    WrongSeq,
    /// Replies twice to each request.
    RepeatSeq,
    /// Replies with one byte more than asked for.
    ResultBeyond,
    /// Replies with -4096, below any errno.
    ResultBelow,
    /// Sends a reply cut short by one byte.
    Truncated,
    /// Sends a reply with 8 bytes more.
    Oversized,
    /// Sends a second message after each reply.
    ExtraMessage,
    /// Sends its file, buffer and socket descriptors along with each reply.
    ExtraFds,
    /// Fills its buffer with [`MARK`] for 30 ms after each reply (while smbd copies out
    /// of it, and into it for the next write).
    Scribble,
    /// Replies to requests never sent (sequence numbers smbd never uses): one as it
    /// starts, one after each reply.
    Unsolicited,
    /// Never replies.
    Silent,
    /// Exits in the middle of a request (after half of a write).
    ExitMidRequest,
    /// Closes its socket in the middle of a request and lives on.
    CloseMidRequest,
    /// Sends thousands of copies of each reply.
    Flood,
    /// Answers each request with random datagrams (random lengths, bytes, descriptors,
    /// sequence numbers and results), some of them right.
    Random,
}

const MODES: [(&str, Mode); 28] = [
    ("hello_version", Mode::HelloVersion),
    ("hello_ids", Mode::HelloIds),
    ("no_hello", Mode::NoHello),
    ("spawn_nothing", Mode::SpawnNothing),
    ("spawn_error", Mode::SpawnError),
    ("spawn_missing_fds", Mode::SpawnMissingFds),
    ("spawn_extra_fds", Mode::SpawnExtraFds),
    ("spawn_foreign_pid", Mode::SpawnForeignPid),
    ("spawn_grandchild", Mode::SpawnGrandchild),
    ("spawn_stream_socket", Mode::SpawnStreamSocket),
    ("spawn_small_buffer", Mode::SpawnSmallBuffer),
    ("spawn_unsealed_buffer", Mode::SpawnUnsealedBuffer),
    ("spawn_hugetlb_buffer", Mode::SpawnHugetlbBuffer),
    ("wrong_seq", Mode::WrongSeq),
    ("repeat_seq", Mode::RepeatSeq),
    ("result_beyond", Mode::ResultBeyond),
    ("result_below", Mode::ResultBelow),
    ("truncated", Mode::Truncated),
    ("oversized", Mode::Oversized),
    ("extra_message", Mode::ExtraMessage),
    ("extra_fds", Mode::ExtraFds),
    ("scribble", Mode::Scribble),
    ("unsolicited", Mode::Unsolicited),
    ("silent", Mode::Silent),
    ("exit_mid_request", Mode::ExitMidRequest),
    ("close_mid_request", Mode::CloseMidRequest),
    ("flood", Mode::Flood),
    ("random", Mode::Random),
];

struct Conf {
    uid: Option<u32>,
    real: Option<PathBuf>,
    seed: u64,
}

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    let me = PathBuf::from(&args[0]);
    let name = me.file_name().map(|n| n.to_string_lossy().into_owned());
    let mode = MODES
        .iter()
        .find(|(n, _)| Some(*n) == name.as_deref())
        .map(|(_, m)| *m)
        .unwrap_or_else(|| panic!("no misbehaviour is called {name:?}"));
    let conf = read_conf(&me.with_file_name("hostile.conf"));
    // SAFETY: geteuid/getegid take no arguments.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if conf.uid.is_some_and(|victim| victim != uid) {
        exec_real(conf.real.as_deref().expect("real= in hostile.conf"), &args);
    }
    // The user's ids for good, as the real zygote takes them; dies with smbd.
    // SAFETY: credential and prctl calls on this process.
    unsafe {
        assert_eq!(libc::setresgid(gid, gid, gid), 0);
        assert_eq!(libc::setresuid(uid, uid, uid), 0);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    }
    let smbd = args
        .get(3)
        .and_then(|a| a.to_str()?.parse::<i32>().ok())
        .expect("smbd pid argument");
    zygote(mode, uid, gid, smbd, conf.seed);
}

fn read_conf(path: &Path) -> Conf {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut conf = Conf {
        uid: None,
        real: None,
        seed: 1,
    };
    for line in text.lines() {
        match line.split_once('=') {
            Some(("uid", v)) => conf.uid = v.trim().parse().ok(),
            Some(("real", v)) => conf.real = Some(PathBuf::from(v.trim())),
            Some(("seed", v)) => conf.seed = v.trim().parse().unwrap_or(1),
            _ => {}
        }
    }
    conf
}

fn exec_real(real: &Path, args: &[OsString]) -> ! {
    let path = CString::new(real.as_os_str().as_bytes()).expect("path");
    let argv: Vec<CString> = args
        .iter()
        .map(|a| CString::new(a.clone().into_vec()).expect("argument"))
        .collect();
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: NULL-terminated vectors of live C strings.
    unsafe { libc::execve(path.as_ptr(), ptrs.as_ptr(), envp.as_ptr()) };
    panic!("exec {}: {}", real.display(), io::Error::last_os_error());
}

// ---------------------------------------------------------------------------------------
// The zygote
// ---------------------------------------------------------------------------------------

fn zygote(mode: Mode, uid: u32, gid: u32, smbd: i32, seed: u64) {
    // SAFETY: getpid takes no arguments.
    let me = unsafe { libc::getpid() };
    let mut hello = ZygoteHello {
        version: protocol::PROTOCOL_VERSION,
        pid: me,
        uid,
        gid,
    };
    match mode {
        Mode::HelloVersion => hello.version += 1,
        Mode::HelloIds => (hello.uid, hello.gid) = (0, 0),
        _ => {}
    }
    if mode != Mode::NoHello {
        send(CONTROL_FD, as_bytes(&hello), &[]);
    }
    let mut children: Vec<i32> = Vec::new();
    let mut spawned = 0u64;
    loop {
        let mut req = ZygoteRequest::default();
        let n = recv_exact(CONTROL_FD, &mut req);
        if n == 0 {
            return; // smbd closed the socket
        }
        reap(&mut children);
        if n != size_of::<ZygoteRequest>() || matches!(mode, Mode::NoHello | Mode::SpawnNothing) {
            continue;
        }
        if req.op == protocol::ZygoteOp::End as u32 {
            if children.contains(&req.pid) {
                // SAFETY: a child of ours, not reaped yet.
                unsafe { libc::kill(req.pid, libc::SIGKILL) };
            }
            continue;
        }
        spawned += 1;
        if mode == Mode::SpawnError {
            let reply = ZygoteReply {
                pid: -1,
                error: libc::EAGAIN,
            };
            send(CONTROL_FD, as_bytes(&reply), &[]);
            continue;
        }
        let helper_seed = seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(spawned);
        spawn(
            mode,
            req.buf_size as usize,
            smbd,
            helper_seed,
            &mut children,
        );
    }
}

/// Forks a helper of `mode` and hands it over (wrongly, in the `Spawn*` modes).
fn spawn(mode: Mode, size: usize, smbd: i32, seed: u64, children: &mut Vec<i32>) {
    let kind = if mode == Mode::SpawnStreamSocket {
        libc::SOCK_STREAM
    } else {
        libc::SOCK_SEQPACKET
    };
    let mut pair = [-1; 2];
    // SAFETY: socketpair into a two-element array.
    assert_eq!(
        unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, pair.as_mut_ptr()) },
        0
    );
    let buf_len = if mode == Mode::SpawnSmallBuffer {
        4096
    } else {
        size
    };
    let (memfd, buf) = buffer(mode, buf_len);
    let helper_sock = pair[1];
    // Where the middle process of a grandchild says the grandchild's pid.
    let mut middle = [-1; 2];
    if mode == Mode::SpawnGrandchild {
        // SAFETY: pipe into a two-element array.
        unsafe { libc::pipe(middle.as_mut_ptr()) };
    }
    // SAFETY: a fork of this single-threaded program; the child runs the helper loop.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        close(pair[0]);
        if mode == Mode::SpawnGrandchild {
            // SAFETY: as above; this middle process says its child's pid and exits.
            let grandchild = unsafe { libc::fork() };
            if grandchild != 0 {
                // SAFETY: writes an int from the stack; leaves at once.
                unsafe {
                    libc::write(
                        middle[1],
                        &grandchild as *const i32 as *const libc::c_void,
                        4,
                    );
                    libc::_exit(0);
                }
            }
        }
        close(middle[0]);
        close(middle[1]);
        helper(mode, helper_sock, buf, buf_len, seed);
    }
    let mut told = pid;
    if mode == Mode::SpawnGrandchild {
        close(middle[1]);
        // SAFETY: reads an int into the stack.
        unsafe { libc::read(middle[0], &mut told as *mut i32 as *mut libc::c_void, 4) };
        close(middle[0]);
    }
    if mode == Mode::SpawnForeignPid {
        told = parent_pid(smbd).unwrap_or(1); // the main smbd
    }
    children.push(pid);
    // SAFETY: our copies of the helper's end and of the mapping are not needed here.
    unsafe {
        libc::close(helper_sock);
        libc::munmap(buf as *mut libc::c_void, buf_len);
    }
    let reply = ZygoteReply {
        pid: told,
        error: 0,
    };
    let mut fds = vec![pair[0], memfd];
    let mut extra = Vec::new();
    match mode {
        Mode::SpawnMissingFds => fds.truncate(1),
        Mode::SpawnExtraFds => {
            // SAFETY: dup and pidfd_open make descriptors of ours.
            unsafe {
                extra.push(libc::dup(memfd));
                extra.push(libc::dup(pair[0]));
                extra.push(libc::syscall(libc::SYS_pidfd_open, smbd, 0) as i32);
            }
            fds.extend(extra.iter().filter(|&&fd| fd >= 0));
        }
        _ => {}
    }
    send(CONTROL_FD, as_bytes(&reply), &fds);
    for fd in [pair[0], memfd].into_iter().chain(extra) {
        // SAFETY: descriptors of ours, sent or not needed.
        unsafe { libc::close(fd) };
    }
}

/// The helper's buffer: a memfd of `len` bytes, sealed as the real zygote seals it unless
/// `mode` says otherwise, and its mapping here.
fn buffer(mode: Mode, len: usize) -> (i32, *mut u8) {
    let mut flags = libc::MFD_ALLOW_SEALING;
    if mode == Mode::SpawnHugetlbBuffer {
        flags |= libc::MFD_HUGETLB;
    }
    let make = |flags| {
        // SAFETY: a constant name; the descriptor is ours, sized here.
        unsafe {
            let memfd = libc::memfd_create(c"aio_fork_buffer".as_ptr(), flags);
            if memfd >= 0 && libc::ftruncate(memfd, len as libc::off_t) != 0 {
                libc::close(memfd);
                return -1;
            }
            memfd
        }
    };
    let mut memfd = make(flags);
    if memfd < 0 {
        // No hugetlbfs here: a plain memfd (and the mode shows nothing).
        memfd = make(libc::MFD_ALLOW_SEALING);
    }
    if mode != Mode::SpawnUnsealedBuffer {
        // SAFETY: F_ADD_SEALS on our memfd.
        unsafe {
            libc::fcntl(
                memfd,
                libc::F_ADD_SEALS,
                libc::F_SEAL_SHRINK | libc::F_SEAL_GROW,
            )
        };
    }
    // SAFETY: a new shared mapping of our memfd.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            memfd,
            0,
        )
    };
    let ptr = if ptr == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        ptr as *mut u8
    };
    (memfd, ptr)
}

fn reap(children: &mut Vec<i32>) {
    loop {
        // SAFETY: reaps any child of ours that has exited, without waiting.
        let pid = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        children.retain(|&c| c != pid);
    }
}

fn stat_field(pid: i32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after) = stat.rsplit_once(") ")?;
    after.split(' ').nth(n).map(str::to_string)
}

fn parent_pid(pid: i32) -> Option<i32> {
    stat_field(pid, 1)?.parse().ok()
}

// ---------------------------------------------------------------------------------------
// The helpers
// ---------------------------------------------------------------------------------------

struct Served {
    reply: Reply,
    fd: i32,
}

fn helper(mode: Mode, sock: i32, buf: *mut u8, len: usize, seed: u64) -> ! {
    close(CONTROL_FD);
    if mode != Mode::SpawnGrandchild {
        // SAFETY: prctl on this process: it dies with the zygote.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    }
    let buf: &mut [u8] = if buf.is_null() {
        &mut []
    } else {
        // SAFETY: our mapping of `len` bytes, used by this process alone here.
        unsafe { std::slice::from_raw_parts_mut(buf, len) }
    };
    let mut rng = XorShift64::new(seed);
    if mode == Mode::Unsolicited {
        send_reply(
            sock,
            &Reply {
                seq: u64::MAX,
                result: 0,
                duration_ns: 0,
            },
        );
    }
    loop {
        let mut req = Request::default();
        let mut fd = -1;
        let n = recv_request(sock, &mut req, &mut fd);
        if n == 0 {
            exit(0);
        }
        if n != size_of::<Request>() {
            close(fd);
            continue;
        }
        match mode {
            Mode::Silent => {
                close(fd);
                continue;
            }
            Mode::ExitMidRequest => {
                if protocol::Op::from_raw(req.op).is_some_and(|op| op.writes()) && req.len > 1 {
                    let half = (req.len / 2) as usize;
                    // SAFETY: pwrite of the first half of our buffer.
                    unsafe { libc::pwrite(fd, buf.as_ptr() as *const _, half, req.offset) };
                }
                exit(0);
            }
            Mode::CloseMidRequest => {
                close(sock);
                loop {
                    std::thread::sleep(Duration::from_secs(60));
                }
            }
            _ => {}
        }
        let served = serve(&req, fd, buf);
        let reply = served.reply;
        match mode {
            Mode::WrongSeq => send_reply(
                sock,
                &Reply {
                    seq: reply.seq + 1,
                    ..reply
                },
            ),
            Mode::RepeatSeq => {
                send_reply(sock, &reply);
                send_reply(sock, &reply);
            }
            Mode::ResultBeyond => send_reply(
                sock,
                &Reply {
                    result: req.len as i64 + 1,
                    ..reply
                },
            ),
            Mode::ResultBelow => send_reply(
                sock,
                &Reply {
                    result: -4096,
                    ..reply
                },
            ),
            Mode::Truncated => {
                send(sock, &as_bytes(&reply)[..size_of::<Reply>() - 1], &[]);
            }
            Mode::Oversized => {
                let mut bytes = as_bytes(&reply).to_vec();
                bytes.extend_from_slice(&[0u8; 8]);
                send(sock, &bytes, &[]);
            }
            Mode::ExtraMessage => {
                send_reply(sock, &reply);
                send(sock, b"one more message, unasked for", &[]);
            }
            Mode::ExtraFds => {
                send(sock, as_bytes(&reply), &[served.fd, sock, sock]);
            }
            Mode::Scribble => {
                send_reply(sock, &reply);
                scribble(buf, req.len as usize, Duration::from_millis(30));
            }
            Mode::Unsolicited => {
                send_reply(sock, &reply);
                send_reply(
                    sock,
                    &Reply {
                        seq: u64::MAX - 1,
                        ..reply
                    },
                );
            }
            Mode::Flood => {
                for _ in 0..10_000 {
                    if !send(sock, as_bytes(&reply), &[]) {
                        break;
                    }
                }
            }
            Mode::Random => random_answer(sock, &reply, served.fd, &mut rng),
            _ => send_reply(sock, &reply),
        }
        close(served.fd);
    }
}

/// Does the request's I/O on the shared buffer, as the real helper does.
fn serve(req: &Request, fd: i32, buf: &mut [u8]) -> Served {
    let len = (req.len as usize).min(buf.len());
    let start = Instant::now();
    // SAFETY: pread/pwrite within our buffer's first `len` bytes; fsync takes a descriptor.
    let r = unsafe {
        match protocol::Op::from_raw(req.op) {
            Some(protocol::Op::Read) => {
                libc::pread(fd, buf.as_mut_ptr() as *mut _, len, req.offset) as i64
            }
            Some(protocol::Op::Write) => {
                libc::pwrite(fd, buf.as_ptr() as *const _, len, req.offset) as i64
            }
            Some(protocol::Op::Append) => libc::write(fd, buf.as_ptr() as *const _, len) as i64,
            Some(protocol::Op::Fsync) => libc::fsync(fd) as i64,
            Some(protocol::Op::Close) => 0,
            None => -1,
        }
    };
    let result = if r < 0 {
        -(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO) as i64)
    } else {
        r
    };
    Served {
        reply: Reply {
            seq: req.seq,
            result,
            duration_ns: start.elapsed().as_nanos() as u64,
        },
        fd,
    }
}

/// Writes [`MARK`] over the buffer's first `len` bytes, again and again for `during`
/// (at least once).
fn scribble(buf: &mut [u8], len: usize, during: Duration) {
    let len = len.min(buf.len());
    let until = Instant::now() + during;
    loop {
        for chunk in buf[..len].chunks_mut(4096) {
            // Volatile: each store lands, whoever reads the buffer meanwhile.
            for b in chunk.iter_mut() {
                // SAFETY: a byte of our own mapping.
                unsafe { std::ptr::write_volatile(b, MARK) };
            }
        }
        if Instant::now() >= until {
            return;
        }
    }
}

/// A few random datagrams, one of them (maybe) the right reply.
fn random_answer(sock: i32, reply: &Reply, file: i32, rng: &mut XorShift64) {
    for _ in 0..rng.below(4) + 1 {
        let mut fds = Vec::new();
        for _ in 0..rng.below(3) {
            fds.push(if rng.below(2) == 0 { file } else { sock });
        }
        match rng.below(6) {
            0 => {
                send(sock, as_bytes(reply), &fds);
            }
            1 => {
                let wrong = Reply {
                    result: rng.next() as i64,
                    ..*reply
                };
                send(sock, as_bytes(&wrong), &fds);
            }
            2 => {
                let wrong = Reply {
                    seq: reply.seq.wrapping_add(rng.below(3)).wrapping_sub(1),
                    ..*reply
                };
                send(sock, as_bytes(&wrong), &fds);
            }
            _ => {
                let len = rng.below(64) as usize;
                let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                send(sock, &bytes, &fds);
            }
        }
        if rng.below(4) == 0 {
            std::thread::sleep(Duration::from_millis(rng.below(5)));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Sockets
// ---------------------------------------------------------------------------------------

fn send_reply(sock: i32, reply: &Reply) {
    send(sock, as_bytes(reply), &[]);
}

/// One datagram with `fds`; false if it did not go out.
fn send(sock: i32, bytes: &[u8], fds: &[i32]) -> bool {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let mut cmsg = [0u64; 16];
    // SAFETY: msghdr, iovec and control buffer on the stack; CMSG_* within `cmsg`.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            let len = std::mem::size_of_val(fds) as u32;
            msg.msg_control = cmsg.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = libc::CMSG_SPACE(len) as usize;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(len) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c) as *mut i32, fds.len());
        }
        libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) >= 0
    }
}

/// Receives one message into `msg`; its length, 0 at EOF or on an error.
fn recv_exact<T: protocol::Wire>(sock: i32, msg: &mut T) -> usize {
    loop {
        // SAFETY: receives at most size_of::<T>() bytes into `msg`, plain data.
        let n = unsafe { libc::recv(sock, msg as *mut T as *mut libc::c_void, size_of::<T>(), 0) };
        if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return n.max(0) as usize;
    }
}

/// Receives one request and the descriptor that came with it.
fn recv_request(sock: i32, req: &mut Request, fd: &mut i32) -> usize {
    let mut iov = libc::iovec {
        iov_base: req as *mut Request as *mut libc::c_void,
        iov_len: size_of::<Request>(),
    };
    let mut cmsg = [0u64; 8];
    // SAFETY: msghdr, iovec and control buffer on the stack; the CMSG_* walk stays within
    // what the kernel filled in.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&cmsg);
        let n = loop {
            let n = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break n;
        };
        let c = libc::CMSG_FIRSTHDR(&msg);
        if n > 0 && !c.is_null() && (*c).cmsg_type == libc::SCM_RIGHTS {
            *fd = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const i32);
        }
        n.max(0) as usize
    }
}

fn close(fd: i32) {
    if fd >= 0 {
        // SAFETY: a descriptor of ours, forgotten here.
        unsafe { libc::close(fd) };
    }
}

fn exit(code: i32) -> ! {
    // SAFETY: ends the process at once.
    unsafe { libc::_exit(code) }
}
