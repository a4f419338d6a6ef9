//! Kernel policy: the `CONFIG` record, per-source rate-limit state and the penalty box.

/// The one entry of `CONFIG` (an array of length 1): limits, steering switches and this
/// node's own addresses. Written whole by the daemon; read once per packet.
///
/// Rate limits are GCRA token buckets kept as a "theoretical arrival time" per source:
/// a packet is admitted when `max(tat, now) + interval - now <= burst_ns`, so `burst`
/// packets may arrive at once and then one per `interval`. An interval of 0 turns the
/// limit off. All times are `bpf_ktime_get_ns` (CLOCK_MONOTONIC) nanoseconds.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Config {
    /// Nanoseconds per new connection per source (1e9 / xdp-conn-rate); 0 = off.
    pub conn_interval_ns: u64,
    /// Burst tolerance for new connections: xdp-conn-burst * conn_interval_ns.
    pub conn_burst_ns: u64,
    /// Nanoseconds per packet per source (1e9 / xdp-pps); 0 = off.
    pub pps_interval_ns: u64,
    /// Burst tolerance for packets: xdp-pps-burst * pps_interval_ns.
    pub pps_burst_ns: u64,
    /// UDP flows idle longer than this are chosen again by Maglev.
    pub udp_flow_timeout_ns: u64,
    /// SYNs per second to one VIP *per CPU* above which SYN cookies answer; 0 = off. The
    /// daemon writes the ConfigMap's `syn-cookie-threshold` divided by the number of CPUs
    /// (rounded up), so the counting stays per-CPU and lock-free.
    pub syn_cookie_threshold: u32,
    /// Which half of `MAGLEV` is live (0 or 1); flipped after the other half is written.
    pub maglev_active: u32,
    /// 1: steer new flows with `MAGLEV` over `NODES`; 0: every VIP packet is local.
    pub steering: u32,
    /// Entries in `ALLOW_V4`; 0 means every IPv4 source is allowed.
    pub allow_v4: u32,
    /// Entries in `ALLOW_V6`; 0 means every IPv6 source is allowed.
    pub allow_v6: u32,
    /// Entries in `DENY_V4`; 0 skips the lookup (the common case costs nothing).
    pub deny_v4: u32,
    /// Entries in `DENY_V6`; 0 skips the lookup.
    pub deny_v6: u32,
    /// 1 once `PENALTY` may hold an entry (set by the daemon when it penalizes a source or
    /// finds entries at start); 0 skips the lookup.
    pub penalty_active: u32,
    /// Bumped by the daemon whenever the node a flow may be steered to can change without
    /// the flow's own packets saying so (a new Maglev table, flows written from userspace):
    /// every CPU's `FLOW_CACHE` entries from an older epoch are ignored.
    pub flow_epoch: u32,
    /// This node's IPv4 address: outer source of IPIP, outer destination `lb_tc_decap` strips.
    pub node_v4: [u8; 4],
    /// This node's IPv6 address, for IP6IP6 (all zero: none).
    pub node_v6: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<Config>() == 96);

impl Config {
    /// `node_v4` as a native-endian word of its network-order bytes (0: none).
    #[inline(always)]
    pub fn node_v4_word(&self) -> u32 {
        u32::from_ne_bytes(self.node_v4)
    }

    /// `node_v6` as four words (all 0: none).
    #[inline(always)]
    pub fn node_v6_words(&self) -> [u32; 4] {
        crate::flow::addr_words(&self.node_v6)
    }
}

/// Key of `SOURCES` and `PENALTY`: a client address. IPv4 uses the first four bytes.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SourceKey {
    pub addr: [u8; 16],
    pub family: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<SourceKey>() == 20);

impl SourceKey {
    /// `addr` as four native-endian words (the key is aligned to 4).
    #[inline(always)]
    pub fn addr_words(&self) -> [u32; 4] {
        crate::flow::addr_words(&self.addr)
    }

    /// The key from an address as words (see [`crate::FlowKey::from_words`]).
    #[inline(always)]
    pub fn from_words(addr: [u32; 4], family: u8) -> Self {
        let words: [u32; 5] = [
            addr[0],
            addr[1],
            addr[2],
            addr[3],
            u32::from_ne_bytes([family, 0, 0, 0]),
        ];
        // SAFETY: same size (asserted above), plain integer fields in this order.
        unsafe { core::mem::transmute::<[u32; 5], SourceKey>(words) }
    }

    pub const fn v4(a: [u8; 4]) -> Self {
        let mut addr = [0u8; 16];
        addr[0] = a[0];
        addr[1] = a[1];
        addr[2] = a[2];
        addr[3] = a[3];
        Self {
            addr,
            family: crate::FAMILY_V4,
            _pad: [0; 3],
        }
    }

    pub const fn v6(addr: [u8; 16]) -> Self {
        Self {
            addr,
            family: crate::FAMILY_V6,
            _pad: [0; 3],
        }
    }
}

/// Value of `SOURCES`: the two GCRA buckets of one source.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SourceState {
    /// Theoretical arrival time of the next new connection.
    pub conn_tat: u64,
    /// Theoretical arrival time of the next packet.
    pub pps_tat: u64,
}
const _: () = assert!(core::mem::size_of::<SourceState>() == 16);

/// Value of `SYN_RATE` (per CPU, per VIP id): SYNs seen in the current one-second window
/// and whether the previous window was over the threshold (cookies stay on for the window
/// after a flood, so a flood at exactly the threshold does not flap).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SynWindow {
    /// Start of the current window (ktime ns).
    pub start_ns: u64,
    /// When this CPU last told the kernel's listener for this VIP that cookies are being
    /// sent (`bpf_tcp_gen_syncookie`), so it accepts the returning ACKs (ktime ns; 0: never).
    pub listener_ns: u64,
    /// SYNs in the current window.
    pub count: u32,
    /// 1 when the previous window went over the threshold.
    pub prev_over: u32,
}
const _: () = assert!(core::mem::size_of::<SynWindow>() == 24);

/// Value of the ACL tries: a marker (the prefix is the key).
pub type AclValue = u32;

/// Index of the single entry of `CONFIG`.
pub const CONFIG_KEY: u32 = 0;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)] integers and byte arrays, no implicit padding (sizes asserted).
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SourceKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SourceState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SynWindow {}
}
