//! The messages between smbd (parent) and a helper, one SOCK_SEQPACKET datagram each.
//!
//! A request carries the file descriptor as SCM_RIGHTS; the data itself never crosses the
//! socket: it sits in the helper's shared buffer (written by the parent before a write,
//! by the helper during a read). Both sides are the same build in the same address-space
//! layout, so the messages are plain `repr(C)` structs sent as bytes.

/// What the helper is asked to do.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read = 1,
    Write = 2,
    Fsync = 3,
    /// Write at the end of the file (an append-only POSIX handle, Samba 4.22+): the fd has
    /// O_APPEND and the offset is ignored.
    Append = 4,
    /// No I/O: the helper only closes the descriptor (as after every request). smbd hands
    /// over its last reference to a file on a device that hangs, so that whatever the
    /// file system does when the file is released blocks the helper, not smbd.
    Close = 5,
}

impl Op {
    pub fn from_raw(raw: u32) -> Option<Op> {
        match raw {
            1 => Some(Op::Read),
            2 => Some(Op::Write),
            3 => Some(Op::Fsync),
            4 => Some(Op::Append),
            5 => Some(Op::Close),
            _ => None,
        }
    }

    /// Whether it may be sent again after a helper died with it: an append could write
    /// twice, and a close hands over a descriptor that went with the dead helper.
    pub fn is_idempotent(self) -> bool {
        !matches!(self, Op::Append | Op::Close)
    }

    /// Whether it moves bytes between the file and the shared buffer (in pieces).
    pub fn moves_data(self) -> bool {
        matches!(self, Op::Read | Op::Write | Op::Append)
    }

    /// Whether the request carries data from smbd to the helper.
    pub fn writes(self) -> bool {
        matches!(self, Op::Write | Op::Append)
    }
}

/// Request flag: sleep 5-24 ms before the I/O (`vfs_aio_fork:erratic_testing_mode`).
pub const FLAG_ERRATIC: u32 = 1;

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Request {
    /// Matches the reply to the request; a helper answers each request exactly once.
    pub seq: u64,
    pub op: u32,
    pub flags: u32,
    pub offset: i64,
    /// Bytes to read or write at `offset`, at most the shared buffer's size.
    pub len: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reply {
    pub seq: u64,
    /// Bytes transferred (0 for fsync), or `-errno`.
    pub result: i64,
    /// Time the helper spent in the I/O calls, in nanoseconds (vfs_aio_state.duration).
    pub duration_ns: u64,
}

/// Bumped whenever a message changes: the module and the helper program of one build must
/// speak the same (smbd passes it on the command line, the zygote says it again).
pub const PROTOCOL_VERSION: u32 = 3;

/// The zygote's first message, once it holds its final credentials and filter.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZygoteHello {
    pub version: u32,
    pub pid: i32,
    /// The uid and gid it holds in all of real, effective and saved ids.
    pub uid: u32,
    pub gid: u32,
}

/// What smbd asks of the zygote.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZygoteOp {
    /// Fork a helper with a `buf_size`-byte shared buffer.
    Spawn = 1,
    /// SIGKILL helper `pid` (only if it is a live child of the zygote).
    End = 2,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZygoteRequest {
    pub op: u32,
    pub pid: i32,
    pub buf_size: u64,
}

/// The answer to `Spawn`; on success it carries two fds: smbd's end of the helper's
/// socket and its buffer's memfd. (No pidfd: smbd opens its own, once it has seen that
/// `pid` is the zygote's child.)
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZygoteReply {
    pub pid: i32,
    /// 0, or the errno of what failed.
    pub error: i32,
}

