//! A request's entry in Samba's profile (`smbstatus -P`), kept from its `*_send` until the
//! module answers it or hands it to the next module.
//!
//! Samba counts an async request where it is served: vfs_default counts the ones it
//! runs. So a request this module answers (at once in smbd, or through a helper) is
//! counted here, once, when answered; one handed to the next module is counted there, and
//! here only the bytes done before it was handed on. Everything is written at the end,
//! never undone: smbd may store and clear its counters at any time in between.

use crate::abi::profile::{self, Counter, Sample};
use crate::protocol::Op;
use std::time::Instant;

/// An unanswered request that smbd counts.
pub struct Pending {
    counter: Counter,
    /// Bytes asked for.
    bytes: u64,
    /// The share's service number (its per-share profile, where the release has one).
    snum: i32,
    /// When the request arrived, if smbd times requests.
    started: Option<Instant>,
}

impl Pending {
    /// Starts the entry of a request of `len` bytes on share `snum`, if smbd counts now.
    pub fn begin(op: Op, len: usize, snum: i32) -> Option<Pending> {
        let profile = profile::get()?;
        if !profile.counting() {
            return None;
        }
        let counter = match op {
            Op::Read => Counter::Pread,
            Op::Write | Op::Append => Counter::Pwrite,
            Op::Fsync => Counter::Fsync,
            // The module's own (see `pool::closing`), not a request of smbd's.
            Op::Close => return None,
        };
        Some(Pending {
            counter,
            bytes: if op == Op::Fsync { 0 } else { len as u64 },
            snum,
            started: profile.timing().then(Instant::now),
        })
    }

    /// The module answered the request; its I/O took `io_ns` (the rest of the time it
    /// waited: for a helper, or for smbd's loop to take the answer).
    pub fn served(self, io_ns: u64) {
        let times = self.started.map(|t| {
            let total_us = t.elapsed().as_micros() as u64;
            (total_us, total_us.saturating_sub(io_ns / 1000))
        });
        self.write(Sample {
            count: 1,
            bytes: self.bytes,
            times,
        });
    }

    /// The next module serves the rest of the request and counts it; `done` bytes were
    /// done here before.
    pub fn handed_on(self, done: usize) {
        if done > 0 {
            self.write(Sample {
                count: 0,
                bytes: done as u64,
                times: None,
            });
        }
    }

    fn write(&self, sample: Sample) {
        if let Some(profile) = profile::get() {
            profile.add(self.counter, self.snum, sample);
        }
    }
}
