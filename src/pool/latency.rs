//! A small latency histogram: log2 buckets split in four (about 19% resolution), enough to
//! report percentiles in the stats line without keeping every sample.

/// Bucket `i` covers `[lower(i), lower(i + 1))` microseconds.
const SUB: u32 = 4;
const BUCKETS: usize = 64 * SUB as usize;

#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            total: 0,
        }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Histogram(n={})", self.total)
    }
}

fn bucket(us: u64) -> usize {
    if us < SUB as u64 {
        return us as usize;
    }
    let log = 63 - us.leading_zeros(); // >= 2
    let mantissa = (us >> (log - 2)) & (SUB as u64 - 1);
    ((log - 1) * SUB) as usize + mantissa as usize
}

/// The smallest value of bucket `i` (inverse of `bucket`).
fn lower(i: usize) -> u64 {
    if i < SUB as usize {
        return i as u64;
    }
    let log = i as u32 / SUB + 1;
    let mantissa = i as u64 % SUB as u64;
    (SUB as u64 + mantissa) << (log - 2)
}

impl Histogram {
    pub fn record_us(&mut self, us: u64) {
        self.counts[bucket(us).min(BUCKETS - 1)] += 1;
        self.total += 1;
    }

    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value below which `pct` percent of samples fall (upper edge of its bucket), in µs.
    pub fn percentile_us(&self, pct: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((pct / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return lower(i + 1).saturating_sub(1);
            }
        }
        lower(BUCKETS - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_lower_inverts_bucket() {
        let mut last = 0;
        for us in [0u64, 1, 3, 4, 5, 7, 8, 100, 1000, 12345, 1 << 40] {
            let b = bucket(us);
            assert!(b >= last, "bucket order at {us}");
            last = b;
            assert!(
                lower(b) <= us && us < lower(b + 1),
                "{us} not in bucket {b}"
            );
        }
    }

    #[test]
    fn percentiles_are_within_the_bucket_resolution() {
        let mut h = Histogram::default();
        for us in 1..=1000 {
            h.record_us(us);
        }
        let p50 = h.percentile_us(50.0);
        let p99 = h.percentile_us(99.0);
        assert!((500..=620).contains(&p50), "p50 {p50}");
        assert!((990..=1200).contains(&p99), "p99 {p99}");
        assert_eq!(h.count(), 1000);
    }

    #[test]
    fn empty_histogram_reports_zero() {
        assert_eq!(Histogram::default().percentile_us(99.0), 0);
    }
}
