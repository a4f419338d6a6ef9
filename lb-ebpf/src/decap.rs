//! `lb_tc_decap` (TC ingress on the node NIC): strips the IPIP / IP6IP6 header that another
//! node's `lb_xdp` put around a VIP packet, when the outer destination is this node and the
//! inner destination is one of our VIP addresses, and hands the inner packet to the stack
//! (where the VIP sits on `lo`). Anything else passes untouched.
//!
//! TC rather than XDP: `bpf_skb_adjust_room` keeps the skb's offsets and checksum state
//! consistent, and the packet has already passed `lb_xdp` on this node (which lets IPIP
//! through: it is not TCP/UDP to a VIP).
use aya_ebpf::{
    bindings::{TC_ACT_OK, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC},
    macros::classifier,
    programs::TcContext,
};
use lb_common::{CONFIG_KEY, PROTO_TCP, PROTO_UDP, Reason, VipKey};

use crate::{
    maps::{CONFIG, VIPS},
    parse::{ETH_HLEN, ETH_P_IP, ETH_P_IPV6, IPV4_HLEN, IPV6_HLEN},
    stats,
};

const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;

#[classifier]
pub fn lb_tc_decap(ctx: TcContext) -> i32 {
    try_decap(&ctx);
    TC_ACT_OK
}

#[inline(always)]
fn try_decap(ctx: &TcContext) -> Option<()> {
    let ethertype = u16::from_be(ctx.load::<u16>(12).ok()?);
    let cfg = CONFIG.get(CONFIG_KEY)?;
    let (outer_len, vip) = match ethertype {
        ETH_P_IP => {
            let o = ctx.load::<[u8; IPV4_HLEN]>(ETH_HLEN).ok()?;
            // Our own encapsulation: no options, not fragmented, to this node.
            if o[0] != 0x45 || o[9] != IPPROTO_IPIP || o[6] & 0x3f != 0 || o[7] != 0 {
                return None;
            }
            if cfg.node_v4 == [0; 4] || o[16..20] != cfg.node_v4 {
                return None;
            }
            let inner = ETH_HLEN + IPV4_HLEN;
            let i = ctx.load::<[u8; IPV4_HLEN]>(inner).ok()?;
            if i[0] >> 4 != 4 {
                return None;
            }
            let ihl = ((i[0] & 0x0f) as usize) * 4;
            let key = VipKey::v4([i[16], i[17], i[18], i[19]], 0, 0);
            (IPV4_HLEN, vip_id(ctx, &key, i[9], inner + ihl)?)
        }
        ETH_P_IPV6 => {
            let o = ctx.load::<[u8; IPV6_HLEN]>(ETH_HLEN).ok()?;
            if o[0] >> 4 != 6 || o[6] != IPPROTO_IPV6 {
                return None;
            }
            if cfg.node_v6 == [0; 16] || o[24..40] != cfg.node_v6 {
                return None;
            }
            let inner = ETH_HLEN + IPV6_HLEN;
            let i = ctx.load::<[u8; IPV6_HLEN]>(inner).ok()?;
            if i[0] >> 4 != 6 {
                return None;
            }
            let mut addr = [0u8; 16];
            addr.copy_from_slice(&i[24..40]);
            let key = VipKey::v6(addr, 0, 0);
            (IPV6_HLEN, vip_id(ctx, &key, i[6], inner + IPV6_HLEN)?)
        }
        _ => return None,
    };
    let len = ctx.len() as u64;
    ctx.adjust_room(-(outer_len as i32), BPF_ADJ_ROOM_MAC, 0)
        .ok()?;
    stats::count(vip, Reason::Decapsulated, len);
    Some(())
}

/// The STATS row for the inner packet: its VIP:port, else its VIP address; `None` when
/// the inner destination is not ours (then the packet is not decapsulated).
#[inline(always)]
fn vip_id(ctx: &TcContext, key: &VipKey, proto: u8, l4: usize) -> Option<u32> {
    if (proto == PROTO_TCP || proto == PROTO_UDP)
        && let Ok(ports) = ctx.load::<[u8; 4]>(l4)
    {
        let mut port_key = *key;
        port_key.port = u16::from_be_bytes([ports[2], ports[3]]);
        port_key.proto = proto;
        if let Some(v) = VIPS.get_ptr(port_key) {
            // SAFETY: VIPS values are replaced whole by userspace; copied out now.
            return Some(unsafe { (*v).id });
        }
    }
    let v = VIPS.get_ptr(*key)?;
    // SAFETY: as above.
    Some(unsafe { (*v).id })
}
