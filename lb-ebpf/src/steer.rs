//! Which node serves a flow: `FLOWS` first (established flows stay where they are), else
//! the live half of `MAGLEV`.
use lb_common::{
    Config, FlowKey, FlowValue, MAGLEV_SIZE, NO_NODE, NODE_LOCAL, NodeInfo, PROTO_TCP,
};

use crate::{
    flow_cache,
    maps::{FLOWS, MAGLEV, NODES},
};

/// Result of [`lookup`].
pub struct Choice {
    /// Index into `NODES`, or `NO_NODE` for "this node".
    pub node: u32,
    /// Found in `FLOWS` (and, for UDP, not idle past the timeout).
    pub hit: bool,
}

/// Looks the flow up in this CPU's `FLOW_CACHE` (TCP, not a SYN), then in `FLOWS`; on a
/// miss asks Maglev (without inserting: the caller inserts once the new flow passed the
/// connection limit).
#[inline(always)]
pub fn lookup(flow: &FlowKey, cfg: &Config, now: u64, syn: bool) -> Choice {
    let tcp = flow.proto == PROTO_TCP;
    if tcp
        && !syn
        && let Some(node) = flow_cache::get(flow, cfg)
    {
        return Choice { node, hit: true };
    }
    if let Some(v) = FLOWS.get_ptr_mut(flow) {
        // SAFETY: a live element of FLOWS; fields are plain integers.
        let v = unsafe { &mut *v };
        if tcp {
            flow_cache::put(flow, v.node, cfg);
            return Choice {
                node: v.node,
                hit: true,
            };
        }
        // Idle for the timeout or longer: chosen again. Saturating: `last_ns` may come from
        // the precise clock (userspace), `now` from the coarse one a tick behind.
        if now.saturating_sub(v.last_ns) < cfg.udp_flow_timeout_ns {
            v.last_ns = now;
            return Choice {
                node: v.node,
                hit: true,
            };
        }
    }
    Choice {
        node: maglev(flow, cfg),
        hit: false,
    }
}

/// The node Maglev gives the flow, or `NO_NODE` when steering is off.
#[inline(always)]
pub fn maglev(flow: &FlowKey, cfg: &Config) -> u32 {
    if cfg.steering == 0 {
        return NO_NODE;
    }
    let half = if cfg.maglev_active == 1 {
        MAGLEV_SIZE
    } else {
        0
    };
    match MAGLEV.get(half + lb_common::maglev_slot(flow)) {
        Some(n) => *n,
        None => NO_NODE,
    }
}

/// Inserts the flow in `FLOWS` (and, for TCP, this CPU's `FLOW_CACHE`).
#[inline(always)]
pub fn remember(flow: &FlowKey, node: u32, now: u64, cfg: &Config) {
    if flow.proto == PROTO_TCP {
        flow_cache::put(flow, node, cfg);
    }
    let _ = FLOWS.insert(
        flow,
        FlowValue {
            node,
            _pad: 0,
            last_ns: now,
        },
        0,
    );
}

/// Removes the flow from `FLOWS` and this CPU's `FLOW_CACHE`.
#[inline(always)]
pub fn forget(flow: &FlowKey) {
    flow_cache::forget(flow);
    let _ = FLOWS.remove(flow);
}

/// The node to encapsulate to, or `None` when the flow is served here.
#[inline(always)]
pub fn remote_node(node: u32) -> Option<&'static NodeInfo> {
    if node == NO_NODE {
        return None;
    }
    let info = NODES.get(node)?;
    if info.flags & NODE_LOCAL != 0 {
        return None;
    }
    Some(info)
}
