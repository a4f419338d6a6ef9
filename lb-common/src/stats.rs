//! Per-CPU counters kept by the kernel programs.

/// Why a packet to a VIP was counted. The row of `STATS` for a VIP holds one
/// [`Counter`] per reason. A packet can be counted under several reasons (a flow miss
/// that is then steered to another node counts `flow_miss` and `steered_remote`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Passed to the local stack (this node's proxy serves it).
    PassLocal = 0,
    /// Encapsulated (IPIP / IP6IP6) and sent to the node that serves the flow.
    SteeredRemote = 1,
    /// Arrived encapsulated from another node; `lb_tc_decap` stripped the outer header.
    Decapsulated = 2,
    /// Source in the deny list, or not in a non-empty allow list.
    DropAcl = 3,
    /// Source over its new-connections-per-second budget.
    DropRateConn = 4,
    /// Source over its packets-per-second budget.
    DropRatePps = 5,
    /// Source in the penalty box.
    DropPenalty = 6,
    /// To a VIP but not something we steer: IP fragment, IPv6 extension header,
    /// truncated or inconsistent L4 header (see `lb-ebpf/src/parse.rs` for the policy).
    DropMalformed = 7,
    /// SYN answered with a SYN cookie (XDP_TX).
    SyncookieSent = 8,
    /// ACK carrying a valid SYN cookie admitted.
    SyncookieAccepted = 9,
    /// The flow was found in `FLOWS`.
    FlowHit = 10,
    /// The flow was not in `FLOWS`: Maglev chose its node.
    FlowMiss = 11,
}

impl Reason {
    /// Number of reasons: the width of one VIP's row in `STATS`.
    pub const COUNT: u32 = 12;
    pub const ALL: [Reason; Self::COUNT as usize] = [
        Reason::PassLocal,
        Reason::SteeredRemote,
        Reason::Decapsulated,
        Reason::DropAcl,
        Reason::DropRateConn,
        Reason::DropRatePps,
        Reason::DropPenalty,
        Reason::DropMalformed,
        Reason::SyncookieSent,
        Reason::SyncookieAccepted,
        Reason::FlowHit,
        Reason::FlowMiss,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Reason::PassLocal => "pass_local",
            Reason::SteeredRemote => "steered_remote",
            Reason::Decapsulated => "decapsulated",
            Reason::DropAcl => "drop_acl",
            Reason::DropRateConn => "drop_rate_conn",
            Reason::DropRatePps => "drop_rate_pps",
            Reason::DropPenalty => "drop_penalty",
            Reason::DropMalformed => "drop_malformed",
            Reason::SyncookieSent => "syncookie_sent",
            Reason::SyncookieAccepted => "syncookie_accepted",
            Reason::FlowHit => "flow_hit",
            Reason::FlowMiss => "flow_miss",
        }
    }

    /// Index of `(vip_id, self)` in `STATS`.
    pub const fn index(self, vip_id: u32) -> u32 {
        vip_id * Self::COUNT + self as u32
    }
}

/// Value of `STATS` (per CPU): packets and bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<Counter>() == 16);

#[cfg(feature = "user")]
// SAFETY: two u64, no padding (size asserted above).
unsafe impl aya::Pod for Counter {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_reason_in_index_order() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        assert_eq!(Reason::ALL.len(), Reason::COUNT as usize);
    }
}
