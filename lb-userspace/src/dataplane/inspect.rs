//! Reading the pinned maps for `ebpf-lb maps` (and, later, metrics).
use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use aya::maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray};
use lb_common::{Counter, FAMILY_V4, PROTO_TCP, PROTO_UDP, Reason, STATS, VIPS, VipInfo, VipKey};

use super::DataplaneError;

/// One VIP with its counters summed over CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipCounters {
    pub key: VipKey,
    pub id: u32,
    /// (reason, counter) for every reason.
    pub counters: Vec<(Reason, Counter)>,
}

/// Reads `VIPS` and `STATS` pinned under `bpffs`.
pub fn read_vip_counters(bpffs: &Path) -> Result<Vec<VipCounters>, DataplaneError> {
    let open = |name: &'static str| {
        MapData::from_pin(bpffs.join(name))
            .map_err(|source| DataplaneError::Map { map: name, source })
    };
    let vips: BpfHashMap<_, VipKey, VipInfo> = BpfHashMap::try_from(Map::HashMap(open(VIPS)?))
        .map_err(|source| DataplaneError::Map { map: VIPS, source })?;
    let stats: PerCpuArray<_, Counter> = PerCpuArray::try_from(Map::PerCpuArray(open(STATS)?))
        .map_err(|source| DataplaneError::Map { map: STATS, source })?;
    let mut out = Vec::new();
    for entry in vips.iter() {
        let (key, info) = entry.map_err(|source| DataplaneError::Map { map: VIPS, source })?;
        let mut counters = Vec::new();
        for reason in Reason::ALL {
            let per_cpu = stats
                .get(&reason.index(info.id), 0)
                .map_err(|source| DataplaneError::Map { map: STATS, source })?;
            let sum = per_cpu.iter().fold(Counter::default(), |acc, c| Counter {
                packets: acc.packets + c.packets,
                bytes: acc.bytes + c.bytes,
            });
            counters.push((reason, sum));
        }
        out.push(VipCounters {
            key,
            id: info.id,
            counters,
        });
    }
    out.sort_by_key(|v| v.id);
    Ok(out)
}

/// `198.18.0.210:80/tcp`.
pub fn vip_label(key: &VipKey) -> String {
    let ip = if key.family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::new(
            key.addr[0],
            key.addr[1],
            key.addr[2],
            key.addr[3],
        ))
    } else {
        IpAddr::V6(Ipv6Addr::from(key.addr))
    };
    let proto = match key.proto {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        _ => "?",
    };
    if key.is_address_only() {
        return format!("{ip} (address)");
    }
    match ip {
        IpAddr::V4(a) => format!("{a}:{}/{proto}", key.port),
        IpAddr::V6(a) => format!("[{a}]:{}/{proto}", key.port),
    }
}

/// The human-readable dump `ebpf-lb maps` prints.
pub fn render(vips: &[VipCounters]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "VIPS / STATS (summed over CPUs)");
    let _ = writeln!(
        s,
        "{:<4} {:<32} {:<16} {:>12} {:>14}",
        "ID", "VIP", "REASON", "PACKETS", "BYTES"
    );
    for v in vips {
        for (reason, c) in &v.counters {
            let _ = writeln!(
                s,
                "{:<4} {:<32} {:<16} {:>12} {:>14}",
                v.id,
                vip_label(&v.key),
                reason.name(),
                c.packets,
                c.bytes
            );
        }
    }
    if vips.is_empty() {
        let _ = writeln!(s, "(no VIPs configured)");
    }
    s
}
