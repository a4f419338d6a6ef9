//! Flows, nodes and the Maglev table: what steering reads.

/// Prime size of each half of `MAGLEV` (Maglev needs a prime table size).
pub const MAGLEV_SIZE: u32 = 65537;
/// Most proxy nodes (this one included) in `NODES`.
pub const MAX_NODES: u32 = 256;
/// `MAGLEV` entry meaning "no node" (empty table: pass locally).
pub const NO_NODE: u32 = u32::MAX;

/// Key of `FLOWS`: the 5-tuple of a client-to-VIP packet. IPv4 addresses use the first
/// four bytes of `src`/`dst`. Ports in host byte order.
///
/// Aligned to 4 so the kernel side can build and read it as ten 32-bit words
/// ([`FlowKey::from_words`], [`FlowKey::src_words`]): byte arrays built byte by byte cost
/// the XDP program hundreds of instructions per packet.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);

impl FlowKey {
    /// The key from addresses as native-endian words of their network-order bytes (an
    /// IPv4 address is word 0, the rest 0), ports in host order.
    #[inline(always)]
    pub fn from_words(
        src: [u32; 4],
        dst: [u32; 4],
        sport: u16,
        dport: u16,
        proto: u8,
        family: u8,
    ) -> Self {
        let (s, d) = (sport.to_ne_bytes(), dport.to_ne_bytes());
        let words: [u32; 10] = [
            src[0],
            src[1],
            src[2],
            src[3],
            dst[0],
            dst[1],
            dst[2],
            dst[3],
            u32::from_ne_bytes([s[0], s[1], d[0], d[1]]),
            u32::from_ne_bytes([proto, family, 0, 0]),
        ];
        // SAFETY: same size (asserted above); every field is a plain integer, so any bits
        // are a valid FlowKey, and the word order is the field order of this repr(C) type.
        unsafe { core::mem::transmute::<[u32; 10], FlowKey>(words) }
    }

    /// `src` as four words (see [`FlowKey::from_words`]).
    #[inline(always)]
    pub fn src_words(&self) -> [u32; 4] {
        addr_words(&self.src)
    }

    /// `dst` as four words.
    #[inline(always)]
    pub fn dst_words(&self) -> [u32; 4] {
        addr_words(&self.dst)
    }
}

/// A 16-byte address field of a 4-aligned key as four native-endian words.
#[inline(always)]
pub fn addr_words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

/// `a == b`, word by word. Comparing the arrays whole can compile to a call to `memcmp`,
/// which BPF programs cannot make; this loop is unrolled for the small `N` keys have.
#[inline(always)]
pub fn words_eq<const N: usize>(a: &[u32; N], b: &[u32; N]) -> bool {
    let mut i = 0;
    while i < N {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Four words back to the bytes they were read from.
#[inline(always)]
pub fn words_addr(w: [u32; 4]) -> [u8; 16] {
    // SAFETY: [u32; 4] and [u8; 16] have the same size and no invalid bit patterns.
    unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(w) }
}

/// Value of `FLOWS`: the node (index into `NODES`) serving the flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowValue {
    pub node: u32,
    pub _pad: u32,
    /// Last packet seen (ktime ns); used for the UDP idle timeout.
    pub last_ns: u64,
}
const _: () = assert!(core::mem::size_of::<FlowValue>() == 16);

/// Node is this node: serve locally.
pub const NODE_LOCAL: u16 = 1;
/// `v4` is set.
pub const NODE_HAS_V4: u16 = 2;
/// `v6` is set.
pub const NODE_HAS_V6: u16 = 4;
/// The route to the node leaves by another interface than the one `lb_xdp` runs on:
/// encapsulated frames go out through `TX_PORTS` (XDP_REDIRECT) with the source MAC from
/// `EGRESS`, not back out of the arrival interface (XDP_TX).
pub const NODE_REDIRECT: u16 = 8;

/// Value of `NODES`: where to send flows Maglev gives to this node.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NodeInfo {
    pub v6: [u8; 16],
    pub v4: [u8; 4],
    /// Ethernet address the encapsulated frame is sent to (the node, or the gateway).
    pub mac: [u8; 6],
    /// `NODE_*` bits.
    pub flags: u16,
}
const _: () = assert!(core::mem::size_of::<NodeInfo>() == 28);

/// Value of `EGRESS`, by node index: the interface encapsulated frames to a
/// `NODE_REDIRECT` node leave by, and its MAC (the new frame's source).
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EgressPort {
    pub ifindex: u32,
    pub src_mac: [u8; 6],
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<EgressPort>() == 12);

#[inline(always)]
const fn word(b: &[u8; 16], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

#[inline(always)]
const fn mix(h: u32, w: u32) -> u32 {
    (h ^ w).wrapping_mul(0x9e37_79b1).rotate_left(13)
}

/// Hash of a flow for the Maglev lookup, the same in the kernel and in userspace (tests
/// use it to pick source ports that land on a chosen node). murmur3's finaliser over a
/// multiply-rotate of the key's ten words.
#[inline(always)]
pub const fn flow_hash(k: &FlowKey) -> u32 {
    let mut h: u32 = 0x4c42_5f31;
    h = mix(h, word(&k.src, 0));
    h = mix(h, word(&k.src, 4));
    h = mix(h, word(&k.src, 8));
    h = mix(h, word(&k.src, 12));
    h = mix(h, word(&k.dst, 0));
    h = mix(h, word(&k.dst, 4));
    h = mix(h, word(&k.dst, 8));
    h = mix(h, word(&k.dst, 12));
    h = mix(h, (k.sport as u32) << 16 | k.dport as u32);
    h = mix(h, (k.proto as u32) << 8 | k.family as u32);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// Slot of `k` within one half of `MAGLEV`.
#[inline(always)]
pub const fn maglev_slot(k: &FlowKey) -> u32 {
    flow_hash(k) % MAGLEV_SIZE
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)] integers and byte arrays, no implicit padding (sizes asserted).
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NodeInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EgressPort {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_eq_compares_every_word() {
        let a = [1u32, 2, 3, 4, 5];
        assert!(words_eq(&a, &a));
        for i in 0..a.len() {
            let mut b = a;
            b[i] ^= 1;
            assert!(!words_eq(&a, &b), "word {i}");
        }
    }

    #[test]
    fn hash_spreads_ports_and_is_stable() {
        let mut k = FlowKey {
            src: [198, 18, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst: [198, 18, 0, 210, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            sport: 40000,
            dport: 80,
            proto: 6,
            family: 4,
            _pad: [0; 2],
        };
        let a = flow_hash(&k);
        assert_eq!(a, flow_hash(&k));
        k.sport += 1;
        assert_ne!(a, flow_hash(&k));
        // Two halves of the table get roughly half of 10k consecutive ports each.
        let low = (0..10_000u16)
            .filter(|p| {
                k.sport = 30000 + p;
                maglev_slot(&k) < MAGLEV_SIZE / 2
            })
            .count();
        assert!((4500..5500).contains(&low), "{low}");
    }
}
