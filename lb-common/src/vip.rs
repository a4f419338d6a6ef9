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

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] integers and byte arrays with no padding (sizes asserted above).
    unsafe impl aya::Pod for super::VipKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::VipInfo {}
}
