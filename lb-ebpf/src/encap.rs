//! IPIP (IPv4 in IPv4) and IP6IP6 encapsulation in XDP: grow the frame at its head, move
//! the Ethernet header (and VLAN tag) forward, write the outer IP header. The outer source
//! is this node (`Config::node_v4/6`), the destination the serving node; the frame goes to
//! that node's MAC from the MAC it arrived on (ours). The inner packet is not touched, so
//! its checksums stay valid; the outer IPv4 header checksum is computed here.
//!
//! Headers are written field by field in 16- and 32-bit stores straight into the frame
//! (no copy through the stack), which is what keeps this path cheap.
use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{Config, FAMILY_V4, NODE_HAS_V4, NODE_HAS_V6, NodeInfo, addr_words};

use crate::{
    csum,
    parse::{ETH_HLEN, ETH_P_IP, ETH_P_IPV6, IPV4_HLEN, IPV6_HLEN, Ipv4Hdr, Ipv6Hdr, Packet},
    parse::{ptr_at, ptr_at_mut},
};

const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;
const OUTER_TTL: u8 = 64;

/// Outcome of [`encapsulate`].
pub enum Encap {
    /// The frame now carries the outer header: send it (XDP_TX).
    Done,
    /// Nothing was changed (no address of the packet's family for this node or the
    /// target, frame too large, no headroom): serve the packet locally instead.
    Skipped,
    /// The head grew but the new headers could not be written: the frame is garbage.
    Broken,
}

/// Encapsulates the packet for `node`.
#[inline(always)]
pub fn encapsulate(ctx: &XdpContext, p: &Packet, node: &NodeInfo, cfg: &Config) -> Encap {
    if p.flow.family == FAMILY_V4 {
        let (src, dst) = (cfg.node_v4_word(), u32::from_ne_bytes(node.v4));
        if node.flags & NODE_HAS_V4 == 0 || src == 0 || p.ip_len > 0xffff - IPV4_HLEN as u32 {
            return Encap::Skipped;
        }
        // The inner TOS, so QoS marking survives the tunnel.
        let Some(tos) = ptr_at::<u8>(ctx, p.l2_len + 1) else {
            return Encap::Skipped;
        };
        // SAFETY: bounds checked by ptr_at.
        let tos = unsafe { *tos };
        let Some(l2) = grow(ctx, p, IPV4_HLEN) else {
            return Encap::Skipped;
        };
        let outer = if p.l2_len == ETH_HLEN {
            ptr_at_mut::<Ipv4Hdr>(ctx, ETH_HLEN)
        } else {
            ptr_at_mut::<Ipv4Hdr>(ctx, ETH_HLEN + 4)
        };
        match (write_l2(ctx, node, &l2, ETH_P_IP), outer) {
            (Some(()), Some(h)) => {
                let tot_len = ((p.ip_len + IPV4_HLEN as u32) as u16).to_be();
                // Identification 0; DF copied from the inner header (RFC 2003 section 3.1).
                let frag = if p.dont_fragment {
                    0x4000u16.to_be()
                } else {
                    0
                };
                let first = u16::from_ne_bytes([0x45, tos]);
                let ttl_proto = u16::from_ne_bytes([OUTER_TTL, IPPROTO_IPIP]);
                let sum = first as u32
                    + tot_len as u32
                    + frag as u32
                    + ttl_proto as u32
                    + (src & 0xffff)
                    + (src >> 16)
                    + (dst & 0xffff)
                    + (dst >> 16);
                // SAFETY: bounds checked by ptr_at_mut.
                unsafe {
                    (*h).version_ihl = 0x45;
                    (*h).tos = tos;
                    (*h).tot_len = tot_len;
                    (*h).id = 0;
                    (*h).frag_off = frag;
                    (*h).ttl = OUTER_TTL;
                    (*h).protocol = IPPROTO_IPIP;
                    (*h).check = csum::fold(sum);
                    (*h).saddr = src;
                    (*h).daddr = dst;
                }
                Encap::Done
            }
            _ => Encap::Broken,
        }
    } else {
        let (src, dst) = (cfg.node_v6_words(), addr_words(&node.v6));
        if node.flags & NODE_HAS_V6 == 0 || src == [0; 4] || p.ip_len > 0xffff {
            return Encap::Skipped;
        }
        let Some(l2) = grow(ctx, p, IPV6_HLEN) else {
            return Encap::Skipped;
        };
        let outer = if p.l2_len == ETH_HLEN {
            ptr_at_mut::<Ipv6Hdr>(ctx, ETH_HLEN)
        } else {
            ptr_at_mut::<Ipv6Hdr>(ctx, ETH_HLEN + 4)
        };
        match (write_l2(ctx, node, &l2, ETH_P_IPV6), outer) {
            (Some(()), Some(h)) => {
                // SAFETY: bounds checked by ptr_at_mut.
                unsafe {
                    (*h).version_class_flow = u32::from_ne_bytes([0x60, 0, 0, 0]);
                    (*h).payload_len = (p.ip_len as u16).to_be();
                    (*h).next_header = IPPROTO_IPV6;
                    (*h).hop_limit = OUTER_TTL;
                    (*h).saddr = src;
                    (*h).daddr = dst;
                }
                Encap::Done
            }
            _ => Encap::Broken,
        }
    }
}

