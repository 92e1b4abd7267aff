//! Derivation of extra random numbers from the single `PickInput::random`.

/// SplitMix64 generator, seeded from `PickInput::random` when an algorithm needs more
/// than one random number for a pick.
///
/// Each number costs a few arithmetic operations. The generator is not
/// cryptographically secure, which choosing endpoints does not need.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// Advances the state and returns the next number.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.state)
    }

    /// Returns a number in `0..bound`, or 0 when `bound` is 0.
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        scale_to(self.next_u64(), bound)
    }
}

/// Applies the SplitMix64 finalizer, a bijection on `u64` in which every input bit
/// affects every output bit.
pub(crate) fn mix64(value: u64) -> u64 {
    let mut z = value;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Maps a uniform `u64` onto `0..bound` with the multiply-shift method, which avoids a
/// division and whose bias, at most `bound / 2^64`, is negligible for endpoint weights.
pub(crate) fn scale_to(random: u64, bound: u64) -> u64 {
    ((u128::from(random) * u128::from(bound)) >> 64) as u64
}
