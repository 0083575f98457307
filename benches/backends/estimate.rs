//! Small-sample statistics for the benchmark's figures: the median of a few runs, its
//! spread (min–max) and a bootstrap 95% interval, ratios of runs paired by repeat, and
//! the verdict drawn from them.
//!
//! With 3–5 runs the bootstrap interval of a median is close to min–max (a resample's
//! median falls on the smallest run about 6% of the time with 5 runs), so the interval
//! is honest about how little a handful of runs says; it narrows as runs are added.

/// Resamples per bootstrap interval: enough for stable 2.5/97.5 percentiles.
const RESAMPLES: usize = 2000;
/// Fewer paired runs than this give no verdict at all.
pub const MIN_RUNS_FOR_VERDICT: usize = 3;

/// Median, spread and bootstrap interval of some runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Bootstrap 95% interval of the median.
    pub lo: f64,
    pub hi: f64,
    pub runs: usize,
}

impl Estimate {
    /// `seed` makes the interval reproducible: the same runs give the same interval.
    pub fn of(values: &[f64], seed: u64) -> Option<Estimate> {
        if values.is_empty() {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let (lo, hi) = bootstrap_median(&sorted, seed);
        Some(Estimate {
            median: median_of_sorted(&sorted),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            lo,
            hi,
            runs: sorted.len(),
        })
    }

    fn overlaps(&self, other: &Estimate) -> bool {
        self.lo <= other.hi && other.lo <= self.hi
    }
}

/// The median of already sorted values (mean of the middle two for an even count).
fn median_of_sorted(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Percentile bootstrap of the median: resample with replacement, take each
/// resample's median, report the 2.5th and 97.5th percentile of those.
fn bootstrap_median(sorted: &[f64], seed: u64) -> (f64, f64) {
    if sorted.len() == 1 {
        return (sorted[0], sorted[0]);
    }
    let mut rng = Rng::new(seed);
    let mut sample = vec![0.0; sorted.len()];
    let mut medians = Vec::with_capacity(RESAMPLES);
    for _ in 0..RESAMPLES {
        for slot in &mut sample {
            *slot = sorted[rng.below(sorted.len())];
        }
        sample.sort_by(f64::total_cmp);
        medians.push(median_of_sorted(&sample));
    }
    medians.sort_by(f64::total_cmp);
    let at = |q: f64| medians[((q * (RESAMPLES - 1) as f64).round() as usize).min(RESAMPLES - 1)];
    (at(0.025), at(0.975))
}

/// xorshift64*: the bootstrap only needs reproducible, roughly uniform indices.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // Never zero (xorshift's fixed point), and nearby seeds far apart.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        // The high bits are the better ones; n is tiny, so the bias is negligible.
        ((self.next() >> 32) % n as u64) as usize
    }
}

/// own / reference for every repeat both have, so that drift of the machine between
/// repeats (other load, page cache state) cancels within each pair.
pub fn paired_ratios(own: &[(usize, f64)], reference: &[(usize, f64)]) -> Vec<f64> {
    own.iter()
        .filter_map(|(rep, value)| {
            let (_, base) = reference.iter().find(|(r, _)| r == rep)?;
            (*base > 0.0).then(|| value / base)
        })
        .collect()
}

/// How a backend compares with the reference on one figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Better,
    Worse,
    /// The intervals overlap (or the ratio's interval holds 1).
    Same,
    /// Fewer than [`MIN_RUNS_FOR_VERDICT`] paired runs.
    TooFewRuns,
}

impl Verdict {
    /// Words for a figure where higher is better (throughput) or lower is (latency).
    pub fn text(self, higher_is_better: bool) -> &'static str {
        match (self, higher_is_better) {
            (Verdict::Better, true) => "faster",
            (Verdict::Worse, true) => "slower",
            (Verdict::Better, false) => "lower",
            (Verdict::Worse, false) => "higher",
            (Verdict::Same, _) => "same (within noise)",
            (Verdict::TooFewRuns, _) => "- (too few runs)",
        }
    }
}

/// A verdict only when the evidence agrees twice: the two medians' intervals do not
/// overlap, and the paired ratio's interval lies wholly on one side of 1.
pub fn verdict(
    own: &Estimate,
    reference: &Estimate,
    ratio: &Estimate,
    higher_is_better: bool,
) -> Verdict {
    if ratio.runs < MIN_RUNS_FOR_VERDICT {
        return Verdict::TooFewRuns;
    }
    if own.overlaps(reference) {
        return Verdict::Same;
    }
    let up = own.median > reference.median && ratio.lo > 1.0;
    let down = own.median < reference.median && ratio.hi < 1.0;
    match (up, down, higher_is_better) {
        (true, _, true) | (_, true, false) => Verdict::Better,
        (true, _, false) | (_, true, true) => Verdict::Worse,
        _ => Verdict::Same,
    }
}
