//! xorshift64 (Marsaglia): cheap variety for delays and test data, never for secrets.
//! The helper program, the unit tests and the tests' hostile helper (which compiles this
//! file in by path) share it.

/// The generator's state, never zero (zero would stay zero).
pub struct XorShift64(u64);

impl XorShift64 {
    /// A generator from `seed`, made odd so that the state is never zero.
    pub fn new(seed: u64) -> XorShift64 {
        XorShift64(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[cfg(test)]
mod tests {
    use super::XorShift64;

    #[test]
    fn a_zero_seed_still_varies() {
        let mut rng = XorShift64::new(0);
        let (a, b) = (rng.next(), rng.next());
        assert!(a != 0 && b != 0 && a != b);
    }

    #[test]
    fn the_same_seed_gives_the_same_numbers() {
        let (mut x, mut y) = (XorShift64::new(42), XorShift64::new(42));
        assert!((0..100).all(|_| x.below(7) == y.below(7)));
    }
}
