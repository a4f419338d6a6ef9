//! Bounds-checked header parsing. Every read goes through [`ptr_at`], which proves to the
//! verifier (and to us) that the whole header lies inside the packet.
//!
//! Fixed policy for what is not a plain TCP/UDP packet (each case has a fixture in
//! `tests/tests/xdp_packets.rs`):
//! - IPv4 options: parsed past (IHL), then treated like any packet; encapsulation carries
//!   them unchanged.
//! - IP fragments (IPv4 MF or offset != 0, IPv6 Fragment header): to a VIP address they
//!   are dropped and counted `drop_malformed`. Later fragments carry no ports, so they
//!   cannot be steered with their flow; the proxies use TCP with PMTU discovery (DF), so
//!   no legitimate VIP traffic is fragmented (Katran drops them too).
//! - IPv6 extension headers (Hop-by-Hop, Routing, Fragment, Destination Options, AH,
//!   Mobility, HIP, Shim6) before the L4 header: to a VIP address, dropped as
//!   `drop_malformed`; walking them is not worth the verifier budget for traffic no client
//!   of an HTTP proxy sends.
//! - A TCP/UDP header cut short, or a TCP data offset below 5, to a VIP address:
//!   `drop_malformed`.
//! - ICMP: "fragmentation needed" (IPv4 type 3 code 4) and "packet too big" (ICMPv6 type
//!   2) quoting a packet the VIP sent are steered with the flow they belong to (found from
//!   the quoted header), so PMTU discovery works for flows served by another node. Every
//!   other ICMP message passes to the local stack untouched and uncounted (the node
//!   answers ping for the VIP).
//! - Anything whose IP header is incomplete or inconsistent (IHL < 5, wrong version), and
//!   anything not IP (ARP, LLDP), passes untouched: it is not ours to judge, and the
//!   stack drops what it cannot parse.
use aya_ebpf::programs::XdpContext;
use lb_common::{FAMILY_V4, FAMILY_V6, FlowKey, PROTO_TCP, PROTO_UDP, VipKey};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
pub const IPV4_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;
const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

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

/// A writable pointer to `T` at `offset`, bounds-checked like [`ptr_at`].
#[inline(always)]
pub fn ptr_at_mut<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    ptr_at::<T>(ctx, offset).map(|p| p as *mut T)
}

#[inline(always)]
fn be16(ctx: &XdpContext, offset: usize) -> Option<u16> {
    let p = ptr_at::<[u8; 2]>(ctx, offset)?;
    // SAFETY: bounds checked by ptr_at.
    let b = unsafe { *p };
    Some(u16::from_be_bytes(b))
}

/// What kind of packet an IP packet is, for the classifier.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A complete TCP or UDP header: `flow` is its 5-tuple.
    L4,
    /// Fragment, IPv6 extension header or short/invalid L4 header (see the module policy).
    Malformed,
    /// ICMP "fragmentation needed" / "packet too big": `flow` is the client-to-VIP flow
    /// of the quoted packet.
    IcmpError,
    /// Any other protocol or ICMP message.
    Other,
}

/// What the classifier needs to know about an IP packet.
pub struct Packet {
    pub kind: Kind,
    /// The packet's 5-tuple (for `IcmpError`: the quoted flow, turned client-to-VIP).
    /// For `Malformed` and `Other`, only the addresses, protocol and family are set.
    pub flow: FlowKey,
    /// Ethernet header length including a VLAN tag (14 or 18).
    pub l2_len: usize,
    /// TCP flags (0 for anything else).
    pub tcp_flags: u8,
    /// IPv4 total length, or IPv6 payload length + 40.
    pub ip_len: u32,
    /// IPv4 DF bit set.
    pub dont_fragment: bool,
}

impl Packet {
    /// The `VIPS` key of the packet's destination (for `IcmpError`: of the flow's VIP).
    #[inline(always)]
    pub fn vip_key(&self) -> VipKey {
        VipKey {
            addr: self.flow.dst,
            port: self.flow.dport,
            proto: self.flow.proto,
            family: self.flow.family,
        }
    }
}

