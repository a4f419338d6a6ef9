//! `lb_xdp`: the entry point on the node NIC. The order of checks for a packet to a
//! VIP:port is: ACL, penalty box, packets/s, flow lookup, new connections/s, SYN cookies
//! (flows not yet known, when `syn-cookie-threshold` is set), steering. Before all of
//! them, right after parsing, this CPU's last drop verdict (`last_drop`) may answer.
use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::{
    CONFIG_KEY, Config, NO_NODE, NODE_REDIRECT, PROTO_TCP, Reason, VIP_FLAG_ADDR_ONLY,
};

use crate::{
    acl, clock,
    encap::{self, Encap},
    last_drop,
    maps::CONFIG,
    parse::{self, ETH_HLEN, Kind, Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    ratelimit, redirect, stats, steer,
    syncookie::{self, Reply},
    vips,
};

xdp_program!(lb_xdp => run);

/// A trivial program that passes everything: the benchmark baseline, and what test
/// topologies attach to the far end of a veth that must receive XDP_TX frames.
#[xdp]
pub fn lb_xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Everything `lb_xdp` does (also run by the benchmark program `lb_xdp_restore`).
#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    let Some(pkt) = parse::parse(ctx) else {
        return xdp_action::XDP_PASS;
    };
    let len = (ctx.data_end() - ctx.data()) as u64;
    let is_tcp = pkt.flow.proto == PROTO_TCP;
    let syn = is_tcp && pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    match pkt.kind {
        Kind::L4 => {
            if last_drop::covers(&pkt.flow, syn, len) {
                return xdp_action::XDP_DROP;
            }
        }
        Kind::Malformed => {
            // Dropped only when sent to a VIP address; everything else is the stack's.
            return match vips::lookup(&pkt.vip_key().address_only()) {
                Some(vip) => {
                    stats::count(vip.id, Reason::DropMalformed, len);
                    xdp_action::XDP_DROP
                }
                None => xdp_action::XDP_PASS,
            };
        }
        Kind::IcmpError => return icmp_error(ctx, &pkt, len),
        Kind::Other => return xdp_action::XDP_PASS,
    }
    let Some(vip) = vips::lookup(&pkt.vip_key()) else {
        return xdp_action::XDP_PASS;
    };
    let (vip_id, vip_flags) = (vip.id, vip.flags);
    if vip_flags & VIP_FLAG_ADDR_ONLY != 0 {
        // An address-only key can only match port 0 / protocol 0: not real traffic.
        return xdp_action::XDP_PASS;
    }
    let Some(cfg) = CONFIG.get(CONFIG_KEY) else {
        return xdp_action::XDP_PASS;
    };
    let flow = &pkt.flow;
    let src = ratelimit::source_key(flow);
    let refused = |reason, syn_only, until| {
        stats::count(vip_id, reason, len);
        last_drop::record(flow, vip_id, reason, syn_only, until);
        xdp_action::XDP_DROP
    };
    if let Some(until) = acl::denied(&src, cfg) {
        return refused(Reason::DropAcl, false, until);
    }
    if cfg.penalty_active != 0
        && let Some(until) = ratelimit::penalized(&src)
    {
        return refused(Reason::DropPenalty, false, until);
    }
    if let Err(until) = ratelimit::charge_packet(&src, cfg) {
        return refused(Reason::DropRatePps, false, until);
    }

    // New connection: a TCP SYN without ACK (known from the flags, so a SYN flood over
    // the limit is dropped before the flow lookup), or a UDP datagram of no known flow.
    if syn && let Err(until) = ratelimit::charge_conn(&src, cfg) {
        return refused(Reason::DropRateConn, true, until);
    }
    let now = if is_tcp { 0 } else { clock::coarse_ns() };
    let choice = steer::lookup(flow, cfg, now, syn);
    let new_conn = syn || (!is_tcp && !choice.hit);
    if !is_tcp && new_conn && ratelimit::charge_conn(&src, cfg).is_err() {
        stats::count(vip_id, Reason::DropRateConn, len);
        return xdp_action::XDP_DROP;
    }
    if is_tcp
        && !choice.hit
        && cfg.syn_cookie_threshold != 0
        && let Some(action) = syn_cookies(ctx, &pkt, cfg, vip_id, new_conn, choice.node, len)
    {
        return action;
    }
    if choice.hit {
        stats::count(vip_id, Reason::FlowHit, len);
    } else {
        stats::count(vip_id, Reason::FlowMiss, len);
    }
    // TCP flows are remembered from their SYN only: a later packet of no known flow (the
    // last ACK after a FIN removed the entry, or a flow LRU evicted) is steered by Maglev
    // without creating an entry that would outlive the connection.
    let closing = is_tcp && pkt.tcp_flags & (TCP_FIN | TCP_RST) != 0;
    if closing {
        if choice.hit {
            steer::forget(flow);
        }
    } else if !choice.hit && (new_conn || !is_tcp) {
        steer::remember(flow, choice.node, now, cfg);
    }
    forward(ctx, &pkt, cfg, vip_id, choice.node, len)
}

