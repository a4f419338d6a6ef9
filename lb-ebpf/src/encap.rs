//! IPIP (IPv4 in IPv4) and IP6IP6 encapsulation in XDP: grow the frame at its head, move
//! the Ethernet header (and VLAN tag) forward, write the outer IP header. The outer source
//! is this node (`Config::node_v4/6`), the destination the serving node; the frame goes to
//! that node's MAC from the MAC it arrived on (ours). The inner packet is not touched, so
//! its checksums stay valid; the outer IPv4 header checksum is computed here.
use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{Config, FAMILY_V4, NODE_HAS_V4, NODE_HAS_V6, NodeInfo};

use crate::{
    csum,
    parse::{ETH_HLEN, ETH_P_IP, ETH_P_IPV6, IPV4_HLEN, IPV6_HLEN, Packet, ptr_at, ptr_at_mut},
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
    let grown = if p.flow.family == FAMILY_V4 {
        if node.flags & NODE_HAS_V4 == 0 || cfg.node_v4 == [0; 4] || p.ip_len > 0xffff - 20 {
            return Encap::Skipped;
        }
        let Some(h) = outer_v4(ctx, p, node, cfg) else {
            return Encap::Skipped;
        };
        match grow_and_write_l2(ctx, p, node, IPV4_HLEN, ETH_P_IP) {
            Err(()) => return Encap::Skipped,
            Ok(None) => return Encap::Broken,
            Ok(Some(())) => write_outer(ctx, p.l2_len, &h),
        }
    } else {
        if node.flags & NODE_HAS_V6 == 0 || cfg.node_v6 == [0; 16] || p.ip_len > 0xffff {
            return Encap::Skipped;
        }
        let h = outer_v6(p, node, cfg);
        match grow_and_write_l2(ctx, p, node, IPV6_HLEN, ETH_P_IPV6) {
            Err(()) => return Encap::Skipped,
            Ok(None) => return Encap::Broken,
            Ok(Some(())) => write_outer(ctx, p.l2_len, &h),
        }
    };
    match grown {
        Some(()) => Encap::Done,
        None => Encap::Broken,
    }
}

/// Writes the outer header `h` right after the L2 header (14 or 18 bytes).
#[inline(always)]
fn write_outer<const N: usize>(ctx: &XdpContext, l2_len: usize, h: &[u8; N]) -> Option<()> {
    let outer = if l2_len == ETH_HLEN {
        ptr_at_mut::<[u8; N]>(ctx, ETH_HLEN)?
    } else {
        ptr_at_mut::<[u8; N]>(ctx, ETH_HLEN + 4)?
    };
    // SAFETY: bounds checked by ptr_at_mut.
    unsafe { *outer = *h };
    Some(())
}

/// Saves the L2 header (our MAC and an optional VLAN tag), grows the head by `grow`, and
/// writes the new L2 header to `node`. `Err`: nothing was changed. `Ok(None)`: the head
/// grew but the L2 header could not be written (cannot happen once the frame grew; the
/// caller drops such a frame rather than pass garbage).
#[inline(always)]
fn grow_and_write_l2(
    ctx: &XdpContext,
    p: &Packet,
    node: &NodeInfo,
    grow: usize,
    ethertype: u16,
) -> Result<Option<()>, ()> {
    let mac = ptr_at::<[u8; 6]>(ctx, 0).ok_or(())?;
    // SAFETY: bounds checked by ptr_at.
    let our_mac = unsafe { *mac };
    let vlan = if p.l2_len == ETH_HLEN + 4 {
        let tag = ptr_at::<[u8; 4]>(ctx, 12).ok_or(())?;
        // SAFETY: bounds checked by ptr_at.
        Some(unsafe { *tag })
    } else {
        None
    };
    // SAFETY: ctx.ctx is the live xdp_md of this invocation.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(grow as i32)) } != 0 {
        return Err(());
    }
    Ok(write_l2(ctx, node, &our_mac, vlan, ethertype))
}

#[inline(always)]
fn write_l2(
    ctx: &XdpContext,
    node: &NodeInfo,
    our_mac: &[u8; 6],
    vlan: Option<[u8; 4]>,
    ethertype: u16,
) -> Option<()> {
    let eth = ptr_at_mut::<[u8; ETH_HLEN]>(ctx, 0)?;
    // SAFETY: bounds checked by ptr_at_mut.
    let eth = unsafe { &mut *eth };
    eth[0..6].copy_from_slice(&node.mac);
    eth[6..12].copy_from_slice(our_mac);
    match vlan {
        Some(tag) => {
            let l2 = ptr_at_mut::<[u8; ETH_HLEN + 4]>(ctx, 0)?;
            // SAFETY: bounds checked by ptr_at_mut.
            let l2 = unsafe { &mut *l2 };
            l2[12..16].copy_from_slice(&tag);
            l2[16..18].copy_from_slice(&ethertype.to_be_bytes());
        }
        None => eth[12..14].copy_from_slice(&ethertype.to_be_bytes()),
    }
    Some(())
}

/// The outer IPv4 header (checksum filled in).
#[inline(always)]
fn outer_v4(ctx: &XdpContext, p: &Packet, node: &NodeInfo, cfg: &Config) -> Option<[u8; 20]> {
    // The inner TOS, so QoS marking survives the tunnel.
    let tos = ptr_at::<u8>(ctx, p.l2_len + 1)?;
    let mut h = [0u8; IPV4_HLEN];
    h[0] = 0x45;
    // SAFETY: bounds checked by ptr_at.
    h[1] = unsafe { *tos };
    h[2..4].copy_from_slice(&((p.ip_len + IPV4_HLEN as u32) as u16).to_be_bytes());
    // Identification 0; DF copied from the inner header (RFC 2003 section 3.1).
    h[6] = if p.dont_fragment { 0x40 } else { 0 };
    h[8] = OUTER_TTL;
    h[9] = IPPROTO_IPIP;
    h[12..16].copy_from_slice(&cfg.node_v4);
    h[16..20].copy_from_slice(&node.v4);
    let c = csum::ipv4_header(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    Some(h)
}

/// The outer IPv6 header (IPv6 has no header checksum).
#[inline(always)]
fn outer_v6(p: &Packet, node: &NodeInfo, cfg: &Config) -> [u8; 40] {
    let mut h = [0u8; IPV6_HLEN];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(p.ip_len as u16).to_be_bytes());
    h[6] = IPPROTO_IPV6;
    h[7] = OUTER_TTL;
    h[8..24].copy_from_slice(&cfg.node_v6);
    h[24..40].copy_from_slice(&node.v6);
    h
}
