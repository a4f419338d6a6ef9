//! Kernel side management: loading `lb-ebpf`, pinning its maps under `--bpffs`, attaching
//! `lb_xdp` to the node NIC, and keeping the maps in step with the configuration.
pub mod inspect;
pub mod kernel;
pub mod object;
pub mod policy;

use std::{
    collections::HashSet,
    ffi::CString,
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::HashMap as BpfHashMap,
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use lb_common::{MAX_VIPS, PINNED_MAPS, PROG_XDP, VIP_FLAG_ADDR_ONLY, VIPS, VipInfo, VipKey};
use tracing::info;

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
    #[error("object has no {0}")]
    Missing(&'static str),
    #[error("too many VIP:port entries ({0}); at most {MAX_VIPS}")]
    TooManyVips(usize),
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

/// The loaded programs and maps. Dropping it detaches the programs; pinned maps stay.
pub struct Dataplane {
    ebpf: Ebpf,
    link: Option<XdpLinkId>,
    bpffs: PathBuf,
    iface: String,
}

impl Dataplane {
    /// Loads the object with its maps pinned under `bpffs` (re-using maps already pinned
    /// there) and attaches `lb_xdp` to `iface`.
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
        let program: &mut Xdp = ebpf
            .program_mut(PROG_XDP)
            .ok_or(DataplaneError::Missing(PROG_XDP))?
            .try_into()
            .map_err(|source| DataplaneError::Program {
                program: PROG_XDP,
                source,
            })?;
        program.load().map_err(|source| DataplaneError::Program {
            program: PROG_XDP,
            source,
        })?;
        let link = program
            .attach_to_if_index(ifindex, mode.into())
            .map_err(|source| DataplaneError::Program {
                program: PROG_XDP,
                source,
            })?;
        info!(iface, ?mode, bpffs = %bpffs.display(), "lb_xdp attached");
        Ok(Self {
            ebpf,
            link: Some(link),
            bpffs: bpffs.to_owned(),
            iface: iface.to_owned(),
        })
    }

    pub fn bpffs(&self) -> &Path {
        &self.bpffs
    }

    /// The loaded object (maps and programs), for the writers in [`kernel`].
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Makes `VIPS` hold exactly `wanted` (ids are positions in `wanted`) plus one
    /// address-only entry per VIP address (ids after them): stale entries are removed,
    /// new ones inserted, changed ids rewritten.
    pub fn set_vips(&mut self, wanted: &[VipKey]) -> Result<(), DataplaneError> {
        set_vips(&mut self.ebpf, wanted)
    }

    /// Detaches `lb_xdp` from the interface now (dropping does the same).
    pub fn detach(mut self) -> Result<(), DataplaneError> {
        if let Some(link) = self.link.take() {
            let program: &mut Xdp = self
                .ebpf
                .program_mut(PROG_XDP)
                .ok_or(DataplaneError::Missing(PROG_XDP))?
                .try_into()
                .map_err(|source| DataplaneError::Program {
                    program: PROG_XDP,
                    source,
                })?;
            program
                .detach(link)
                .map_err(|source| DataplaneError::Program {
                    program: PROG_XDP,
                    source,
                })?;
            info!(iface = %self.iface, "lb_xdp detached");
        }
        Ok(())
    }
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
    for (id, (_, info)) in all.iter_mut().enumerate() {
        info.id = id as u32;
    }
    let map = ebpf.map_mut(VIPS).ok_or(DataplaneError::Missing(VIPS))?;
    let mut vips: BpfHashMap<_, VipKey, VipInfo> =
        BpfHashMap::try_from(map).map_err(|source| DataplaneError::Map { map: VIPS, source })?;
    let keep: HashSet<VipKey> = all.iter().map(|(k, _)| *k).collect();
    let stale: Vec<VipKey> = vips
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !keep.contains(k))
        .collect();
    for key in stale {
        vips.remove(&key)
            .map_err(|source| DataplaneError::Map { map: VIPS, source })?;
    }
    for (key, info) in &all {
        if vips.get(key, 0).ok() != Some(*info) {
            vips.insert(key, info, 0)
                .map_err(|source| DataplaneError::Map { map: VIPS, source })?;
        }
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
