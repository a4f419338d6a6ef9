//! A per-thread xorshift generator: cheap, lock-free randomness for load balancing and
//! request ids (not for secrets).
use std::{
    cell::Cell,
    collections::hash_map::RandomState,
    hash::{BuildHasher as _, Hasher as _},
};

thread_local! {
    static STATE: Cell<u64> = Cell::new({
        // RandomState is seeded from the OS once per process and varies per instance.
        let mut h = RandomState::new().build_hasher();
        h.write_usize(std::ptr::from_ref(&h) as usize);
        h.finish() | 1
    });
}

/// A pseudo-random u64 (xorshift64*).
pub fn random_u64() -> u64 {
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}
