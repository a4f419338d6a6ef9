//! Kernel side management: loading `lb-ebpf`, pinning its maps under `--bpffs`, attaching
//! `lb_xdp` to the node NIC, and keeping the maps in step with the configuration.
pub mod inspect;
pub mod kernel;
pub mod maglev;
pub mod neighbour;
pub mod netlink;
pub mod object;
pub mod policy;
pub mod route;
pub mod steering;
pub mod sync;

use std::{
    collections::{HashMap, HashSet},
    ffi::CString,
    net::IpAddr,
    path::{Path, PathBuf},
};

use std::sync::{Arc, Mutex};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array as BpfArray, HashMap as BpfHashMap, PerCpuArray, PerCpuValues},
    programs::{
        ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
    },
};
use lb_common::{
    Counter, LINK_TC, LINK_TC_NODE, LINK_XDP, MAX_VIPS, PINNED_MAPS, PROG_TC_DECAP, PROG_XDP,
    Reason, STATS, SYN_RATE, SynWindow, VIP_FLAG_ADDR_ONLY, VIP_INDEX, VIP_INDEX_SLOTS, VIPS,
    VipInfo, VipKey, VipSlot,
};
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The bpffs directory could not be created.
    #[error("cannot create {path}: {source} (is bpffs mounted? `mount -t bpf bpf /sys/fs/bpf`)")]
    BpffsDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The eBPF object could not be loaded or its maps created/pinned.
    #[error("loading the eBPF object failed: {0}")]
    Load(#[from] aya::EbpfError),
    /// A program failed to load (verifier) or attach.
    #[error("program {program}: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    /// `--iface` names no interface.
    #[error("--iface {0:?}: no such network interface")]
    UnknownInterface(String),
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    /// Per-CPU values could not be built (the CPU count could not be read).
    #[error("map {map}: per-CPU values: {source}")]
    PerCpu {
        map: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("object has no {0}")]
    Missing(&'static str),
    #[error("too many VIP:port entries ({0}); at most {MAX_VIPS}")]
    TooManyVips(usize),
    /// A program link could not be re-used, converted or pinned.
    #[error("link {link}: {message}")]
    Link { link: &'static str, message: String },
    /// `--node-ip` / `--peer` do not describe a usable node set.
    #[error("node set: {0}")]
    Nodes(String),
}

/// `map_err` for any aya map operation on the map `map`.
pub(crate) fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError + Copy {
    move |source| DataplaneError::Map { map, source }
}

/// `--xdp-mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpAttachMode {
    /// Native (driver) mode when the driver supports it, else generic.
    #[default]
    Auto,
    /// Driver mode only; fails when the driver lacks XDP support.
    Native,
    /// Generic (skb) mode.
    Skb,
}

impl From<XdpAttachMode> for XdpMode {
    fn from(m: XdpAttachMode) -> Self {
        match m {
            XdpAttachMode::Auto => XdpMode::Default,
            XdpAttachMode::Native => XdpMode::Driver,
            XdpAttachMode::Skb => XdpMode::Skb,
        }
    }
}

/// The loaded programs and maps. The programs stay attached through links pinned under
/// `--bpffs` until [`Dataplane::detach`]; dropping the value (or a SIGKILL) leaves them
/// attached, so a restarted daemon finds them and replaces the programs atomically.
pub struct Dataplane {
    ebpf: Arc<Mutex<Ebpf>>,
    links: Vec<PinnedLink>,
    bpffs: PathBuf,
    iface: String,
    ifindex: u32,
    steering: Option<steering::Handle>,
}

impl Dataplane {
    /// Loads the object with its maps pinned under `bpffs` (re-using maps already pinned
    /// there, so flows, limits and counters survive a restart) and attaches `lb_xdp` and
    /// `lb_tc_decap` to `iface` through pinned links: when links from an earlier run are
    /// pinned there, their programs are replaced atomically (`bpf_link_update`), so no
    /// packet sees the interface without a program.
    pub fn attach(iface: &str, bpffs: &Path, mode: XdpAttachMode) -> Result<Self, DataplaneError> {
        let ifindex = if_index(iface)?;
        std::fs::create_dir_all(bpffs).map_err(|source| DataplaneError::BpffsDir {
            path: bpffs.to_owned(),
            source,
        })?;
        let pins: Vec<(&str, PathBuf)> = PINNED_MAPS.iter().map(|m| (*m, bpffs.join(m))).collect();
        let mut loader = EbpfLoader::new();
        for (name, pin) in &pins {
            loader.map_pin_path(name, pin.as_path());
        }
        let mut ebpf = loader.load(object::bytes())?;
        // Before the new program replaces the running one, and until `set_vips` writes the
        // index for this build's `vip_slot`, every lookup falls back to `VIPS`.
        spill_vip_index(&mut ebpf)?;
        let prog_err = |program: &'static str| {
            move |source: ProgramError| DataplaneError::Program { program, source }
        };
        let xdp: &mut Xdp = ebpf
            .program_mut(PROG_XDP)
            .ok_or(DataplaneError::Missing(PROG_XDP))?
            .try_into()
            .map_err(prog_err(PROG_XDP))?;
        xdp.load().map_err(prog_err(PROG_XDP))?;
        let xdp_pin = bpffs.join(LINK_XDP);
        let id = match previous_link(&xdp_pin) {
            Some(fd) => {
                let link = XdpLink::try_from(fd).map_err(|e| DataplaneError::Link {
                    link: LINK_XDP,
                    message: e.to_string(),
                })?;
                info!(pin = %xdp_pin.display(), "replacing the program of the pinned XDP link");
                xdp.attach_to_link(link).map_err(prog_err(PROG_XDP))?
            }
            None => xdp
                .attach_to_if_index(ifindex, mode.into())
                .map_err(prog_err(PROG_XDP))?,
        };
        let link: FdLink = xdp
            .take_link(id)
            .map_err(prog_err(PROG_XDP))?
            .try_into()
            .map_err(|e: LinkError| DataplaneError::Link {
                link: LINK_XDP,
                message: format!("{e} (the driver or kernel offers no bpf_link for XDP)"),
            })?;
        let mut links = vec![pin_link(link, &xdp_pin, LINK_XDP)?];

        links.push(attach_decap(
            &mut ebpf,
            iface,
            &bpffs.join(LINK_TC),
            LINK_TC,
        )?);
        info!(iface, ?mode, bpffs = %bpffs.display(), "lb_xdp and lb_tc_decap attached");
        Ok(Self {
            ebpf: Arc::new(Mutex::new(ebpf)),
            links,
            bpffs: bpffs.to_owned(),
            iface: iface.to_owned(),
            ifindex,
            steering: None,
        })
    }

    pub fn bpffs(&self) -> &Path {
        &self.bpffs
    }

    /// A handle for keeping the maps in step after start-up (see [`sync`]).
    pub fn kernel_sync(&self, namespace: &str) -> sync::KernelSync {
        let peers = self.steering.as_ref().map(steering::Handle::peer_updates);
        sync::KernelSync::new(self.ebpf.clone(), namespace, peers)
    }

    /// Runs `f` on the loaded object (maps and programs), e.g. with the writers in [`kernel`].
    pub fn with_ebpf<T>(&self, f: impl FnOnce(&mut Ebpf) -> T) -> T {
        let mut guard = self
            .ebpf
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// Makes `VIPS` hold exactly `wanted` (ids are positions in `wanted`) plus one
    /// address-only entry per VIP address (ids after them): stale entries are removed,
    /// new ones inserted, changed ids rewritten.
    pub fn set_vips(&mut self, wanted: &[VipKey]) -> Result<(), DataplaneError> {
        self.with_ebpf(|e| set_vips(e, wanted))
    }

    /// Starts steering between this node and `opts.peers`: `NODES` and `MAGLEV` are
    /// published now and again whenever a peer's health changes (see [`steering`]). When
    /// `--node-ip` sits on another interface than `--iface` (a separate node network, where
    /// other nodes' steered packets arrive), `lb_tc_decap` is attached there too.
    pub fn start_steering(&mut self, opts: steering::Options) -> Result<(), DataplaneError> {
        let node_iface = route::interface_with(opts.node_ip).map_err(|e| {
            DataplaneError::Nodes(format!(
                "--node-ip {}: listing addresses: {e}",
                opts.node_ip
            ))
        })?;
        if node_iface.is_none() {
            warn!(node_ip = %opts.node_ip, "--node-ip is not an address of this node: steered packets to it will not arrive");
        }
        // The interface holding --node-ip, when it is not --iface, and its link's pin.
        let other = node_iface.filter(|i| *i != self.iface);
        let keep = other.as_deref().map(node_link_pin);
        // A link an earlier run left on an interface that no longer holds --node-ip.
        detach_stale_node_links(&self.bpffs, keep.as_deref());
        let mut ifaces = vec![self.iface.clone()];
        if let (Some(other), Some(keep)) = (other, keep) {
            let pin = self.bpffs.join(keep);
            let link = self.with_ebpf(|e| attach_decap(e, &other, &pin, LINK_TC_NODE))?;
            self.links.push(link);
            info!(iface = %other, node_ip = %opts.node_ip, "lb_tc_decap attached to the node address's interface");
            ifaces.push(other);
        }
        for iface in &ifaces {
            for warning in steering::check_sysctls(iface) {
                warn!("{warning}");
            }
        }
        self.steering = Some(steering::start(self.ebpf.clone(), opts, self.ifindex)?);
        Ok(())
    }

    /// Stops the daemon's use of the programs but leaves them attached, with their pinned
    /// links and maps, for the next daemon to take over (a restart keeps every flow).
    pub fn release(mut self) {
        self.steering.take();
        info!(iface = %self.iface, "leaving lb_xdp and lb_tc_decap attached for the next start");
    }

    /// Detaches `lb_xdp` and `lb_tc_decap` from the interface now and removes their link
    /// pins; pinned maps stay for inspection.
    pub fn detach(mut self) -> Result<(), DataplaneError> {
        self.steering.take();
        for link in self.links.drain(..) {
            // Unpinning drops the last reference to the link: the program is detached.
            link.unpin().map_err(|source| DataplaneError::BpffsDir {
                path: self.bpffs.clone(),
                source,
            })?;
        }
        info!(iface = %self.iface, "lb_xdp and lb_tc_decap detached");
        Ok(())
    }
}

/// The pin name of the decapsulation link on `iface` (the interface holding --node-ip).
/// bpffs refuses dots in names, which interface names may hold (`eth0.100`): `%` instead.
pub fn node_link_pin(iface: &str) -> String {
    format!("{LINK_TC_NODE}_{}", iface.replace('.', "%"))
}

/// Unpins (so detaches) every node-interface decapsulation link under `bpffs` but `keep`.
fn detach_stale_node_links(bpffs: &Path, keep: Option<&str>) {
    let Ok(entries) = std::fs::read_dir(bpffs) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(LINK_TC_NODE) || Some(name.as_str()) == keep {
            continue;
        }
        let result = PinnedLink::from_pin(entry.path())
            .map_err(|e| e.to_string())
            .and_then(|link| link.unpin().map(drop).map_err(|e| e.to_string()));
        match result {
            Ok(()) => {
                info!(pin = %name, "detached lb_tc_decap from an interface that no longer holds --node-ip")
            }
            Err(e) => {
                warn!(pin = %name, "removing a stale link pin: {e}");
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Loads `lb_tc_decap` (once) and attaches it to `iface`'s TC ingress through the link
/// pinned at `pin`: an earlier run's link there gets the new program atomically.
fn attach_decap(
    ebpf: &mut Ebpf,
    iface: &str,
    pin: &Path,
    name: &'static str,
) -> Result<PinnedLink, DataplaneError> {
    let prog_err = |source: ProgramError| DataplaneError::Program {
        program: PROG_TC_DECAP,
        source,
    };
    let tc: &mut SchedClassifier = ebpf
        .program_mut(PROG_TC_DECAP)
        .ok_or(DataplaneError::Missing(PROG_TC_DECAP))?
        .try_into()
        .map_err(prog_err)?;
    if tc.fd().is_err() {
        tc.load().map_err(prog_err)?;
    }
    let id = match previous_link(pin) {
        Some(fd) => {
            let link = SchedClassifierLink::try_from(fd).map_err(|e| DataplaneError::Link {
                link: name,
                message: e.to_string(),
            })?;
            tc.attach_to_link(link).map_err(prog_err)?
        }
        None => tc.attach(iface, TcAttachType::Ingress).map_err(prog_err)?,
    };
    let link: FdLink = tc
        .take_link(id)
        .map_err(prog_err)?
        .try_into()
        .map_err(|e: LinkError| DataplaneError::Link {
            link: name,
            message: format!("{e} (TCX links need Linux >= 6.6)"),
        })?;
    pin_link(link, pin, name)
}

/// The link pinned at `pin` by an earlier run, if any (and still valid).
fn previous_link(pin: &Path) -> Option<FdLink> {
    if !pin.exists() {
        return None;
    }
    match PinnedLink::from_pin(pin) {
        Ok(p) => Some(FdLink::from(p)),
        Err(e) => {
            warn!(pin = %pin.display(), "ignoring unusable pinned link: {e}");
            let _ = std::fs::remove_file(pin);
            None
        }
    }
}

fn pin_link(link: FdLink, pin: &Path, name: &'static str) -> Result<PinnedLink, DataplaneError> {
    if pin.exists() {
        // The same link (we replaced its program): re-pinning needs the path free.
        let _ = std::fs::remove_file(pin);
    }
    link.pin(pin).map_err(|e| DataplaneError::Link {
        link: name,
        message: format!("pinning at {}: {e}", pin.display()),
    })
}

/// See [`Dataplane::set_vips`]; works on any loaded object (tests, benchmarks).
pub fn set_vips(ebpf: &mut Ebpf, wanted: &[VipKey]) -> Result<(), DataplaneError> {
    let mut all: Vec<(VipKey, VipInfo)> = Vec::new();
    for key in wanted {
        if !all.iter().any(|(k, _)| k == key) {
            all.push((*key, VipInfo { id: 0, flags: 0 }));
        }
    }
    for key in wanted {
        let addr = key.address_only();
        if !all.iter().any(|(k, _)| *k == addr) {
            all.push((
                addr,
                VipInfo {
                    id: 0,
                    flags: VIP_FLAG_ADDR_ONLY,
                },
            ));
        }
    }
    if all.len() > MAX_VIPS as usize {
        return Err(DataplaneError::TooManyVips(all.len()));
    }
    // What VIPS holds now: ids to keep, entries to remove or leave alone.
    let current: HashMap<VipKey, VipInfo> = {
        let map = ebpf.map(VIPS).ok_or(DataplaneError::Missing(VIPS))?;
        let vips: BpfHashMap<_, VipKey, VipInfo> =
            BpfHashMap::try_from(map).map_err(map_err(VIPS))?;
        vips.iter().filter_map(Result::ok).collect()
    };
    let fresh = assign_ids(&mut all, |key| current.get(key).map(|i| i.id));
    // A VIP id new to its key starts with zeroed counters (the row may have served a VIP
    // that is gone) before any packet can be counted under it.
    zero_vip_rows(ebpf, &fresh)?;
    let map = ebpf.map_mut(VIPS).ok_or(DataplaneError::Missing(VIPS))?;
    let mut vips: BpfHashMap<_, VipKey, VipInfo> =
        BpfHashMap::try_from(map).map_err(map_err(VIPS))?;
    let keep: HashSet<VipKey> = all.iter().map(|(k, _)| *k).collect();
    for key in current.keys().filter(|k| !keep.contains(k)) {
        vips.remove(key).map_err(map_err(VIPS))?;
    }
    for (key, info) in &all {
        if current.get(key) != Some(info) {
            vips.insert(key, info, 0).map_err(map_err(VIPS))?;
        }
    }
    set_vip_index(ebpf, &all)
}

/// Gives every key of `all` an id: the one it has now (`current`) if that is still free,
/// else the lowest free one, so a VIP keeps its `STATS` row while others come and go.
/// Returns the ids handed to keys that did not have them.
fn assign_ids(all: &mut [(VipKey, VipInfo)], current: impl Fn(&VipKey) -> Option<u32>) -> Vec<u32> {
    let mut taken = vec![false; MAX_VIPS as usize];
    let mut pending = Vec::new();
    for (i, (key, info)) in all.iter_mut().enumerate() {
        match current(key).filter(|&id| id < MAX_VIPS && !taken[id as usize]) {
            Some(id) => {
                taken[id as usize] = true;
                info.id = id;
            }
            None => pending.push(i),
        }
    }
    let mut free = (0..MAX_VIPS).filter(|&id| !taken[id as usize]);
    let mut fresh = Vec::new();
    for i in pending {
        // all.len() <= MAX_VIPS (checked by the caller), so an id is always free.
        if let Some(id) = free.next() {
            all[i].1.id = id;
            fresh.push(id);
        }
    }
    fresh
}

/// Zeroes the `STATS` rows and `SYN_RATE` entries of `ids` on every CPU.
fn zero_vip_rows(ebpf: &mut Ebpf, ids: &[u32]) -> Result<(), DataplaneError> {
    if ids.is_empty() {
        return Ok(());
    }
    let per_cpu = |map| move |source| DataplaneError::PerCpu { map, source };
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| per_cpu(STATS)(e))?;
    let map = ebpf.map_mut(STATS).ok_or(DataplaneError::Missing(STATS))?;
    let mut stats: PerCpuArray<_, Counter> = PerCpuArray::try_from(map).map_err(map_err(STATS))?;
    for &id in ids {
        for reason in Reason::ALL {
            let values =
                PerCpuValues::try_from(vec![Counter::default(); cpus]).map_err(per_cpu(STATS))?;
            stats
                .set(reason.index(id), values, 0)
                .map_err(map_err(STATS))?;
        }
    }
    let map = ebpf
        .map_mut(SYN_RATE)
        .ok_or(DataplaneError::Missing(SYN_RATE))?;
    let mut syn: PerCpuArray<_, SynWindow> =
        PerCpuArray::try_from(map).map_err(map_err(SYN_RATE))?;
    for &id in ids {
        let values =
            PerCpuValues::try_from(vec![SynWindow::default(); cpus]).map_err(per_cpu(SYN_RATE))?;
        syn.set(id, values, 0).map_err(map_err(SYN_RATE))?;
    }
    Ok(())
}

/// Marks every `VIP_INDEX` slot `spill` (keeping what it holds), so `lb_xdp` looks up in
/// `VIPS` every VIP key its slot does not hold. Done at start, before the program is
/// replaced: the pinned index may have been written by another build whose `vip_slot`
/// differs (or be new and empty), and without this, VIP packets would reach the local
/// stack instead of their flows' nodes until [`set_vips`] rewrites the index. Both the old
/// and the new program are then right, at the cost of a hash lookup per VIP packet for
/// those milliseconds; `set_vips` clears the marks it does not need.
pub fn spill_vip_index(ebpf: &mut Ebpf) -> Result<(), DataplaneError> {
    let err = map_err(VIP_INDEX);
    let map = ebpf
        .map_mut(VIP_INDEX)
        .ok_or(DataplaneError::Missing(VIP_INDEX))?;
    let mut index: BpfArray<_, VipSlot> = BpfArray::try_from(map).map_err(err)?;
    for i in 0..VIP_INDEX_SLOTS {
        let mut slot = index.get(&i, 0).map_err(err)?;
        if slot.spill == 0 {
            slot.spill = 1;
            index.set(i, slot, 0).map_err(err)?;
        }
    }
    Ok(())
}

/// Writes `VIP_INDEX` for `all` (already in `VIPS`): only the slots that change, and the
/// ones that start to spill first, so a packet never misses a VIP that `VIPS` holds.
fn set_vip_index(ebpf: &mut Ebpf, all: &[(VipKey, VipInfo)]) -> Result<(), DataplaneError> {
    let err = map_err(VIP_INDEX);
    let map = ebpf
        .map_mut(VIP_INDEX)
        .ok_or(DataplaneError::Missing(VIP_INDEX))?;
    let mut index: BpfArray<_, VipSlot> = BpfArray::try_from(map).map_err(err)?;
    let mut wanted = vec![VipSlot::default(); VIP_INDEX_SLOTS as usize];
    lb_common::place_vips(&mut wanted, all.iter().map(|(k, i)| (k, i)));
    let mut changed: Vec<(u32, VipSlot)> = Vec::new();
    for (i, want) in wanted.iter().enumerate() {
        let i = i as u32;
        if index.get(&i, 0).map_err(err)? != *want {
            changed.push((i, *want));
        }
    }
    changed.sort_by_key(|(_, slot)| slot.spill == 0);
    for (i, slot) in changed {
        index.set(i, slot, 0).map_err(err)?;
    }
    Ok(())
}

/// The `VIPS` keys for every VIP address and listening TCP port.
pub fn vip_keys(vips: &[IpAddr], tcp_ports: &[u16]) -> Vec<VipKey> {
    let mut keys = Vec::new();
    for vip in vips {
        for &port in tcp_ports {
            keys.push(match vip {
                IpAddr::V4(a) => VipKey::v4(a.octets(), port, lb_common::PROTO_TCP),
                IpAddr::V6(a) => VipKey::v6(a.octets(), port, lb_common::PROTO_TCP),
            });
        }
    }
    keys.dedup();
    keys
}

fn if_index(iface: &str) -> Result<u32, DataplaneError> {
    let c = CString::new(iface).map_err(|_| DataplaneError::UnknownInterface(iface.to_owned()))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(DataplaneError::UnknownInterface(iface.to_owned()));
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_link_pins_have_no_dots() {
        assert_eq!(node_link_pin("eth1"), "lb_tc_decap_node_link_eth1");
        assert_eq!(node_link_pin("eth0.100"), "lb_tc_decap_node_link_eth0%100");
    }

    fn key(port: u16) -> VipKey {
        VipKey::v4([198, 18, 0, 210], port, lb_common::PROTO_TCP)
    }

    fn with_ids(ports: &[u16], current: &[(u16, u32)]) -> (Vec<(u16, u32)>, Vec<u32>) {
        let mut all: Vec<(VipKey, VipInfo)> = ports
            .iter()
            .map(|&p| (key(p), VipInfo { id: 0, flags: 0 }))
            .collect();
        let fresh = assign_ids(&mut all, |k| {
            current
                .iter()
                .find(|(p, _)| key(*p) == *k)
                .map(|(_, id)| *id)
        });
        (all.iter().map(|(k, i)| (k.port, i.id)).collect(), fresh)
    }

    #[test]
    fn vip_ids_are_stable_and_reuse_the_lowest_free() {
        // A fresh map: ids in order, all fresh.
        assert_eq!(
            with_ids(&[80, 443], &[]),
            (vec![(80, 0), (443, 1)], vec![0, 1])
        );
        // A VIP added in front keeps the others' ids; it takes the lowest free id.
        assert_eq!(
            with_ids(&[8080, 80, 443], &[(80, 0), (443, 1)]),
            (vec![(8080, 2), (80, 0), (443, 1)], vec![2])
        );
        // 80 went away: its id 0 is free again and goes to the newcomer.
        assert_eq!(
            with_ids(&[9090, 443], &[(80, 0), (443, 1)]),
            (vec![(9090, 0), (443, 1)], vec![0])
        );
        // Two keys claiming one id (a damaged map): the first keeps it.
        assert_eq!(
            with_ids(&[80, 443], &[(80, 3), (443, 3)]),
            (vec![(80, 3), (443, 0)], vec![0])
        );
        // Out-of-range ids are replaced.
        assert_eq!(with_ids(&[80], &[(80, MAX_VIPS)]), (vec![(80, 0)], vec![0]));
    }
}