/// What the new L2 header keeps of the old one: the MAC the frame arrived on (ours, in
/// two pieces as they are read and written) and the VLAN tag, if any.
struct SavedL2 {
    mac_head: u16,
    mac_tail: u32,
    vlan: Option<u32>,
}

/// Saves the L2 header and grows the head by `grow`. `None`: nothing was changed.
#[inline(always)]
fn grow(ctx: &XdpContext, p: &Packet, grow: usize) -> Option<SavedL2> {
    let head = ptr_at::<u16>(ctx, 0)?;
    let tail = ptr_at::<u32>(ctx, 2)?;
    let vlan = if p.l2_len == ETH_HLEN + 4 {
        let tag = ptr_at::<u32>(ctx, 12)?;
        // SAFETY: bounds checked by ptr_at.
        Some(unsafe { *tag })
    } else {
        None
    };
    // SAFETY: bounds checked by ptr_at.
    let (mac_head, mac_tail) = unsafe { (*head, *tail) };
    // SAFETY: ctx.ctx is the live xdp_md of this invocation.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(grow as i32)) } != 0 {
        return None;
    }
    Some(SavedL2 {
        mac_head,
        mac_tail,
        vlan,
    })
}

/// Ethernet header of the grown frame: to `node`, from our MAC, the saved VLAN tag, then
/// `ethertype`. `None` only if the grown frame is shorter than the header (impossible).
#[inline(always)]
fn write_l2(ctx: &XdpContext, node: &NodeInfo, saved: &SavedL2, ethertype: u16) -> Option<()> {
    /// Destination MAC in two stores, source MAC in two, then the rest.
    #[repr(C)]
    struct EthHead {
        dst_head: u32,
        dst_tail: u16,
        src_head: u16,
        src_tail: u32,
        proto_or_tpid: u16,
    }
    let eth = ptr_at_mut::<EthHead>(ctx, 0)?;
    let m = &node.mac;
    // SAFETY: bounds checked by ptr_at_mut.
    unsafe {
        (*eth).dst_head = u32::from_ne_bytes([m[0], m[1], m[2], m[3]]);
        (*eth).dst_tail = u16::from_ne_bytes([m[4], m[5]]);
        (*eth).src_head = saved.mac_head;
        (*eth).src_tail = saved.mac_tail;
    }
    match saved.vlan {
        Some(tag) => {
            let tail = ptr_at_mut::<[u16; 3]>(ctx, 12)?;
            let tag = tag.to_ne_bytes();
            // SAFETY: bounds checked by ptr_at_mut.
            unsafe {
                (*tail)[0] = u16::from_ne_bytes([tag[0], tag[1]]);
                (*tail)[1] = u16::from_ne_bytes([tag[2], tag[3]]);
                (*tail)[2] = ethertype.to_be();
            }
        }
        // SAFETY: bounds checked by ptr_at_mut above.
        None => unsafe { (*eth).proto_or_tpid = ethertype.to_be() },
    }
    Some(())
}
