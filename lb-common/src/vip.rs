//! VIP keys and values.

/// Address family tags stored in [`VipKey::family`].
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// IP protocol numbers stored in [`VipKey::proto`].
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Key of `VIPS`: a destination the load balancer owns.
///
/// `addr` holds the address in network byte order; an IPv4 address occupies the first four
/// bytes and the rest are zero. `port` is in host byte order.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VipKey {
    pub addr: [u8; 16],
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}
const _: () = assert!(core::mem::size_of::<VipKey>() == 20);

impl VipKey {
    /// The key from its address as words (see [`crate::FlowKey::from_words`]).
    #[inline(always)]
    pub fn from_words(addr: [u32; 4], port: u16, proto: u8, family: u8) -> Self {
        let p = port.to_ne_bytes();
        let words: [u32; 5] = [
            addr[0],
            addr[1],
            addr[2],
            addr[3],
            u32::from_ne_bytes([p[0], p[1], proto, family]),
        ];
        // SAFETY: same size (asserted above), plain integer fields in this order.
        unsafe { core::mem::transmute::<[u32; 5], VipKey>(words) }
    }

    pub const fn v4(addr: [u8; 4], port: u16, proto: u8) -> Self {
        let mut a = [0u8; 16];
        a[0] = addr[0];
        a[1] = addr[1];
        a[2] = addr[2];
        a[3] = addr[3];
        Self {
            addr: a,
            port,
            proto,
            family: FAMILY_V4,
        }
    }

    pub const fn v6(addr: [u8; 16], port: u16, proto: u8) -> Self {
        Self {
            addr,
            port,
            proto,
            family: FAMILY_V6,
        }
    }

    /// The address-only key of this VIP's address (port 0, protocol 0): how the kernel
    /// recognises fragments, ICMP and malformed L4 headers sent to a VIP address.
    pub const fn address_only(&self) -> Self {
        Self {
            addr: self.addr,
            port: 0,
            proto: 0,
            family: self.family,
        }
    }

    pub const fn is_address_only(&self) -> bool {
        self.port == 0 && self.proto == 0
    }
}

/// [`VipInfo::flags`]: the entry is an address-only key (see [`VipKey::address_only`]).
pub const VIP_FLAG_ADDR_ONLY: u32 = 1;

/// Value of `VIPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipInfo {
    /// Dense id (< `MAX_VIPS`) that selects this VIP's row in `STATS`.
    pub id: u32,
    /// `VIP_FLAG_*` bits.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<VipInfo>() == 8);

/// log2 of [`VIP_INDEX_SLOTS`].
pub const VIP_INDEX_BITS: u32 = 12;

/// Slots of `VIP_INDEX` (a power of two, 8x `MAX_VIPS`, so collisions are rare).
pub const VIP_INDEX_SLOTS: u32 = 1 << VIP_INDEX_BITS;

/// Value of `VIP_INDEX`, a direct-mapped copy of `VIPS` that the XDP program reads instead
/// of hashing each packet's key in `VIPS` (an array lookup the verifier inlines, then a
/// compare of five words: about 40 ns less per packet here). A key lives in slot
/// [`vip_slot`]; when two keys want the same slot the first keeps it and the slot is
/// marked `spill`, which sends lookups that do not match it to `VIPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipSlot {
    pub key: VipKey,
    pub info: VipInfo,
    /// 1 when `key`/`info` hold a VIP.
    pub used: u32,
    /// 1 when some VIP that hashes here is not in this slot: look it up in `VIPS`.
    pub spill: u32,
}
const _: () = assert!(core::mem::size_of::<VipSlot>() == 36);

impl VipKey {
    /// The key as five native-endian words (its memory, which is aligned to 4).
    #[inline(always)]
    pub fn words(&self) -> [u32; 5] {
        // SAFETY: VipKey is repr(C, align(4)), 20 bytes without padding (asserted above).
        unsafe { *(self as *const VipKey as *const [u32; 5]) }
    }
}

