//! The node set and Maglev publishing: which proxy node serves each new flow.
//!
//! `--node-ip` is this node. Files mode: `--peer` lists the others. Kube mode: the
//! provider's node set (the DaemonSet's Ready pods' host IPs) replaces the peers on every
//! update ([`PeerUpdates`]). A background thread connects to each peer's proxy port every
//! second; a peer that does not accept, or whose next hop's MAC is not in the neighbour
//! table, is left out of Maglev until it does.
//!
//! Where frames to a peer go comes from the kernel's route to it (see [`super::route`]): the
//! next hop's MAC (the peer, or the gateway) goes in `NODES`; when the route leaves by
//! another interface than `--iface` (a separate node network), the peer is flagged
//! `NODE_REDIRECT` and `EGRESS`/`TX_PORTS` say which interface and source MAC, so `lb_xdp`
//! redirects its frames there (XDP_REDIRECT through the device map) instead of XDP_TX.
//!
//! Every node must pick the same node for a flow: the Maglev table is built from the set of
//! usable addresses only (see `maglev::build`), so nodes with the same view of health agree
//! whatever their `NODES` indices. A node keeps its `NODES` index (slot) for as long as it is
//! in the set, so the indices in `FLOWS` of established flows never start pointing at
//! another node when the set changes; a removed node's slot is cleared and reused later.
//!
//! Publishing never exposes a half-written table: the inactive half of `MAGLEV` is
//! written, then `CONFIG.maglev_active` flips in one element update.
//!
//! Sysctls a node needs (checked by [`check_sysctls`], which warns; the DaemonSet sets them):
//! - `net.ipv4.conf.{all,lo}.arp_ignore=1`, `arp_announce=2`: the VIP sits on `lo` of every
//!   node, but only the node MetalLB elects may answer ARP for it.
//! - `net.ipv4.conf.{all,IFACE}.rp_filter` 0 or 2: decapsulated packets carry the client's
//!   address as source; strict reverse-path filtering drops them when the route back to the
//!   client leaves by another interface.
use std::{
    net::{IpAddr, SocketAddr, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{Array, DevMap},
};
use lb_common::{
    EGRESS, EgressPort, MAGLEV, MAGLEV_SIZE, MAX_NODES, NODE_HAS_V4, NODE_HAS_V6, NODE_LOCAL,
    NODE_REDIRECT, NODES, NodeInfo, TX_PORTS,
};
use tracing::{info, warn};

use super::{DataplaneError, kernel, maglev, map_err};

/// `--node-ip`, `--peer` and the proxy port peers are checked on.
#[derive(Clone, Debug)]
pub struct Options {
    pub node_ip: IpAddr,
    pub peers: Vec<IpAddr>,
    /// The proxy's port on every node (`--http-listen`'s port).
    pub port: u16,
}

/// One node of the set, in `NODES` order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    pub addr: IpAddr,
    pub local: bool,
    /// Where encapsulated frames to this node go: the next hop's MAC (neighbour table).
    pub mac: Option<[u8; 6]>,
    /// The interface (and its MAC) frames leave by, when not `--iface`.
    pub egress: Option<EgressPort>,
    pub healthy: bool,
}

impl NodeRecord {
    /// A node not yet checked: unhealthy, next hop unknown.
    pub fn new(addr: IpAddr, local: bool) -> Self {
        Self {
            addr,
            local,
            mac: None,
            egress: None,
            healthy: false,
        }
    }

    fn info(&self) -> NodeInfo {
        let mut n = NodeInfo {
            mac: self.mac.unwrap_or_default(),
            ..NodeInfo::default()
        };
        match self.addr {
            IpAddr::V4(a) => {
                n.v4 = a.octets();
                n.flags |= NODE_HAS_V4;
            }
            IpAddr::V6(a) => {
                n.v6 = a.octets();
                n.flags |= NODE_HAS_V6;
            }
        }
        if self.local {
            n.flags |= NODE_LOCAL;
        }
        if self.egress.is_some() {
            n.flags |= NODE_REDIRECT;
        }
        n
    }

    /// In Maglev: this node always; a peer when healthy and reachable at L2.
    fn usable(&self) -> bool {
        self.local || (self.healthy && self.mac.is_some())
    }
}

/// The node set by `NODES` index (slot); `None`: a free slot.
pub type Slots = Vec<Option<NodeRecord>>;

