//! Consistent hashing (`upstream-hash-by`): a ring of virtual points per endpoint, as
//! nginx's ketama `hash ... consistent`, so removing one endpoint only moves its own keys.
use std::net::SocketAddr;

/// Virtual points per endpoint (nginx uses 160).
const POINTS: usize = 160;

/// FNV-1a, 64 bit: stable across processes and runs (unlike the std hasher's seed).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Final avalanche (splitmix64's) so that nearby keys spread over the ring.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[derive(Debug)]
pub struct Ring {
    /// (point, endpoint index), sorted by point.
    points: Vec<(u64, usize)>,
    endpoints: usize,
}

impl Ring {
    pub fn new(endpoints: &[SocketAddr]) -> Self {
        let mut points = Vec::with_capacity(endpoints.len() * POINTS);
        for (i, ep) in endpoints.iter().enumerate() {
            let base = ep.to_string();
            for p in 0..POINTS {
                points.push((hash_bytes(format!("{base}-{p}").as_bytes()), i));
            }
        }
        points.sort_unstable();
        Self {
            points,
            endpoints: endpoints.len(),
        }
    }

    /// Endpoint indices in ring order from `key`, each once.
    pub fn walk(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|(p, _)| *p < key);
        let mut seen = vec![false; self.endpoints];
        (0..self.points.len())
            .map(move |k| self.points[(start + k) % self.points.len()].1)
            .filter(move |&i| !std::mem::replace(&mut seen[i], true))
    }
}