/// The `VIP_INDEX` slot of `k`; the same function in the kernel and in the daemon.
///
/// Every packet pays for it, so it is two independent multiplies (address words folded
/// together, and the port/protocol/family word) and the top bits of their sum. Keys that
/// collide only cost a `VIPS` lookup (see [`VipSlot::spill`]). It replaced five chained
/// multiply-shift rounds, which were a third of the XDP program's time under a flood.
#[inline(always)]
pub fn vip_slot(k: &VipKey) -> u32 {
    let w = k.words();
    let addr = (w[0] ^ w[1] ^ w[2] ^ w[3]).wrapping_mul(0x9e37_79b1);
    let rest = w[4].wrapping_mul(0x85eb_ca6b);
    addr.wrapping_add(rest) >> (32 - VIP_INDEX_BITS)
}

/// Places `vips` in `slots` (`VIP_INDEX_SLOTS` of them, all empty): what the daemon writes
/// to `VIP_INDEX`. The first key in wins a slot; the others that hash there set `spill`.
pub fn place_vips<'a>(
    slots: &mut [VipSlot],
    vips: impl IntoIterator<Item = (&'a VipKey, &'a VipInfo)>,
) {
    for (key, info) in vips {
        let Some(slot) = slots.get_mut(vip_slot(key) as usize) else {
            continue;
        };
        if slot.used == 0 {
            slot.key = *key;
            slot.info = *info;
            slot.used = 1;
        } else {
            slot.spill = 1;
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] integers and byte arrays with no padding (sizes asserted above).
    unsafe impl aya::Pod for super::VipKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::VipInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::VipSlot {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_holds_every_key_or_spills_to_vips() {
        let keys: [VipKey; 3] = [
            VipKey::v4([198, 18, 0, 210], 80, crate::PROTO_TCP),
            VipKey::v4([198, 18, 0, 210], 443, crate::PROTO_TCP),
            VipKey::v4([198, 18, 0, 210], 0, 0),
        ];
        let infos = [
            VipInfo { id: 0, flags: 0 },
            VipInfo { id: 1, flags: 0 },
            VipInfo {
                id: 2,
                flags: VIP_FLAG_ADDR_ONLY,
            },
        ];
        let mut index = [VipSlot::default(); VIP_INDEX_SLOTS as usize];
        place_vips(&mut index, keys.iter().zip(infos.iter()));
        for (k, info) in keys.iter().zip(infos.iter()) {
            let slot = &index[vip_slot(k) as usize];
            assert!(slot.key == *k && slot.info == *info || slot.spill == 1);
        }
        // Two keys forced into one slot: the first keeps it, the slot spills.
        let mut twice = [VipSlot::default(); VIP_INDEX_SLOTS as usize];
        place_vips(&mut twice, [(&keys[0], &infos[0]), (&keys[0], &infos[1])]);
        let slot = &twice[vip_slot(&keys[0]) as usize];
        assert_eq!((slot.info, slot.used, slot.spill), (infos[0], 1, 1));
        assert_eq!(twice.iter().filter(|s| s.used == 1).count(), 1);
    }

    #[test]
    fn slots_spread_a_realistic_vip_set() {
        // 64 addresses x 2 ports + address-only keys: few collisions in 4096 slots.
        let mut used = [false; VIP_INDEX_SLOTS as usize];
        let mut collisions = 0;
        for a in 0..64u8 {
            for key in [
                VipKey::v4([198, 18, 1, a], 80, crate::PROTO_TCP),
                VipKey::v4([198, 18, 1, a], 443, crate::PROTO_TCP),
                VipKey::v4([198, 18, 1, a], 0, 0),
            ] {
                let i = vip_slot(&key) as usize;
                if used[i] {
                    collisions += 1;
                }
                used[i] = true;
            }
        }
        assert!(collisions < 12, "{collisions} collisions of 192 keys");
        // The same for IPv6 VIPs in one /64.
        let mut used = [false; VIP_INDEX_SLOTS as usize];
        let mut collisions = 0;
        for a in 0..64u8 {
            let mut addr = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            addr[15] = a;
            for key in [
                VipKey::v6(addr, 80, crate::PROTO_TCP),
                VipKey::v6(addr, 443, crate::PROTO_TCP),
                VipKey::v6(addr, 0, 0),
            ] {
                let i = vip_slot(&key) as usize;
                if used[i] {
                    collisions += 1;
                }
                used[i] = true;
            }
        }
        assert!(collisions < 12, "{collisions} collisions of 192 IPv6 keys");
    }
}