/// The initial node set: this node and its peers, sorted by address, in slots 0.. .
pub fn node_set(opts: &Options) -> Result<Slots, DataplaneError> {
    let mut addrs = vec![opts.node_ip];
    addrs.extend(opts.peers.iter().copied());
    addrs.sort();
    addrs.dedup();
    if addrs.len() > MAX_NODES as usize {
        return Err(DataplaneError::Nodes(format!(
            "{} nodes, at most {MAX_NODES}",
            addrs.len()
        )));
    }
    Ok(addrs
        .into_iter()
        .map(|addr| Some(NodeRecord::new(addr, addr == opts.node_ip)))
        .collect())
}

/// Makes the set `{node_ip} + peers`: nodes that left free their slot, nodes that joined
/// take the lowest free slots (in address order), nodes that stay keep slot, health and
/// MAC. Returns whether anything changed; joiners beyond `MAX_NODES` are left out (warned).
pub fn update_peers(slots: &mut Slots, node_ip: IpAddr, peers: &[IpAddr]) -> bool {
    let mut want: Vec<IpAddr> = peers.to_vec();
    want.push(node_ip);
    want.sort();
    want.dedup();
    let mut changed = false;
    for slot in slots.iter_mut() {
        if slot.as_ref().is_some_and(|n| !want.contains(&n.addr)) {
            *slot = None;
            changed = true;
        }
    }
    for addr in want {
        if slots.iter().flatten().any(|n| n.addr == addr) {
            continue;
        }
        let record = NodeRecord::new(addr, addr == node_ip);
        match slots.iter().position(Option::is_none) {
            Some(free) => slots[free] = Some(record),
            None if slots.len() < MAX_NODES as usize => slots.push(Some(record)),
            None => {
                warn!(node = %addr, "more than {MAX_NODES} nodes: left out of steering");
                continue;
            }
        }
        changed = true;
    }
    changed
}

/// The Maglev table (node indices) over the usable nodes.
pub fn table(slots: &[Option<NodeRecord>]) -> Option<Vec<u32>> {
    let usable: Vec<(String, u32)> = slots
        .iter()
        .enumerate()
        .filter_map(|(i, n)| Some((i, n.as_ref()?)))
        .filter(|(_, n)| n.usable())
        .map(|(i, n)| (n.addr.to_string(), i as u32))
        .collect();
    maglev::build(&usable, MAGLEV_SIZE)
}

/// Writes `TX_PORTS` and `EGRESS` for redirected nodes, then `NODES` (so no packet sees
/// `NODE_REDIRECT` before its port), then clears `EGRESS` of the others; then the new table
/// into the inactive half of `MAGLEV`, then flips `CONFIG.maglev_active` and turns steering
/// on with this node's address. Skips the table when it equals `last` (the live half).
pub fn publish(
    ebpf: &mut Ebpf,
    nodes: &[Option<NodeRecord>],
    last: Option<&[u32]>,
) -> Result<Option<Vec<u32>>, DataplaneError> {
    write_egress(ebpf, nodes, true)?;
    {
        let m = ebpf.map_mut(NODES).ok_or(DataplaneError::Missing(NODES))?;
        let mut arr: Array<_, NodeInfo> = Array::try_from(m).map_err(map_err(NODES))?;
        for (i, n) in nodes.iter().enumerate() {
            let info = n.as_ref().map(NodeRecord::info).unwrap_or_default();
            if arr.get(&(i as u32), 0).ok() != Some(info) {
                arr.set(i as u32, info, 0).map_err(map_err(NODES))?;
            }
        }
    }
    write_egress(ebpf, nodes, false)?;
    let Some(new) = table(nodes) else {
        return Ok(None);
    };
    let mut cfg = kernel::read_config(ebpf)?;
    let local = nodes.iter().flatten().find(|n| n.local);
    match local.map(|n| n.addr) {
        Some(IpAddr::V4(a)) => cfg.node_v4 = a.octets(),
        Some(IpAddr::V6(a)) => cfg.node_v6 = a.octets(),
        None => {}
    }
    if last == Some(new.as_slice()) && cfg.steering == 1 {
        kernel::write_config(ebpf, &cfg)?;
        return Ok(Some(new));
    }
    let inactive = if cfg.maglev_active == 1 { 0 } else { 1 };
    {
        let m = ebpf
            .map_mut(MAGLEV)
            .ok_or(DataplaneError::Missing(MAGLEV))?;
        let mut arr: Array<_, u32> = Array::try_from(m).map_err(map_err(MAGLEV))?;
        let base = inactive * MAGLEV_SIZE;
        for (slot, node) in new.iter().enumerate() {
            arr.set(base + slot as u32, node, 0)
                .map_err(map_err(MAGLEV))?;
        }
    }
    cfg.maglev_active = inactive;
    // Flows cached per CPU are checked against FLOWS again under the new table.
    cfg.flow_epoch = cfg.flow_epoch.wrapping_add(1);
    cfg.steering = 1;
    kernel::write_config(ebpf, &cfg)?;
    crate::metrics::count_maglev_rebuild();
    Ok(Some(new))
}