/// Marker for the plain-old-data message types above.
///
/// # Safety
/// Implementors must be `repr(C)`, without padding, and valid for every bit pattern.
pub unsafe trait Wire: Copy + Default {}
// SAFETY: repr(C), only integer fields, sizes are multiples of 8 (no padding).
unsafe impl Wire for Request {}
// SAFETY: as above.
unsafe impl Wire for Reply {}
// SAFETY: repr(C), four 32-bit integers.
unsafe impl Wire for ZygoteHello {}
// SAFETY: repr(C), two 32-bit integers then one 64-bit: no padding.
unsafe impl Wire for ZygoteRequest {}
// SAFETY: repr(C), two 32-bit integers.
unsafe impl Wire for ZygoteReply {}

/// The bytes of a message, as sent on the socket.
pub fn as_bytes<T: Wire>(msg: &T) -> &[u8] {
    // SAFETY: Wire types are repr(C) plain integers without padding.
    unsafe { std::slice::from_raw_parts(msg as *const T as *const u8, std::mem::size_of::<T>()) }
}

/// A reply's result must be a byte count within the piece asked for, or `-errno` with an
/// errno the kernel could give (1..=4095): anything else is a helper that misbehaves.
pub fn reply_is_valid(result: i64, asked: usize) -> bool {
    (-4095..=asked as i64).contains(&result)
}

/// Decodes a message; `None` unless `bytes` is exactly one message long.
pub fn from_bytes<T: Wire>(bytes: &[u8]) -> Option<T> {
    if bytes.len() != std::mem::size_of::<T>() {
        return None;
    }
    let mut msg = T::default();
    // SAFETY: lengths are equal and every bit pattern is a valid T (Wire contract).
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), &mut msg as *mut T as *mut u8, bytes.len())
    };
    Some(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_no_padding() {
        assert_eq!(std::mem::size_of::<Request>(), 32);
        assert_eq!(std::mem::size_of::<Reply>(), 24);
        assert_eq!(std::mem::size_of::<ZygoteHello>(), 16);
        assert_eq!(std::mem::size_of::<ZygoteRequest>(), 16);
        assert_eq!(std::mem::size_of::<ZygoteReply>(), 8);
    }

    #[test]
    fn request_round_trips() {
        let req = Request {
            seq: 7,
            op: Op::Write as u32,
            flags: FLAG_ERRATIC,
            offset: i64::MAX - 1,
            len: 8 << 20,
        };
        let back: Request = from_bytes(as_bytes(&req)).unwrap();
        assert_eq!(back, req);
        assert_eq!(Op::from_raw(back.op), Some(Op::Write));
    }

    #[test]
    fn reply_round_trips_with_negative_errno() {
        let rep = Reply {
            seq: 1,
            result: -(libc::EBADF as i64),
            duration_ns: 12,
        };
        assert_eq!(from_bytes::<Reply>(as_bytes(&rep)), Some(rep));
    }

    #[test]
    fn wrong_lengths_are_refused() {
        let rep = Reply::default();
        let bytes = as_bytes(&rep);
        assert_eq!(from_bytes::<Reply>(&bytes[..bytes.len() - 1]), None);
        assert_eq!(from_bytes::<Request>(bytes), None);
    }

    #[test]
    fn replies_outside_a_byte_count_or_an_errno_are_violations() {
        assert!(reply_is_valid(0, 0) && reply_is_valid(4096, 4096));
        assert!(reply_is_valid(-(libc::EIO as i64), 10) && reply_is_valid(-4095, 10));
        assert!(!reply_is_valid(4097, 4096));
        assert!(!reply_is_valid(-4096, 10));
        assert!(!reply_is_valid(i64::MIN, 10));
    }

    #[test]
    fn unknown_ops_are_refused() {
        assert_eq!(Op::from_raw(0), None);
        assert_eq!(Op::from_raw(6), None);
    }

    #[test]
    fn appends_and_closes_may_not_be_retried() {
        assert!(Op::Read.is_idempotent() && Op::Write.is_idempotent() && Op::Fsync.is_idempotent());
        assert!(!Op::Append.is_idempotent() && !Op::Close.is_idempotent());
        assert!(Op::Append.writes() && Op::Write.writes() && !Op::Read.writes());
    }
}
