//! Names and sizes of the pinned maps and programs. The daemon pins each map under
//! `--bpffs DIR/<NAME>`; operators read them with `bpftool map dump pinned DIR/<NAME>`.

/// VIP:port:protocol -> [`crate::VipInfo`]; plus one address-only entry per VIP address
/// (port 0, proto 0) so fragments and ICMP to a VIP address can be recognised.
pub const VIPS: &str = "VIPS";
/// Array of [`crate::VipSlot`]: `VIPS` placed by [`crate::vip_slot`] for the XDP fast path.
pub const VIP_INDEX: &str = "VIP_INDEX";
/// Per-CPU counters, indexed by `vip_id * Reason::COUNT + reason`.
pub const STATS: &str = "STATS";
/// [`crate::Config`] at index 0.
pub const CONFIG: &str = "CONFIG";
/// LRU hash [`crate::FlowKey`] -> [`crate::FlowValue`].
pub const FLOWS: &str = "FLOWS";
/// Array of `2 * MAGLEV_SIZE` node indices (two halves, `Config::maglev_active` is live).
pub const MAGLEV: &str = "MAGLEV";
/// Array of [`crate::NodeInfo`], indexed by node index.
pub const NODES: &str = "NODES";
/// Array of [`crate::EgressPort`] by node index (see [`crate::NODE_REDIRECT`]).
pub const EGRESS: &str = "EGRESS";
/// Device map by node index: the interface `lb_xdp` redirects a `NODE_REDIRECT` node's
/// frames to (`bpftool map dump` shows the ifindex).
pub const TX_PORTS: &str = "TX_PORTS";
/// LRU hash [`crate::SourceKey`] -> [`crate::SourceState`] (rate-limit buckets).
pub const SOURCES: &str = "SOURCES";
/// LRU hash [`crate::SourceKey`] -> expiry (ktime ns).
pub const PENALTY: &str = "PENALTY";
/// LPM tries of source prefixes (key: prefix length + address bytes).
pub const DENY_V4: &str = "DENY_V4";
pub const DENY_V6: &str = "DENY_V6";
pub const ALLOW_V4: &str = "ALLOW_V4";
pub const ALLOW_V6: &str = "ALLOW_V6";
/// Per-CPU [`crate::SynWindow`] per VIP id: SYN rate and SYN-cookie state.
pub const SYN_RATE: &str = "SYN_RATE";

/// Every pinned map, in the order `ebpf-lb maps` lists them.
pub const PINNED_MAPS: [&str; 16] = [
    VIPS, VIP_INDEX, STATS, CONFIG, FLOWS, MAGLEV, NODES, EGRESS, TX_PORTS, SOURCES, PENALTY,
    DENY_V4, DENY_V6, ALLOW_V4, ALLOW_V6, SYN_RATE,
];

/// Most VIP:port:protocol entries one node serves (address-only entries included).
pub const MAX_VIPS: u32 = 512;
/// Entries in `STATS`: one row of reasons per possible VIP id.
pub const STATS_ENTRIES: u32 = MAX_VIPS * crate::Reason::COUNT;
/// Default size of `FLOWS` (the daemon may load it with another size).
pub const FLOWS_ENTRIES: u32 = 262_144;
/// Default size of `SOURCES`.
pub const SOURCES_ENTRIES: u32 = 65_536;
/// Default size of `PENALTY`.
pub const PENALTY_ENTRIES: u32 = 16_384;
/// Prefixes in each ACL trie.
pub const ACL_ENTRIES: u32 = 4_096;
/// Entries of `MAGLEV`: two halves.
pub const MAGLEV_ENTRIES: u32 = 2 * crate::MAGLEV_SIZE;

/// Name of the XDP program in the object file.
pub const PROG_XDP: &str = "lb_xdp";
/// Name of the TC ingress program that strips IPIP/IP6IP6 addressed to this node.
pub const PROG_TC_DECAP: &str = "lb_tc_decap";
/// A trivial XDP_PASS program: the benchmark baseline, and what test topologies attach to
/// the far end of a veth that must receive XDP_TX frames.
pub const PROG_XDP_PASS: &str = "lb_xdp_pass";
/// Name of the pinned XDP link.
pub const LINK_XDP: &str = "lb_xdp_link";
/// Name of the pinned TC link.
pub const LINK_TC: &str = "lb_tc_decap_link";
/// Name (before `_IFACE`) of the pinned TC link on the interface holding `--node-ip`, when
/// that is not `--iface` (steered packets arrive there).
pub const LINK_TC_NODE: &str = "lb_tc_decap_node_link";
