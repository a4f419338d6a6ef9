//! Every map the programs use. Names and sizes come from `lb_common::maps`; the daemon pins
//! each one under `--bpffs DIR/<NAME>`.
use aya_ebpf::{
    btf_maps::{HashMap, PerCpuArray},
    macros::btf_map,
};
use lb_common::{Counter, MAX_VIPS, STATS_ENTRIES, VipInfo, VipKey};

/// VIP:port:protocol this node load-balances -> its id and policy.
#[btf_map]
pub static VIPS: HashMap<VipKey, VipInfo, { MAX_VIPS as usize }> = HashMap::new();

/// Per-CPU packet/byte counters per VIP and reason (`vip_id * Reason::COUNT + reason`).
#[btf_map]
pub static STATS: PerCpuArray<Counter, { STATS_ENTRIES as usize }> = PerCpuArray::new();
