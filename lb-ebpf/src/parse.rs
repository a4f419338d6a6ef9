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
///
/// Headers are read through `#[repr(C)]` structs with 16- and 32-bit fields, so LLVM
/// emits word loads instead of assembling every field byte by byte (which cost this
/// program hundreds of instructions per packet). After a 14-byte Ethernet header those
/// words sit at 2-byte-aligned addresses: the kernel allows that (the verifier enforces
/// alignment only with `BPF_F_STRICT_ALIGNMENT` or on architectures without efficient
/// unaligned access, neither of which we run on), as every C XDP program relies on.
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
        let f = &self.flow;
        VipKey::from_words(f.dst_words(), f.dport, f.proto, f.family)
    }
}

/// IPv4 header without options. Multi-byte fields hold network-order bytes.
#[repr(C)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub check: u16,
    pub saddr: u32,
    pub daddr: u32,
}
const _: () = assert!(core::mem::size_of::<Ipv4Hdr>() == IPV4_HLEN);

/// IPv6 fixed header.
#[repr(C)]
pub struct Ipv6Hdr {
    pub version_class_flow: u32,
    pub payload_len: u16,
    pub next_header: u8,
    pub hop_limit: u8,
    pub saddr: [u32; 4],
    pub daddr: [u32; 4],
}
const _: () = assert!(core::mem::size_of::<Ipv6Hdr>() == IPV6_HLEN);

/// The first 20 bytes of a TCP header.
#[repr(C)]
struct TcpHdr {
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    data_off: u8,
    flags: u8,
    window: u16,
    check: u16,
    urgent: u16,
}
const _: () = assert!(core::mem::size_of::<TcpHdr>() == 20);

/// A UDP header.
#[repr(C)]
struct UdpHdr {
    sport: u16,
    dport: u16,
    len: u16,
    check: u16,
}

/// ICMP error header, the quoted IPv4 header (no options) and the quoted ports.
#[repr(C)]
struct IcmpV4Quote {
    kind: u8,
    code: u8,
    check: u16,
    rest: u32,
    ip: Ipv4Hdr,
    sport: u16,
    dport: u16,
}
const _: () = assert!(core::mem::size_of::<IcmpV4Quote>() == 32);

/// ICMPv6 error header, the quoted IPv6 header and the quoted ports.
#[repr(C)]
struct IcmpV6Quote {
    kind: u8,
    code: u8,
    check: u16,
    mtu: u32,
    ip: Ipv6Hdr,
    sport: u16,
    dport: u16,
}
const _: () = assert!(core::mem::size_of::<IcmpV6Quote>() == 52);

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

/// The 5-tuple, TCP flags and kind found by [`l4_ports`], [`icmp_v4`] or [`icmp_v6`].
struct L4 {
    kind: Kind,
    src: [u32; 4],
    dst: [u32; 4],
    sport: u16,
    dport: u16,
    proto: u8,
    tcp_flags: u8,
}

impl L4 {
    #[inline(always)]
    fn new(kind: Kind, src: [u32; 4], dst: [u32; 4], proto: u8) -> Self {
        L4 {
            kind,
            src,
            dst,
            sport: 0,
            dport: 0,
            proto,
            tcp_flags: 0,
        }
    }

    #[inline(always)]
    fn packet(self, family: u8, l2_len: usize, ip_len: u32, dont_fragment: bool) -> Packet {
        Packet {
            kind: self.kind,
            flow: FlowKey::from_words(
                self.src, self.dst, self.sport, self.dport, self.proto, family,
            ),
            l2_len,
            tcp_flags: self.tcp_flags,
            ip_len,
            dont_fragment,
        }
    }
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext, off: usize) -> Option<Packet> {
    let h = ptr_at::<Ipv4Hdr>(ctx, off)?;
    // SAFETY: bounds checked by ptr_at; fields are read one by one through the pointer.
    let (vihl, frag, tot_len, proto, saddr, daddr) = unsafe {
        (
            (*h).version_ihl,
            u16::from_be((*h).frag_off),
            u16::from_be((*h).tot_len),
            (*h).protocol,
            (*h).saddr,
            (*h).daddr,
        )
    };
    if vihl >> 4 != 4 {
        return None;
    }
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < IPV4_HLEN {
        return None;
    }
    let (src, dst) = ([saddr, 0, 0, 0], [daddr, 0, 0, 0]);
    let dont_fragment = frag & 0x4000 != 0;
    // MF set or a non-zero fragment offset.
    let l4 = if frag & 0x3fff != 0 {
        L4::new(Kind::Malformed, src, dst, proto)
    } else {
        match proto {
            PROTO_TCP | PROTO_UDP => l4_ports(ctx, off + ihl, src, dst, proto),
            PROTO_ICMP => icmp_v4(ctx, off + ihl, src, dst),
            _ => L4::new(Kind::Other, src, dst, proto),
        }
    };
    Some(l4.packet(FAMILY_V4, off, tot_len as u32, dont_fragment))
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext, off: usize) -> Option<Packet> {
    let h = ptr_at::<Ipv6Hdr>(ctx, off)?;
    // SAFETY: bounds checked by ptr_at; fields are read one by one through the pointer.
    let (version, payload, proto, src, dst) = unsafe {
        (
            *(h as *const u8) >> 4,
            u16::from_be((*h).payload_len),
            (*h).next_header,
            (*h).saddr,
            (*h).daddr,
        )
    };
    if version != 6 {
        return None;
    }
    let l4 = off + IPV6_HLEN;
    let l4 = match proto {
        PROTO_TCP | PROTO_UDP => l4_ports(ctx, l4, src, dst, proto),
        PROTO_ICMPV6 => icmp_v6(ctx, l4, src, dst),
        // Hop-by-Hop, Routing, Fragment, AH, Destination Options, Mobility, HIP, Shim6.
        0 | 43 | 44 | 51 | 60 | 135 | 139 | 140 => L4::new(Kind::Malformed, src, dst, proto),
        _ => L4::new(Kind::Other, src, dst, proto),
    };
    Some(l4.packet(FAMILY_V6, off, payload as u32 + IPV6_HLEN as u32, false))
}