/// SYN cookies (see `syncookie`) for a TCP packet of no known flow: a SYN over the
/// threshold for a flow served here is answered with a cookie; a pure ACK carrying a valid
/// cookie is admitted (remembered as local, passed). `None`: handle the packet as usual.
#[inline(always)]
fn syn_cookies(
    ctx: &XdpContext,
    pkt: &Packet,
    cfg: &Config,
    vip_id: u32,
    syn: bool,
    node: u32,
    len: u64,
) -> Option<u32> {
    if syn {
        let w = syncookie::engaged(vip_id, cfg)?;
        if steer::remote_node(node).is_some() {
            return None;
        }
        return match syncookie::answer_syn(ctx, pkt, w) {
            Reply::Sent => {
                stats::count(vip_id, Reason::FlowMiss, len);
                stats::count(vip_id, Reason::SyncookieSent, len);
                Some(xdp_action::XDP_TX)
            }
            Reply::Broken => {
                stats::count(vip_id, Reason::DropMalformed, len);
                Some(xdp_action::XDP_DROP)
            }
            Reply::Skipped => None,
        };
    }
    if pkt.tcp_flags & (TCP_SYN | TCP_RST | TCP_FIN | TCP_ACK) != TCP_ACK
        || !syncookie::valid_ack(ctx, pkt)
    {
        return None;
    }
    stats::count(vip_id, Reason::FlowMiss, len);
    stats::count(vip_id, Reason::SyncookieAccepted, len);
    steer::remember(&pkt.flow, NO_NODE, 0, cfg);
    stats::count(vip_id, Reason::PassLocal, len);
    Some(xdp_action::XDP_PASS)
}

/// Passes locally or encapsulates to the serving node (out of the arrival interface, or
/// redirected to the one the route to the node leaves by), and counts which.
#[inline(always)]
fn forward(ctx: &XdpContext, pkt: &Packet, cfg: &Config, vip_id: u32, node: u32, len: u64) -> u32 {
    if let Some(info) = steer::remote_node(node) {
        let flags = info.flags;
        match encap::encapsulate(ctx, pkt, info, cfg) {
            Encap::Done => {
                stats::count(vip_id, Reason::SteeredRemote, len);
                if flags & NODE_REDIRECT != 0 {
                    return redirect::send(ctx, node, pkt.l2_len != ETH_HLEN);
                }
                return xdp_action::XDP_TX;
            }
            Encap::Broken => {
                stats::count(vip_id, Reason::DropMalformed, len);
                return xdp_action::XDP_DROP;
            }
            Encap::Skipped => {}
        }
    }
    stats::count(vip_id, Reason::PassLocal, len);
    xdp_action::XDP_PASS
}

/// "Fragmentation needed" / "packet too big" for a VIP flow goes where the flow goes.
/// Not subject to ACLs or limits (routers send these), and never creates a flow.
#[inline(always)]
fn icmp_error(ctx: &XdpContext, pkt: &Packet, len: u64) -> u32 {
    let Some(vip) = vips::lookup(&pkt.vip_key()) else {
        return xdp_action::XDP_PASS;
    };
    let vip_id = vip.id;
    let Some(cfg) = CONFIG.get(CONFIG_KEY) else {
        return xdp_action::XDP_PASS;
    };
    let choice = steer::lookup(&pkt.flow, cfg, clock::coarse_ns(), false);
    forward(ctx, pkt, cfg, vip_id, choice.node, len)
}
