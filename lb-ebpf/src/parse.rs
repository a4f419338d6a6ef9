//! Bounds-checked header parsing. Every read goes through [`ptr_at`], which proves to the
//! verifier (and to us) that the whole header lies inside the packet.
use aya_ebpf::programs::XdpContext;
use lb_common::{FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP, VipKey};

pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPV6_HLEN: usize = 40;

/// A pointer to `T` at `offset`, or `None` when `T` would run past the packet's end.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

#[inline(always)]
fn be16(ctx: &XdpContext, offset: usize) -> Option<u16> {
    let p = ptr_at::<[u8; 2]>(ctx, offset)?;
    // SAFETY: bounds checked by ptr_at.
    let b = unsafe { *p };
    Some(u16::from_be_bytes(b))
}

/// What the classifier needs to know about a packet.
pub struct Packet {
    /// Destination address, port and protocol, in `VIPS` key form.
    pub dst: VipKey,
}

/// Parses Ethernet (one optional 802.1Q/802.1ad tag), IPv4 or IPv6, then TCP or UDP.
/// Returns `None` for anything that is not a complete TCP/UDP header: such packets are not
/// ours to judge and pass untouched.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Option<Packet> {
    let mut off = ETH_HLEN;
    let mut proto = be16(ctx, 12)?;
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        proto = be16(ctx, off + 2)?;
        off += 4;
    }
    match proto {
        ETH_P_IP => parse_v4(ctx, off),
        ETH_P_IPV6 => parse_v6(ctx, off),
        _ => None,
    }
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext, off: usize) -> Option<Packet> {
    let h = ptr_at::<[u8; 20]>(ctx, off)?;
    // SAFETY: bounds checked by ptr_at.
    let h = unsafe { *h };
    if h[0] >> 4 != 4 {
        return None;
    }
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    if ihl < 20 {
        return None;
    }
    let proto = h[9];
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&h[16..20]);
    let port = l4_dst_port(ctx, off + ihl, proto)?;
    Some(Packet {
        dst: VipKey {
            addr,
            port,
            proto,
            family: FAMILY_V4,
        },
    })
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext, off: usize) -> Option<Packet> {
    let h = ptr_at::<[u8; IPV6_HLEN]>(ctx, off)?;
    // SAFETY: bounds checked by ptr_at.
    let h = unsafe { &*h };
    if h[0] >> 4 != 6 {
        return None;
    }
    let proto = h[6];
    let mut addr = [0u8; 16];
    addr.copy_from_slice(&h[24..40]);
    let port = l4_dst_port(ctx, off + IPV6_HLEN, proto)?;
    Some(Packet {
        dst: VipKey {
            addr,
            port,
            proto,
            family: FAMILY_V6,
        },
    })
}

/// Destination port of a complete TCP (20 bytes) or UDP (8 bytes) header at `off`.
///
/// The port is read through the pointer `ptr_at` checked. A second `be16` check would be
/// implied by the first, so LLVM drops it and rebuilds the pointer from `data + off`, which
/// the verifier cannot tie to the checked one when `off` is variable (IHL): it rejects the
/// program with "invalid access to packet".
#[inline(always)]
fn l4_dst_port(ctx: &XdpContext, off: usize, proto: u8) -> Option<u16> {
    match proto {
        PROTO_TCP => {
            let h = ptr_at::<[u8; 20]>(ctx, off)?;
            // SAFETY: bounds checked by ptr_at.
            let h = unsafe { &*h };
            Some(u16::from_be_bytes([h[2], h[3]]))
        }
        PROTO_UDP => {
            let h = ptr_at::<[u8; 8]>(ctx, off)?;
            // SAFETY: bounds checked by ptr_at.
            let h = unsafe { &*h };
            Some(u16::from_be_bytes([h[2], h[3]]))
        }
        _ => None,
    }
}