/// Brings `EGRESS` (and `TX_PORTS`) in line with the node slots that are `redirected` (have
/// an egress port) or, when false, that are not (their `EGRESS` entry is cleared). An
/// unchanged `EGRESS` entry is not rewritten.
fn write_egress(
    ebpf: &mut Ebpf,
    nodes: &[Option<NodeRecord>],
    redirected: bool,
) -> Result<(), DataplaneError> {
    for (i, n) in nodes.iter().enumerate() {
        let port = n.as_ref().and_then(|n| n.egress);
        if port.is_some() != redirected {
            continue;
        }
        let value = port.unwrap_or_default();
        let slot = i as u32;
        let m = ebpf
            .map_mut(EGRESS)
            .ok_or(DataplaneError::Missing(EGRESS))?;
        if Array::<_, EgressPort>::try_from(m)
            .map_err(map_err(EGRESS))?
            .get(&slot, 0)
            .ok()
            == Some(value)
        {
            continue;
        }
        if let Some(p) = port {
            let m = ebpf
                .map_mut(TX_PORTS)
                .ok_or(DataplaneError::Missing(TX_PORTS))?;
            let mut ports = DevMap::try_from(m).map_err(map_err(TX_PORTS))?;
            ports.set(slot, p.ifindex, None, 0).map_err(|e| {
                DataplaneError::Nodes(format!("{TX_PORTS}[{i}] = {}: {e}", p.ifindex))
            })?;
        }
        let m = ebpf
            .map_mut(EGRESS)
            .ok_or(DataplaneError::Missing(EGRESS))?;
        let mut arr: Array<_, EgressPort> = Array::try_from(m).map_err(map_err(EGRESS))?;
        arr.set(slot, value, 0).map_err(map_err(EGRESS))?;
    }
    Ok(())
}

/// Where frames to peer `addr` go: the next hop's MAC, and the egress port when the route
/// leaves by another interface than `xdp_ifindex`. `None` for the MAC: not resolved yet (or
/// the egress interface has no Ethernet address), so the peer is not usable.
pub fn next_hop(addr: IpAddr, xdp_ifindex: u32) -> (Option<[u8; 6]>, Option<EgressPort>) {
    let hop = match super::route::next_hop(addr) {
        Ok(hop) => hop,
        Err(e) => {
            warn!(peer = %addr, "route lookup failed ({e}): using the peer's own MAC");
            return (super::neighbour::mac_of(addr), None);
        }
    };
    let mac = super::neighbour::mac_of(hop.l2_neighbour(addr));
    if hop.ifindex == xdp_ifindex {
        return (mac, None);
    }
    match super::route::link_mac(hop.ifindex) {
        Ok(src_mac) => (
            mac,
            Some(EgressPort {
                ifindex: hop.ifindex,
                src_mac,
                _pad: 0,
            }),
        ),
        Err(e) => {
            warn!(peer = %addr, ifindex = hop.ifindex, "egress interface unusable: {e}");
            (None, None)
        }
    }
}

