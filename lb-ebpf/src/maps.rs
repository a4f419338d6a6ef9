//! Every map the programs use. Names and sizes come from `lb_common::maps`; the daemon pins
//! each one under `--bpffs DIR/<NAME>`.
use aya_ebpf::{
    btf_maps::{Array, DevMap, HashMap, LpmTrie, LruHashMap, PerCpuArray},
    macros::btf_map,
};
use lb_common::{
    ACL_ENTRIES, AclValue, Config, Counter, EgressPort, FLOWS_ENTRIES, FlowKey, FlowValue,
    MAGLEV_ENTRIES, MAX_NODES, MAX_VIPS, NodeInfo, PENALTY_ENTRIES, SOURCES_ENTRIES, STATS_ENTRIES,
    SourceKey, SourceState, SynWindow, VIP_INDEX_SLOTS, VipInfo, VipKey, VipSlot,
};

/// VIP:port:protocol this node load-balances (and address-only keys) -> its id and flags.
#[btf_map]
pub static VIPS: HashMap<VipKey, VipInfo, { MAX_VIPS as usize }> = HashMap::new();

/// `VIPS` direct-mapped by `lb_common::vip_slot`: what each packet reads first (see `vips`).
#[btf_map]
pub static VIP_INDEX: Array<VipSlot, { VIP_INDEX_SLOTS as usize }> = Array::new();

/// Per-CPU packet/byte counters per VIP and reason (`vip_id * Reason::COUNT + reason`).
#[btf_map]
pub static STATS: PerCpuArray<Counter, { STATS_ENTRIES as usize }> = PerCpuArray::new();

/// Limits, steering switches and this node's addresses (one entry, written by the daemon).
#[btf_map]
pub static CONFIG: Array<Config, 1> = Array::new();

/// Established flows (client 5-tuple) -> serving node; LRU, so idle flows age out.
#[btf_map]
pub static FLOWS: LruHashMap<FlowKey, FlowValue, { FLOWS_ENTRIES as usize }> = LruHashMap::new();

/// Two Maglev tables of node indices; `Config::maglev_active` says which one is live.
#[btf_map]
pub static MAGLEV: Array<u32, { MAGLEV_ENTRIES as usize }> = Array::new();

/// Proxy nodes by index: addresses and the MAC encapsulated frames are sent to.
#[btf_map]
pub static NODES: Array<NodeInfo, { MAX_NODES as usize }> = Array::new();

/// By node index: the interface and source MAC of `NODE_REDIRECT` nodes (see `redirect`).
#[btf_map]
pub static EGRESS: Array<EgressPort, { MAX_NODES as usize }> = Array::new();

/// By node index: the device `NODE_REDIRECT` nodes' frames are redirected to.
#[btf_map]
pub static TX_PORTS: DevMap<{ MAX_NODES as usize }> = DevMap::new();

/// Per-source token buckets (new connections/s, packets/s); LRU bounds the memory.
#[btf_map]
pub static SOURCES: LruHashMap<SourceKey, SourceState, { SOURCES_ENTRIES as usize }> =
    LruHashMap::new();

/// Sources the proxy reported as abusive -> ktime (ns) until which they are dropped.
#[btf_map]
pub static PENALTY: LruHashMap<SourceKey, u64, { PENALTY_ENTRIES as usize }> = LruHashMap::new();

/// IPv4 source prefixes to drop (deny wins over allow).
#[btf_map]
pub static DENY_V4: LpmTrie<[u8; 4], AclValue, { ACL_ENTRIES as usize }> = LpmTrie::new();

/// IPv6 source prefixes to drop.
#[btf_map]
pub static DENY_V6: LpmTrie<[u8; 16], AclValue, { ACL_ENTRIES as usize }> = LpmTrie::new();

/// IPv4 source prefixes allowed; when `Config::allow_v4` is 0 every source is allowed.
#[btf_map]
pub static ALLOW_V4: LpmTrie<[u8; 4], AclValue, { ACL_ENTRIES as usize }> = LpmTrie::new();

/// IPv6 source prefixes allowed; when `Config::allow_v6` is 0 every source is allowed.
#[btf_map]
pub static ALLOW_V6: LpmTrie<[u8; 16], AclValue, { ACL_ENTRIES as usize }> = LpmTrie::new();

/// Per-CPU SYN counting window and listener state per VIP id (see `syncookie`).
#[btf_map]
pub static SYN_RATE: PerCpuArray<SynWindow, { MAX_VIPS as usize }> = PerCpuArray::new();

/// Per-CPU working memory of `syncookie` (too big for the BPF stack); not pinned.
#[btf_map]
pub static SCRATCH: PerCpuArray<crate::syncookie::Scratch, 1> = PerCpuArray::new();

/// Per-CPU tick time cached by jiffies (see `clock`); not pinned.
#[btf_map]
pub static CLOCK: PerCpuArray<crate::clock::TickCache, 1> = PerCpuArray::new();

/// Per-CPU last drop verdict (see `last_drop`); not pinned.
#[btf_map]
pub static LAST_DROP: PerCpuArray<crate::last_drop::Verdict, 1> = PerCpuArray::new();

/// Per-CPU cache of sources this CPU refused and until when (see `refused`); not pinned.
#[btf_map]
pub static REFUSED: PerCpuArray<
    crate::refused::Refusal,
    { crate::refused::REFUSED_SLOTS as usize },
> = PerCpuArray::new();

/// Per-CPU copy of established TCP flows' `FLOWS` entries (see `flow_cache`); not pinned.
#[btf_map]
pub static FLOW_CACHE: PerCpuArray<
    crate::flow_cache::CachedFlow,
    { crate::flow_cache::FLOW_CACHE_SLOTS as usize },
> = PerCpuArray::new();