/// Parses Ethernet (one optional 802.1Q/802.1ad tag) and IPv4 or IPv6, then classifies
/// the rest. `None`: not IP, or the IP header itself is incomplete or invalid.
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
fn empty_packet(l2_len: usize, family: u8) -> Packet {
    Packet {
        kind: Kind::Other,
        flow: FlowKey {
            family,
            ..FlowKey::default()
        },
        l2_len,
        tcp_flags: 0,
        ip_len: 0,
        dont_fragment: false,
    }
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext, off: usize) -> Option<Packet> {
    let h = ptr_at::<[u8; IPV4_HLEN]>(ctx, off)?;
    // SAFETY: bounds checked by ptr_at.
    let h = unsafe { *h };
    if h[0] >> 4 != 4 {
        return None;
    }
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    if ihl < IPV4_HLEN {
        return None;
    }
    let mut p = empty_packet(off, FAMILY_V4);
    p.flow.proto = h[9];
    p.flow.src[..4].copy_from_slice(&h[12..16]);
    p.flow.dst[..4].copy_from_slice(&h[16..20]);
    p.ip_len = u16::from_be_bytes([h[2], h[3]]) as u32;
    p.dont_fragment = h[6] & 0x40 != 0;
    // MF set or a non-zero fragment offset.
    if h[6] & 0x3f != 0 || h[7] != 0 {
        p.kind = Kind::Malformed;
        return Some(p);
    }
    let l4 = off + ihl;
    match p.flow.proto {
        PROTO_TCP | PROTO_UDP => l4_ports(ctx, l4, &mut p),
        PROTO_ICMP => icmp_v4(ctx, l4, &mut p),
        _ => {}
    }
    Some(p)
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext, off: usize) -> Option<Packet> {
    let h = ptr_at::<[u8; IPV6_HLEN]>(ctx, off)?;
    // SAFETY: bounds checked by ptr_at.
    let h = unsafe { &*h };
    if h[0] >> 4 != 6 {
        return None;
    }
    let mut p = empty_packet(off, FAMILY_V6);
    p.flow.proto = h[6];
    p.flow.src.copy_from_slice(&h[8..24]);
    p.flow.dst.copy_from_slice(&h[24..40]);
    p.ip_len = u16::from_be_bytes([h[4], h[5]]) as u32 + IPV6_HLEN as u32;
    let l4 = off + IPV6_HLEN;
    match p.flow.proto {
        PROTO_TCP | PROTO_UDP => l4_ports(ctx, l4, &mut p),
        PROTO_ICMPV6 => icmp_v6(ctx, l4, &mut p),
        // Hop-by-Hop, Routing, Fragment, AH, Destination Options, Mobility, HIP, Shim6.
        0 | 43 | 44 | 51 | 60 | 135 | 139 | 140 => p.kind = Kind::Malformed,
        _ => {}
    }
    Some(p)
}

/// Ports (and TCP flags) of a complete TCP (20 bytes) or UDP (8 bytes) header at `off`;
/// `Malformed` when it is cut short or its data offset is below 5.
///
/// Fields are read through the pointer `ptr_at` checked. A second check would be implied
/// by the first, so LLVM drops it and rebuilds the pointer from `data + off`, which the
/// verifier cannot tie to the checked one when `off` is variable (IHL): it rejects the
/// program with "invalid access to packet".
#[inline(always)]
fn l4_ports(ctx: &XdpContext, off: usize, p: &mut Packet) {
    p.kind = Kind::Malformed;
    if p.flow.proto == PROTO_TCP {
        let Some(h) = ptr_at::<[u8; 20]>(ctx, off) else {
            return;
        };
        // SAFETY: bounds checked by ptr_at.
        let h = unsafe { &*h };
        if h[12] >> 4 < 5 {
            return;
        }
        p.flow.sport = u16::from_be_bytes([h[0], h[1]]);
        p.flow.dport = u16::from_be_bytes([h[2], h[3]]);
        p.tcp_flags = h[13];
    } else {
        let Some(h) = ptr_at::<[u8; 8]>(ctx, off) else {
            return;
        };
        // SAFETY: bounds checked by ptr_at.
        let h = unsafe { &*h };
        p.flow.sport = u16::from_be_bytes([h[0], h[1]]);
        p.flow.dport = u16::from_be_bytes([h[2], h[3]]);
    }
    p.kind = Kind::L4;
}

/// ICMP type 3 code 4 quoting an IPv4 TCP/UDP packet: the flow it belongs to, reversed
/// to client -> VIP.
#[inline(always)]
fn icmp_v4(ctx: &XdpContext, off: usize, p: &mut Packet) {
    // ICMP header (8) + quoted IPv4 header without options (20) + 4 bytes of ports.
    let Some(h) = ptr_at::<[u8; 32]>(ctx, off) else {
        return;
    };
    // SAFETY: bounds checked by ptr_at.
    let h = unsafe { &*h };
    if h[0] != 3 || h[1] != 4 || h[8] != 0x45 {
        return;
    }
    let proto = h[8 + 9];
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return;
    }
    // Quoted: VIP:vport -> client:cport. Steer as client:cport -> VIP:vport.
    p.flow.proto = proto;
    p.flow.src = [0; 16];
    p.flow.dst = [0; 16];
    p.flow.src[..4].copy_from_slice(&h[24..28]);
    p.flow.dst[..4].copy_from_slice(&h[20..24]);
    p.flow.sport = u16::from_be_bytes([h[30], h[31]]);
    p.flow.dport = u16::from_be_bytes([h[28], h[29]]);
    p.kind = Kind::IcmpError;
}

/// ICMPv6 type 2 (packet too big) quoting an IPv6 TCP/UDP packet, as [`icmp_v4`].
#[inline(always)]
fn icmp_v6(ctx: &XdpContext, off: usize, p: &mut Packet) {
    // ICMPv6 header (8) + quoted IPv6 header (40) + 4 bytes of ports.
    let Some(h) = ptr_at::<[u8; 52]>(ctx, off) else {
        return;
    };
    // SAFETY: bounds checked by ptr_at.
    let h = unsafe { &*h };
    if h[0] != 2 || h[8] >> 4 != 6 {
        return;
    }
    let proto = h[8 + 6];
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return;
    }
    p.flow.proto = proto;
    p.flow.src.copy_from_slice(&h[32..48]);
    p.flow.dst.copy_from_slice(&h[16..32]);
    p.flow.sport = u16::from_be_bytes([h[50], h[51]]);
    p.flow.dport = u16::from_be_bytes([h[48], h[49]]);
    p.kind = Kind::IcmpError;
}
