//! The pool's jobs by id: a hash map keyed by the pool's own counter.
//!
//! smbd's main thread looks jobs up several times per request (queueing, sending, the
//! reply, the timer's deadline), once per queued job in some scans. Job ids come from a
//! counter smbd alone controls, so nobody can pick keys that collide: std's SipHash,
//! keyed against such attacks, costs more than the lookup it serves. A multiplication by
//! an odd constant spreads consecutive ids over both the bucket bits (low) and the tag
//! bits (high) of the table.

use super::{Job, JobId};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

pub type JobTable = HashMap<JobId, Job, BuildHasherDefault<JobIdHasher>>;

/// Hashes one `JobId` (a `u64`); nothing else is ever hashed with it.
#[derive(Default)]
pub struct JobIdHasher(u64);

/// 2^64 / φ, odd: consecutive ids land far apart in every bit range.
const SPREAD: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for JobIdHasher {
    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(SPREAD);
    }

    /// Only `write_u64` is used by a `u64` key; bytes fold in so any other key still works.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(SPREAD);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    fn hash(id: u64) -> u64 {
        BuildHasherDefault::<JobIdHasher>::default().hash_one(id)
    }

    /// Consecutive ids differ in the low bits that pick a bucket and in the top seven
    /// that tag it, so a table of a few hundred jobs neither clusters nor mis-tags.
    #[test]
    fn consecutive_ids_spread_over_buckets_and_tags() {
        let ids = 1..=512u64;
        let buckets: HashSet<u64> = ids.clone().map(|id| hash(id) & 511).collect();
        let tags: HashSet<u64> = ids.map(|id| hash(id) >> 57).collect();
        assert_eq!(buckets.len(), 512, "one bucket each in a table of 512");
        assert_eq!(tags.len(), 128, "every tag value in use");
    }
}
