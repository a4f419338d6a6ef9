//! Reading the pinned maps for `ebpf-lb maps` and the kernel metrics (read at scrape time).
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use aya::{
    Pod,
    maps::{Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray},
};
use lb_common::{
    CONFIG, CONFIG_KEY, Config, Counter, EGRESS, EgressPort, FAMILY_V4, FLOWS, FlowKey, FlowValue,
    MAGLEV, MAGLEV_SIZE, MAX_NODES, NO_NODE, NODE_HAS_V4, NODE_HAS_V6, NODE_LOCAL, NODE_REDIRECT,
    NODES, NodeInfo, PENALTY, PROTO_TCP, PROTO_UDP, Reason, SOURCES, STATS, SourceKey, SourceState,
    VIPS, VipInfo, VipKey,
};

use super::{DataplaneError, map_err};

fn open(bpffs: &Path, name: &'static str) -> Result<MapData, DataplaneError> {
    MapData::from_pin(bpffs.join(name)).map_err(map_err(name))
}

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
    let open = |name: &'static str| MapData::from_pin(bpffs.join(name)).map_err(map_err(name));
    let vips: BpfHashMap<_, VipKey, VipInfo> =
        BpfHashMap::try_from(Map::HashMap(open(VIPS)?)).map_err(map_err(VIPS))?;
    let stats: PerCpuArray<_, Counter> =
        PerCpuArray::try_from(Map::PerCpuArray(open(STATS)?)).map_err(map_err(STATS))?;
    let mut out = Vec::new();
    for entry in vips.iter() {
        let (key, info) = entry.map_err(map_err(VIPS))?;
        let mut counters = Vec::new();
        for reason in Reason::ALL {
            let per_cpu = stats
                .get(&reason.index(info.id), 0)
                .map_err(map_err(STATS))?;
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

/// `CONFIG` as pinned.
pub fn read_config(bpffs: &Path) -> Result<Config, DataplaneError> {
    let array: Array<_, Config> =
        Array::try_from(Map::Array(open(bpffs, CONFIG)?)).map_err(map_err(CONFIG))?;
    array.get(&CONFIG_KEY, 0).map_err(map_err(CONFIG))
}

/// The entries of `NODES` that hold a node (flags set), by index.
pub fn read_nodes(bpffs: &Path) -> Result<Vec<(u32, NodeInfo)>, DataplaneError> {
    read_node_array(bpffs, NODES, |n: &NodeInfo| {
        n.flags & (NODE_HAS_V4 | NODE_HAS_V6) != 0
    })
}

/// The `EGRESS` entries that name an interface, by node index.
pub fn read_egress(bpffs: &Path) -> Result<Vec<(u32, EgressPort)>, DataplaneError> {
    read_node_array(bpffs, EGRESS, |e: &EgressPort| e.ifindex != 0)
}

/// The entries of the per-node array `name` that `used` keeps, by node index.
fn read_node_array<T: Pod>(
    bpffs: &Path,
    name: &'static str,
    used: impl Fn(&T) -> bool,
) -> Result<Vec<(u32, T)>, DataplaneError> {
    let array: Array<_, T> =
        Array::try_from(Map::Array(open(bpffs, name)?)).map_err(map_err(name))?;
    let mut out = Vec::new();
    for i in 0..MAX_NODES {
        let v = array.get(&i, 0).map_err(map_err(name))?;
        if used(&v) {
            out.push((i, v));
        }
    }
    Ok(out)
}

/// An interface's name in this network namespace, else `ifindex N`.
fn interface_name(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` holds IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return format!("ifindex {ifindex}");
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// A node's address: IPv4 when it has one, else IPv6.
pub fn node_addr(n: &NodeInfo) -> IpAddr {
    if n.flags & NODE_HAS_V4 != 0 {
        IpAddr::V4(Ipv4Addr::from(n.v4))
    } else {
        IpAddr::V6(Ipv6Addr::from(n.v6))
    }
}

/// Slots per node index (`NO_NODE` for empty slots) in the live half of `MAGLEV`, sorted
/// by index; empty when steering is off. One lookup per slot (65537 syscalls).
pub fn maglev_distribution(bpffs: &Path, cfg: &Config) -> Result<Vec<(u32, u32)>, DataplaneError> {
    if cfg.steering == 0 {
        return Ok(Vec::new());
    }
    let array: Array<_, u32> =
        Array::try_from(Map::Array(open(bpffs, MAGLEV)?)).map_err(map_err(MAGLEV))?;
    let base = if cfg.maglev_active == 1 {
        MAGLEV_SIZE
    } else {
        0
    };
    let mut counts: BTreeMap<u32, u32> = BTreeMap::new();
    for slot in base..base + MAGLEV_SIZE {
        let node = array.get(&slot, 0).map_err(map_err(MAGLEV))?;
        *counts.entry(node).or_default() += 1;
    }
    Ok(counts.into_iter().collect())
}

/// A bounded walk of a hash map: how many entries it holds and the first few of them.
#[derive(Debug, Clone)]
pub struct Scan<K, V> {
    /// Keys seen.
    pub total: usize,
    /// The first entries (key, value), at most the sample size asked for.
    pub sample: Vec<(K, V)>,
    /// False when the walk stopped early: at the map's size (an LRU map that changes
    /// under the walk can restart it) or on an error.
    pub complete: bool,
}

/// Walks hash map `name` (LRU or not) under `bpffs`: counts its keys, reading the values of
/// the first `sample` of them. One syscall per key, one more per value read; at most the
/// map's `max_entries` keys are visited, so the walk always ends.
pub fn scan<K: Pod, V: Pod>(
    bpffs: &Path,
    name: &'static str,
    sample: usize,
) -> Result<Scan<K, V>, DataplaneError> {
    let data = open(bpffs, name)?;
    let limit = data
        .info()
        .map(|i| i.max_entries() as usize)
        .map_err(map_err(name))?;
    let map: BpfHashMap<_, K, V> =
        BpfHashMap::try_from(Map::HashMap(data)).map_err(map_err(name))?;
    let mut out = Scan {
        total: 0,
        sample: Vec::new(),
        complete: true,
    };
    for key in map.keys() {
        let Ok(key) = key else {
            out.complete = false;
            break;
        };
        if out.total >= limit {
            out.complete = false;
            break;
        }
        out.total += 1;
        if out.sample.len() < sample {
            // The entry may have gone since its key was read (LRU eviction, a closed flow).
            if let Ok(v) = map.get(&key, 0) {
                out.sample.push((key, v));
            }
        }
    }
    Ok(out)
}

/// Penalty-box entries whose expiry (ktime ns) is after `now_ns`.
pub fn active_penalties(scan: &Scan<SourceKey, u64>, now_ns: u64) -> usize {
    scan.sample
        .iter()
        .filter(|(_, until)| *until > now_ns)
        .count()
}

fn addr_of(addr: &[u8; 16], family: u8) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*addr))
    }
}

fn endpoint(addr: &[u8; 16], family: u8, port: u16) -> String {
    match addr_of(addr, family) {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// `198.18.0.1:40000 -> 198.18.0.210:80/tcp`.
pub fn flow_label(k: &FlowKey) -> String {
    let proto = match k.proto {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        _ => "?",
    };
    format!(
        "{} -> {}/{proto}",
        endpoint(&k.src, k.family, k.sport),
        endpoint(&k.dst, k.family, k.dport)
    )
}

pub fn source_label(k: &SourceKey) -> String {
    addr_of(&k.addr, k.family).to_string()
}

/// Everything `ebpf-lb maps` prints. Sections other than VIPS/STATS carry their own error,
/// so one unreadable map does not hide the others.
pub struct MapsReport {
    pub vips: Vec<VipCounters>,
    pub config: Result<Config, String>,
    pub nodes: Result<Vec<(u32, NodeInfo)>, String>,
    /// `EGRESS` entries (interface and source MAC of redirected nodes).
    pub egress: Result<Vec<(u32, EgressPort)>, String>,
    pub maglev: Result<Vec<(u32, u32)>, String>,
    pub flows: Result<Scan<FlowKey, FlowValue>, String>,
    pub sources: Result<Scan<SourceKey, SourceState>, String>,
    pub penalty: Result<Scan<SourceKey, u64>, String>,
    /// The kernel's monotonic clock when the maps were read (what expiries compare to).
    pub now_ns: u64,
    /// Rows listed per hash map.
    pub sample: usize,
}

/// Reads every map `ebpf-lb maps` shows; `sample` bounds the rows listed per hash map.
/// Fails only when `VIPS`/`STATS` cannot be read (nothing is pinned there).
pub fn read_report(bpffs: &Path, sample: usize) -> Result<MapsReport, DataplaneError> {
    let vips = read_vip_counters(bpffs)?;
    let text = |e: DataplaneError| e.to_string();
    let config = read_config(bpffs).map_err(text);
    let maglev = match &config {
        Ok(cfg) => maglev_distribution(bpffs, cfg).map_err(text),
        Err(e) => Err(e.clone()),
    };
    Ok(MapsReport {
        vips,
        nodes: read_nodes(bpffs).map_err(text),
        egress: read_egress(bpffs).map_err(text),
        maglev,
        config,
        flows: scan(bpffs, FLOWS, sample).map_err(text),
        sources: scan(bpffs, SOURCES, sample).map_err(text),
        // Every entry is read: the active ones are counted.
        penalty: scan(bpffs, PENALTY, lb_common::PENALTY_ENTRIES as usize).map_err(text),
        now_ns: super::kernel::monotonic_ns(),
        sample,
    })
}

fn mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Seconds from `now` to `t` (ktime ns), signed, or `-` for an unset (0) time.
fn from_now(t: u64, now: u64) -> String {
    if t == 0 {
        return "-".to_owned();
    }
    let d = (i128::from(t) - i128::from(now)) as f64 / 1e9;
    format!("{d:+.3}s")
}

fn scan_heading<K, V>(s: &mut String, name: &str, what: &str, scan: &Scan<K, V>, listed: usize) {
    let more = if scan.complete { "" } else { "+" };
    let _ = writeln!(
        s,
        "\n{name} ({what}: {}{more} entries; {listed} listed)",
        scan.total
    );
}

/// The human-readable dump `ebpf-lb maps` prints: VIPS/STATS, then NODES, the Maglev
/// distribution, a sample of FLOWS, SOURCES and PENALTY.
pub fn render_report(r: &MapsReport) -> String {
    let mut s = render(&r.vips);
    let nodes = r.nodes.as_ref().ok();
    let node_name = |idx: u32| -> String {
        if idx == NO_NODE {
            return "this node (no steering)".to_owned();
        }
        match nodes.and_then(|n| n.iter().find(|(i, _)| *i == idx)) {
            Some((_, n)) => format!("{idx} {}", node_addr(n)),
            None => format!("{idx} (not in NODES)"),
        }
    };

    let steering = r.config.as_ref().map(|c| c.steering == 1).unwrap_or(false);
    let _ = writeln!(
        s,
        "\nNODES (steering {})",
        if steering { "on" } else { "off" }
    );
    match &r.nodes {
        Ok(nodes) if nodes.is_empty() => {
            let _ = writeln!(s, "(no nodes: steering is off, every flow is served here)");
        }
        Ok(nodes) => {
            let _ = writeln!(s, "{:<4} {:<40} {:<18} FLAGS", "IDX", "ADDRESS", "MAC");
            for (i, n) in nodes {
                let mut flags = Vec::new();
                if n.flags & NODE_LOCAL != 0 {
                    flags.push("local");
                }
                if n.flags & NODE_HAS_V4 != 0 {
                    flags.push("v4");
                }
                if n.flags & NODE_HAS_V6 != 0 {
                    flags.push("v6");
                }
                // Out of another interface: EGRESS / TX_PORTS hold which one.
                let via = (n.flags & NODE_REDIRECT != 0).then(|| {
                    let port = r
                        .egress
                        .as_ref()
                        .ok()
                        .and_then(|e| e.iter().find(|(j, _)| j == i));
                    match port {
                        Some((_, p)) => format!(
                            "redirect via {} from {}",
                            interface_name(p.ifindex),
                            mac(&p.src_mac)
                        ),
                        None => "redirect (no EGRESS entry yet: XDP_TX)".to_owned(),
                    }
                });
                flags.extend(via.as_deref());
                let _ = writeln!(
                    s,
                    "{i:<4} {:<40} {:<18} {}",
                    node_addr(n).to_string(),
                    mac(&n.mac),
                    flags.join(",")
                );
            }
        }
        Err(e) => {
            let _ = writeln!(s, "(unreadable: {e})");
        }
    }

    match (&r.maglev, &r.config) {
        (Ok(dist), Ok(cfg)) if !dist.is_empty() => {
            let _ = writeln!(
                s,
                "\nMAGLEV (live half {} of 2, {MAGLEV_SIZE} slots per half)",
                cfg.maglev_active
            );
            let _ = writeln!(s, "{:<44} {:>8} {:>8}", "NODE", "SLOTS", "SHARE");
            for (node, slots) in dist {
                let pct = f64::from(*slots) * 100.0 / f64::from(MAGLEV_SIZE);
                let name = if *node == NO_NODE {
                    "(empty slot)".to_owned()
                } else {
                    node_name(*node)
                };
                let _ = writeln!(s, "{name:<44} {slots:>8} {pct:>7.2}%");
            }
        }
        (Ok(_), _) => {
            let _ = writeln!(s, "\nMAGLEV (steering off: not consulted)");
        }
        (Err(e), _) => {
            let _ = writeln!(s, "\nMAGLEV (unreadable: {e})");
        }
    }

    match &r.flows {
        Ok(scan) => {
            scan_heading(&mut s, "FLOWS", "flow table", scan, scan.sample.len());
            if !scan.sample.is_empty() {
                let _ = writeln!(s, "{:<70} NODE", "FLOW");
            }
            for (k, v) in &scan.sample {
                let _ = writeln!(s, "{:<70} {}", flow_label(k), node_name(v.node));
            }
        }
        Err(e) => {
            let _ = writeln!(s, "\nFLOWS (unreadable: {e})");
        }
    }

    match &r.sources {
        Ok(scan) => {
            scan_heading(
                &mut s,
                "SOURCES",
                "rate-limit buckets",
                scan,
                scan.sample.len(),
            );
            if !scan.sample.is_empty() {
                let _ = writeln!(
                    s,
                    "{:<40} {:>16} {:>16}",
                    "SOURCE", "CONN_TAT-NOW", "PPS_TAT-NOW"
                );
            }
            for (k, v) in &scan.sample {
                let _ = writeln!(
                    s,
                    "{:<40} {:>16} {:>16}",
                    source_label(k),
                    from_now(v.conn_tat, r.now_ns),
                    from_now(v.pps_tat, r.now_ns)
                );
            }
        }
        Err(e) => {
            let _ = writeln!(s, "\nSOURCES (unreadable: {e})");
        }
    }

    match &r.penalty {
        Ok(scan) => {
            let shown = &scan.sample[..scan.sample.len().min(r.sample)];
            scan_heading(&mut s, "PENALTY", "penalty box", scan, shown.len());
            let _ = writeln!(
                s,
                "{} active (expiry in the future)",
                active_penalties(scan, r.now_ns)
            );
            if !shown.is_empty() {
                let _ = writeln!(s, "{:<40} {:>14}", "SOURCE", "SECONDS LEFT");
            }
            for (k, until) in shown {
                let left = if *until > r.now_ns {
                    format!("{:.1}", (until - r.now_ns) as f64 / 1e9)
                } else {
                    "expired".to_owned()
                };
                let _ = writeln!(s, "{:<40} {left:>14}", source_label(k));
            }
        }
        Err(e) => {
            let _ = writeln!(s, "\nPENALTY (unreadable: {e})");
        }
    }
    s
}

/// The VIPS/STATS part of the dump.
pub fn render(vips: &[VipCounters]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "VIPS / STATS (summed over CPUs)");
    let _ = writeln!(
        s,
        "{:<4} {:<32} {:<18} {:>12} {:>14}",
        "ID", "VIP", "REASON", "PACKETS", "BYTES"
    );
    for v in vips {
        for (reason, c) in &v.counters {
            let _ = writeln!(
                s,
                "{:<4} {:<32} {:<18} {:>12} {:>14}",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn node(v4: [u8; 4], flags: u16) -> NodeInfo {
        NodeInfo {
            v4,
            flags: flags | NODE_HAS_V4,
            mac: [2, 0, 0, 0, 0, 1],
            ..NodeInfo::default()
        }
    }

    #[test]
    fn report_sections_with_values() {
        let now = 1_000_000_000_000;
        let flow = FlowKey {
            src: [198, 18, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst: [198, 18, 0, 210, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            sport: 40_000,
            dport: 80,
            proto: PROTO_TCP,
            family: FAMILY_V4,
            _pad: [0; 2],
        };
        let report = MapsReport {
            vips: Vec::new(),
            config: Ok(Config {
                steering: 1,
                maglev_active: 1,
                ..Config::default()
            }),
            nodes: Ok(vec![
                (0, node([198, 18, 0, 11], NODE_REDIRECT)),
                (1, node([198, 18, 0, 12], NODE_LOCAL)),
            ]),
            egress: Ok(vec![(
                0,
                EgressPort {
                    ifindex: 1,
                    src_mac: [2, 0, 0, 0, 0, 9],
                    _pad: 0,
                },
            )]),
            maglev: Ok(vec![(0, 32_768), (1, 32_769)]),
            flows: Ok(Scan {
                total: 1,
                sample: vec![(
                    flow,
                    FlowValue {
                        node: 1,
                        ..FlowValue::default()
                    },
                )],
                complete: true,
            }),
            sources: Ok(Scan {
                total: 1,
                sample: vec![(
                    SourceKey::v4([198, 18, 0, 1]),
                    SourceState {
                        conn_tat: now + 250_000_000,
                        pps_tat: 0,
                    },
                )],
                complete: true,
            }),
            penalty: Ok(Scan {
                total: 2,
                sample: vec![
                    (SourceKey::v4([198, 18, 0, 99]), now + 59_500_000_000),
                    (SourceKey::v4([198, 18, 0, 98]), now - 1),
                ],
                complete: true,
            }),
            now_ns: now,
            sample: 20,
        };
        let text = render_report(&report);
        assert!(text.contains("NODES (steering on)"), "{text}");
        assert!(text.contains("198.18.0.12"), "{text}");
        assert!(text.contains("02:00:00:00:00:01  local,v4"), "{text}");
        assert!(
            text.contains("v4,redirect via lo from 02:00:00:00:00:09"),
            "{text}"
        );
        assert!(text.contains("MAGLEV (live half 1 of 2"), "{text}");
        let row = text
            .lines()
            .find(|l| l.starts_with("1 198.18.0.12"))
            .unwrap_or_else(|| panic!("maglev row:\n{text}"));
        assert!(row.contains("32769") && row.ends_with("50.00%"), "{row}");
        assert!(
            text.contains("FLOWS (flow table: 1 entries; 1 listed)"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("198.18.0.1:40000 -> 198.18.0.210:80/tcp")
                    && l.ends_with("1 198.18.0.12")),
            "{text}"
        );
        assert!(text.contains("+0.250s"), "{text}");
        assert!(
            text.contains("PENALTY (penalty box: 2 entries; 2 listed)"),
            "{text}"
        );
        assert!(text.contains("1 active"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("198.18.0.99") && l.ends_with("59.5")),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("198.18.0.98") && l.ends_with("expired")),
            "{text}"
        );
    }

    #[test]
    fn stats_columns_line_up_for_every_reason() {
        let vip = VipCounters {
            key: VipKey::v4([198, 18, 0, 210], 443, PROTO_TCP),
            id: 7,
            counters: Reason::ALL
                .iter()
                .map(|r| {
                    (
                        *r,
                        Counter {
                            packets: 12_345,
                            bytes: 6_789_012,
                        },
                    )
                })
                .collect(),
        };
        let text = render(&[vip]);
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("7 ")).collect();
        assert_eq!(rows.len(), Reason::ALL.len(), "{text}");
        // Every row is as long as the header, and the counts end where its columns end.
        let header = text.lines().nth(1).expect("header");
        for row in rows {
            assert_eq!(row.len(), header.len(), "{text}");
            assert!(row.ends_with("       12345        6789012"), "{row}");
        }
    }

    #[test]
    fn steering_off_and_unreadable_maps_are_said_so() {
        let report = MapsReport {
            vips: Vec::new(),
            config: Ok(Config::default()),
            nodes: Ok(Vec::new()),
            egress: Ok(Vec::new()),
            maglev: Ok(Vec::new()),
            flows: Ok(Scan {
                total: 0,
                sample: Vec::new(),
                complete: true,
            }),
            sources: Err("map SOURCES: not pinned".into()),
            penalty: Ok(Scan {
                total: 0,
                sample: Vec::new(),
                complete: true,
            }),
            now_ns: 0,
            sample: 20,
        };
        let text = render_report(&report);
        assert!(text.contains("NODES (steering off)"), "{text}");
        assert!(text.contains("MAGLEV (steering off"), "{text}");
        assert!(
            text.contains("SOURCES (unreadable: map SOURCES: not pinned)"),
            "{text}"
        );
    }
}