fn lock(e: &Mutex<Ebpf>) -> std::sync::MutexGuard<'_, Ebpf> {
    e.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where a provider hands the steering thread a new peer set (kube mode: every update's
/// node set). The thread applies the latest one within 100 ms.
#[derive(Clone, Debug, Default)]
pub struct PeerUpdates(Arc<Mutex<Option<Vec<IpAddr>>>>);

impl PeerUpdates {
    /// Replaces the peer set (this node may be in it; it always stays in the set).
    pub fn set(&self, peers: Vec<IpAddr>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(peers);
    }

    fn take(&self) -> Option<Vec<IpAddr>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    fn pending(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }
}

/// Stops the health-check thread when dropped.
pub struct Handle {
    stop: Arc<AtomicBool>,
    peers: PeerUpdates,
    thread: Option<JoinHandle<()>>,
}

impl Handle {
    /// Where new peer sets go (see [`PeerUpdates`]).
    pub fn peer_updates(&self) -> PeerUpdates {
        self.peers.clone()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const CHECK_EVERY: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Publishes the node set (this node only, until peers answer), then health-checks the
/// peers in a thread and republishes on every change.
/// `xdp_ifindex`: the interface `lb_xdp` runs on (peers routed elsewhere are redirected).
pub fn start(
    ebpf: Arc<Mutex<Ebpf>>,
    opts: Options,
    xdp_ifindex: u32,
) -> Result<Handle, DataplaneError> {
    let mut nodes = node_set(&opts)?;
    let mut last = publish(&mut lock(&ebpf), &nodes, None)?;
    info!(node = %opts.node_ip, peers = opts.peers.len(), "steering on: Maglev over this node");
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let peers = PeerUpdates::default();
    let peers2 = peers.clone();
    let thread = std::thread::Builder::new()
        .name("peer-health".into())
        .spawn(move || {
            while !stop2.load(Ordering::Acquire) {
                let mut changed = false;
                if let Some(new) = peers2.take()
                    && update_peers(&mut nodes, opts.node_ip, &new)
                {
                    let set: Vec<String> =
                        nodes.iter().flatten().map(|n| n.addr.to_string()).collect();
                    info!(nodes = ?set, "node set changed");
                    changed = true;
                }
                for n in nodes.iter_mut().flatten().filter(|n| !n.local) {
                    let healthy = TcpStream::connect_timeout(
                        &SocketAddr::new(n.addr, opts.port),
                        CONNECT_TIMEOUT,
                    )
                    .is_ok();
                    let (mac, egress) = if healthy {
                        next_hop(n.addr, xdp_ifindex)
                    } else {
                        (n.mac, n.egress)
                    };
                    if healthy != n.healthy || mac != n.mac || egress != n.egress {
                        let via = egress.map(|e| e.ifindex);
                        info!(peer = %n.addr, healthy, ?mac, ?via, "peer changed");
                        n.healthy = healthy;
                        n.mac = mac;
                        n.egress = egress;
                        changed = true;
                    }
                }
                if changed {
                    match publish(&mut lock(&ebpf), &nodes, last.as_deref()) {
                        Ok(t) => {
                            let usable = nodes.iter().flatten().filter(|n| n.usable()).count();
                            info!(usable, "Maglev table published");
                            last = t;
                        }
                        Err(e) => warn!("publishing the node set failed: {e}"),
                    }
                }
                // Sleep in small steps so a stop or a new peer set is seen quickly.
                for _ in 0..10 {
                    if stop2.load(Ordering::Acquire) {
                        return;
                    }
                    if peers2.pending() {
                        break;
                    }
                    std::thread::sleep(CHECK_EVERY / 10);
                }
            }
        })
        .map_err(|e| DataplaneError::Nodes(format!("starting the health-check thread: {e}")))?;
    Ok(Handle {
        stop,
        peers,
        thread: Some(thread),
    })
}

pub(crate) fn sysctl(path: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/sys/{path}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Warnings for the sysctls steering needs (see the module documentation).
pub fn check_sysctls(iface: &str) -> Vec<String> {
    let mut out = Vec::new();
    let get = |dev: &str, key: &str| sysctl(&format!("net/ipv4/conf/{dev}/{key}"));
    // The kernel uses the larger of `all` and the device value for these three.
    let max = |key: &str, dev: &str| get("all", key).max(get(dev, key));
    if let Some(v) = max("rp_filter", iface)
        && v == 1
    {
        out.push(format!(
            "net.ipv4.conf.{{all,{iface}}}.rp_filter is 1 (strict): decapsulated packets from \
             clients routed via another interface are dropped; set it to 0 or 2"
        ));
    }
    if max("arp_ignore", "lo").unwrap_or(0) < 1 {
        out.push(
            "net.ipv4.conf.all.arp_ignore is 0: this node answers ARP for the VIP on lo; set \
             it to 1 so only the elected node does"
                .into(),
        );
    }
    if max("arp_announce", "lo").unwrap_or(0) < 2 {
        out.push(
            "net.ipv4.conf.all.arp_announce is below 2: ARP requests may use the VIP as \
             source; set it to 2"
                .into(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_set_is_sorted_and_marks_this_node() {
        let opts = Options {
            node_ip: "198.18.0.12".parse().expect("ip"),
            peers: vec![
                "198.18.0.11".parse().expect("ip"),
                "198.18.0.12".parse().expect("ip"),
            ],
            port: 80,
        };
        let nodes = node_set(&opts).expect("nodes");
        let addrs: Vec<String> = nodes.iter().flatten().map(|n| n.addr.to_string()).collect();
        assert_eq!(addrs, ["198.18.0.11", "198.18.0.12"]);
        assert_eq!(
            nodes.iter().flatten().map(|n| n.local).collect::<Vec<_>>(),
            [false, true]
        );
        // Only this node is usable until the peer answers: every slot is node 1.
        let t = table(&nodes).expect("table");
        assert!(t.iter().all(|v| *v == 1));
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn slot_addrs(slots: &Slots) -> Vec<Option<String>> {
        slots
            .iter()
            .map(|s| s.as_ref().map(|n| n.addr.to_string()))
            .collect()
    }

    /// Nodes keep their slot while they stay, leavers free theirs, joiners fill the lowest
    /// free slots; health and MAC survive; the node itself always stays.
    #[test]
    fn peer_updates_keep_slots_stable() {
        let me = ip("198.18.0.12");
        let opts = Options {
            node_ip: me,
            peers: vec![ip("198.18.0.11"), ip("198.18.0.13")],
            port: 80,
        };
        let mut slots = node_set(&opts).expect("nodes");
        if let Some(n) = slots[2].as_mut() {
            n.healthy = true;
            n.mac = Some([2, 0, 0, 0, 0, 0x13]);
        }
        assert!(!update_peers(
            &mut slots,
            me,
            &[ip("198.18.0.11"), ip("198.18.0.13")]
        ));
        // .11 leaves, .10 and .14 join; the kube node set includes this node itself.
        assert!(update_peers(
            &mut slots,
            me,
            &[
                ip("198.18.0.14"),
                ip("198.18.0.12"),
                ip("198.18.0.13"),
                ip("198.18.0.10")
            ]
        ));
        assert_eq!(
            slot_addrs(&slots),
            [
                Some("198.18.0.10".to_string()),
                Some("198.18.0.12".to_string()),
                Some("198.18.0.13".to_string()),
                Some("198.18.0.14".to_string()),
            ]
        );
        let kept = slots[2].as_ref().expect("slot 2");
        assert!(kept.healthy && kept.mac.is_some(), "state kept: {kept:?}");
        assert!(
            slots[0].as_ref().is_some_and(|n| !n.healthy),
            "joiners start unhealthy"
        );
        // An empty node set (no Ready pods yet) leaves only this node, in its slot.
        assert!(update_peers(&mut slots, me, &[]));
        assert_eq!(
            slot_addrs(&slots),
            [None, Some("198.18.0.12".to_string()), None, None]
        );
    }

    /// Two nodes that saw the node set change in a different order (so hold the same
    /// addresses in different slots) still pick the same address for every Maglev slot.
    #[test]
    fn maglev_agrees_across_different_slot_orders() {
        let me = ip("198.18.0.12");
        let usable = |addr: &str, local: bool| {
            Some(NodeRecord {
                addr: ip(addr),
                local,
                mac: Some([2, 0, 0, 0, 0, 1]),
                egress: None,
                healthy: true,
            })
        };
        let a: Slots = vec![
            usable("198.18.0.11", false),
            usable("198.18.0.12", true),
            usable("198.18.0.13", false),
        ];
        let b: Slots = vec![
            usable("198.18.0.13", false),
            None,
            usable("198.18.0.11", false),
            usable("198.18.0.12", true),
        ];
        let names = |slots: &Slots, t: Vec<u32>| -> Vec<IpAddr> {
            t.iter()
                .map(|i| slots[*i as usize].as_ref().expect("used slot").addr)
                .collect()
        };
        let ta = names(&a, table(&a).expect("table"));
        let tb = names(&b, table(&b).expect("table"));
        assert_eq!(ta, tb);
        assert!(ta.contains(&me));
    }
}