/// Ports (and TCP flags) of a complete TCP (20 bytes) or UDP (8 bytes) header at `off`;
/// `Malformed` when it is cut short or its data offset is below 5.
///
/// Fields are read through the pointer `ptr_at` checked. A second check would be implied
/// by the first, so LLVM drops it and rebuilds the pointer from `data + off`, which the
/// verifier cannot tie to the checked one when `off` is variable (IHL): it rejects the
/// program with "invalid access to packet".
#[inline(always)]
fn l4_ports(ctx: &XdpContext, off: usize, src: [u32; 4], dst: [u32; 4], proto: u8) -> L4 {
    let mut l4 = L4::new(Kind::Malformed, src, dst, proto);
    if proto == PROTO_TCP {
        let Some(h) = ptr_at::<TcpHdr>(ctx, off) else {
            return l4;
        };
        // SAFETY: bounds checked by ptr_at.
        let (data_off, sport, dport, flags) =
            unsafe { ((*h).data_off, (*h).sport, (*h).dport, (*h).flags) };
        if data_off >> 4 < 5 {
            return l4;
        }
        l4.sport = u16::from_be(sport);
        l4.dport = u16::from_be(dport);
        l4.tcp_flags = flags;
    } else {
        let Some(h) = ptr_at::<UdpHdr>(ctx, off) else {
            return l4;
        };
        // SAFETY: bounds checked by ptr_at.
        let (sport, dport) = unsafe { ((*h).sport, (*h).dport) };
        l4.sport = u16::from_be(sport);
        l4.dport = u16::from_be(dport);
    }
    l4.kind = Kind::L4;
    l4
}

/// ICMP type 3 code 4 quoting an IPv4 TCP/UDP packet: the flow it belongs to, reversed
/// to client -> VIP.
#[inline(always)]
fn icmp_v4(ctx: &XdpContext, off: usize, src: [u32; 4], dst: [u32; 4]) -> L4 {
    let other = L4::new(Kind::Other, src, dst, PROTO_ICMP);
    let Some(h) = ptr_at::<IcmpV4Quote>(ctx, off) else {
        return other;
    };
    // SAFETY: bounds checked by ptr_at.
    let (kind, code, vihl, proto) =
        unsafe { ((*h).kind, (*h).code, (*h).ip.version_ihl, (*h).ip.protocol) };
    if kind != 3 || code != 4 || vihl != 0x45 || (proto != PROTO_TCP && proto != PROTO_UDP) {
        return other;
    }
    // Quoted: VIP:vport -> client:cport. Steer as client:cport -> VIP:vport.
    // SAFETY: bounds checked by ptr_at.
    let (vip, client, vport, cport) =
        unsafe { ((*h).ip.saddr, (*h).ip.daddr, (*h).sport, (*h).dport) };
    let mut l4 = L4::new(Kind::IcmpError, [client, 0, 0, 0], [vip, 0, 0, 0], proto);
    l4.sport = u16::from_be(cport);
    l4.dport = u16::from_be(vport);
    l4
}

/// ICMPv6 type 2 (packet too big) quoting an IPv6 TCP/UDP packet, as [`icmp_v4`].
#[inline(always)]
fn icmp_v6(ctx: &XdpContext, off: usize, src: [u32; 4], dst: [u32; 4]) -> L4 {
    let other = L4::new(Kind::Other, src, dst, PROTO_ICMPV6);
    let Some(h) = ptr_at::<IcmpV6Quote>(ctx, off) else {
        return other;
    };
    // SAFETY: bounds checked by ptr_at.
    let (kind, version, proto) = unsafe {
        (
            (*h).kind,
            *(&(*h).ip as *const Ipv6Hdr as *const u8) >> 4,
            (*h).ip.next_header,
        )
    };
    if kind != 2 || version != 6 || (proto != PROTO_TCP && proto != PROTO_UDP) {
        return other;
    }
    // SAFETY: bounds checked by ptr_at.
    let (vip, client, vport, cport) =
        unsafe { ((*h).ip.saddr, (*h).ip.daddr, (*h).sport, (*h).dport) };
    let mut l4 = L4::new(Kind::IcmpError, client, vip, proto);
    l4.sport = u16::from_be(cport);
    l4.dport = u16::from_be(vport);
    l4
}
