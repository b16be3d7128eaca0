//! splitmix64's step: a strong, cheap 64-bit mix. One copy for the replay's PRNG (whose
//! streams are pinned by workload digests), the simulator's prefix hashes and the miss
//! explainer's piece hashes.

/// Adds the golden-ratio increment to `z` and finalises it, as splitmix64 produces the output
/// for state `z`.
pub fn splitmix64(z: u64) -> u64 {
    let mut z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
