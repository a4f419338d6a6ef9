//! The lb-ebpf object loaded for packet tests and `cargo xtask bench xdp`: programs
//! verified, maps small, helpers to configure VIPs, policy and steering, and to run a
//! program through BPF_PROG_TEST_RUN.
use std::net::IpAddr;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, DevMap, HashMap, MapData, PerCpuArray},
    programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use lb_common::{
    Config, Counter, EGRESS, EgressPort, FLOWS, FlowKey, FlowValue, MAGLEV, MAGLEV_SIZE, NODES,
    NodeInfo, PENALTY, PROG_TC_DECAP, PROG_XDP, PROG_XDP_PASS, Reason, SOURCES, STATS,
    STATS_ENTRIES, TX_PORTS, VipKey,
};
use lb_userspace::dataplane::{self, kernel, policy::KernelPolicy};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;
pub const TC_ACT_OK: u32 = 0;
/// `lb_xdp`, then the frame restored (benchmarks: repeat mode on the encapsulating path).
pub const PROG_XDP_RESTORE: &str = "lb_xdp_restore";

/// The loaded object.
pub struct Loaded {
    pub ebpf: Ebpf,
}

impl Loaded {
    /// Loads the object with small LRU maps and verifies `lb_xdp`, `lb_xdp_pass` and
    /// `lb_tc_decap`. Panics with the verifier log on failure (test helper).
    /// The object is the one built into the binary, or the file [`use_object_file`] read.
    pub fn load() -> Self {
        match OBJECT_FILE.get() {
            Some(object) => Self::load_object(object),
            None => Self::load_object(dataplane::object::bytes()),
        }
    }

    /// Loads `object` with small LRU maps and verifies the programs (see [`Loaded::load`]).
    fn load_object(object: &[u8]) -> Self {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(FLOWS, 4096)
            .map_max_entries(SOURCES, 4096)
            .map_max_entries(PENALTY, 1024)
            .load(object)
            .unwrap_or_else(|e| panic!("loading the lb-ebpf object: {e}"));
        for name in [PROG_XDP, PROG_XDP_PASS] {
            load_xdp_program(&mut ebpf, name);
        }
        let tc: &mut SchedClassifier = ebpf
            .program_mut(PROG_TC_DECAP)
            .expect("lb_tc_decap in the object")
            .try_into()
            .expect("lb_tc_decap is a classifier");
        tc.load()
            .unwrap_or_else(|e| panic!("verifying lb_tc_decap: {e}"));
        Self { ebpf }
    }

    /// Verifies and loads one more XDP program of the object (a benchmark program).
    pub fn load_xdp(&mut self, name: &str) {
        load_xdp_program(&mut self.ebpf, name);
    }

    pub fn set_vips(&mut self, vips: &[VipKey]) {
        dataplane::set_vips(&mut self.ebpf, vips).expect("set VIPS");
    }

    pub fn config(&self) -> Config {
        kernel::read_config(&self.ebpf).expect("read CONFIG")
    }

    pub fn set_config(&mut self, cfg: &Config) {
        kernel::write_config(&mut self.ebpf, cfg).expect("write CONFIG");
    }

    pub fn edit_config(&mut self, edit: impl FnOnce(&mut Config)) {
        let mut cfg = self.config();
        edit(&mut cfg);
        self.set_config(&cfg);
    }

    pub fn set_policy(&mut self, policy: &KernelPolicy) {
        kernel::write_policy(&mut self.ebpf, policy).expect("write policy");
    }

    pub fn penalize(&mut self, addr: IpAddr, seconds: u64) {
        kernel::penalize(
            &mut self.ebpf,
            addr,
            std::time::Duration::from_secs(seconds),
        )
        .expect("penalize");
    }

    /// Penalty entry that expired already (1 ns after boot).
    pub fn penalize_expired(&mut self, addr: IpAddr) {
        let mut m: HashMap<_, lb_common::SourceKey, u64> =
            HashMap::try_from(self.ebpf.map_mut(PENALTY).expect("PENALTY")).expect("type");
        m.insert(kernel::source_key(addr), 1, 0).expect("insert");
    }

    pub fn set_node(&mut self, index: u32, node: NodeInfo) {
        let mut m: Array<_, NodeInfo> =
            Array::try_from(self.ebpf.map_mut(NODES).expect("NODES")).expect("type");
        m.set(index, node, 0).expect("set node");
    }

    /// `EGRESS[index]`: where `NODE_REDIRECT` frames to node `index` leave.
    pub fn set_egress(&mut self, index: u32, port: EgressPort) {
        let mut m: Array<_, EgressPort> =
            Array::try_from(self.ebpf.map_mut(EGRESS).expect("EGRESS")).expect("type");
        m.set(index, port, 0).expect("set egress");
    }

    /// `TX_PORTS[index]` = `ifindex` (the device must exist).
    pub fn set_tx_port(&mut self, index: u32, ifindex: u32) {
        let mut m = DevMap::try_from(self.ebpf.map_mut(TX_PORTS).expect("TX_PORTS")).expect("type");
        m.set(index, ifindex, None, 0).expect("set tx port");
    }

    /// Fills half `half` (0 or 1) of `MAGLEV` with `node` for every slot.
    pub fn fill_maglev(&mut self, half: u32, node: u32) {
        let mut m: Array<_, u32> =
            Array::try_from(self.ebpf.map_mut(MAGLEV).expect("MAGLEV")).expect("type");
        for slot in 0..MAGLEV_SIZE {
            m.set(half * MAGLEV_SIZE + slot, node, 0).expect("set slot");
        }
    }

    pub fn flow(&self, key: &FlowKey) -> Option<FlowValue> {
        let m: HashMap<&MapData, FlowKey, FlowValue> =
            HashMap::try_from(self.ebpf.map(FLOWS).expect("FLOWS")).expect("type");
        m.get(key, 0).ok()
    }

    /// Writes a `FLOWS` entry and bumps `Config::flow_epoch`, as anything that writes flows
    /// from userspace must, so per-CPU `FLOW_CACHE` entries are checked again.
    pub fn insert_flow(&mut self, key: &FlowKey, node: u32) {
        self.insert_flow_quietly(key, node);
        self.edit_config(|c| c.flow_epoch = c.flow_epoch.wrapping_add(1));
    }

    /// Writes a `FLOWS` entry without bumping the epoch: what `FLOW_CACHE` answers for
    /// the flow then shows whether the cache or `FLOWS` decided.
    pub fn insert_flow_quietly(&mut self, key: &FlowKey, node: u32) {
        let value = FlowValue {
            node,
            _pad: 0,
            last_ns: kernel::monotonic_ns(),
        };
        self.flows_mut().insert(key, value, 0).expect("insert flow");
    }

    /// Removes a `FLOWS` entry without bumping the epoch (as another CPU seeing the flow's
    /// FIN, or the LRU evicting it, would).
    pub fn remove_flow_quietly(&mut self, key: &FlowKey) {
        self.flows_mut().remove(key).expect("remove flow");
    }

    fn flows_mut(&mut self) -> HashMap<&mut MapData, FlowKey, FlowValue> {
        HashMap::try_from(self.ebpf.map_mut(FLOWS).expect("FLOWS")).expect("FLOWS type")
    }

    /// Every slot of the unpinned per-CPU array `name` on every CPU, as raw bytes (its
    /// value type lives in lb-ebpf).
    fn per_cpu_slots<const N: usize>(&self, name: &str) -> Vec<[u8; N]> {
        let map: PerCpuArray<&MapData, [u8; N]> =
            PerCpuArray::try_from(self.ebpf.map(name).unwrap_or_else(|| panic!("{name} map")))
                .unwrap_or_else(|e| panic!("{name} type: {e}"));
        (0..map.len())
            .flat_map(|i| {
                map.get(&i, 0)
                    .unwrap_or_else(|e| panic!("{name}[{i}]: {e}"))
                    .to_vec()
            })
            .collect()
    }

    /// Flows held by the per-CPU `FLOW_CACHE` on any CPU: (key bytes, node, epoch). The
    /// layout is lb-ebpf's `CachedFlow` (ten key words, node, epoch, checked_ns).
    pub fn cached_flows(&self) -> Vec<([u8; 40], u32, u32)> {
        let mut out = Vec::new();
        for c in self.per_cpu_slots::<56>("FLOW_CACHE") {
            let key: [u8; 40] = c[..40].try_into().expect("40 bytes");
            if key != [0; 40] {
                let word = |at: usize| u32::from_ne_bytes(c[at..at + 4].try_into().expect("4"));
                out.push((key, word(40), word(44)));
            }
        }
        out
    }

    fn xdp_prog(&self, name: &str) -> &Xdp {
        self.ebpf
            .program(name)
            .expect("program")
            .try_into()
            .expect("XDP program")
    }

    /// Runs XDP program `name` `repeat` times on `input`: (action, output, duration).
    pub fn run_xdp(
        &self,
        name: &str,
        input: &[u8],
        repeat: u32,
    ) -> Result<(u32, Vec<u8>, std::time::Duration), ProgramError> {
        let mut out = vec![0u8; input.len() + 256];
        let r = self.xdp_prog(name).test_run(TestRunOptions {
            data_in: Some(input),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::default()
        })?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, out, r.duration))
    }

    /// Runs `lb_tc_decap` once on `input`: (TC action, output frame).
    pub fn run_tc(&self, input: &[u8]) -> Result<(u32, Vec<u8>), ProgramError> {
        let prog: &SchedClassifier = self
            .ebpf
            .program(PROG_TC_DECAP)
            .expect("program")
            .try_into()
            .expect("classifier");
        let mut out = vec![0u8; input.len() + 256];
        let r = prog.test_run(TestRunOptions {
            data_in: Some(input),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        })?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, out))
    }

    /// Entries of the per-CPU refusal cache `REFUSED` in use on any CPU. The layout is
    /// lb-ebpf's `Refusal`.
    pub fn refused_sources(&self) -> Vec<Refused> {
        let mut out = Vec::new();
        for r in self.per_cpu_slots::<56>("REFUSED") {
            let word = |at: usize| u64::from_ne_bytes(r[at..at + 8].try_into().expect("8"));
            let e = Refused {
                addr: r[..16].try_into().expect("16 bytes"),
                conn_until: word(24),
                pps_until: word(32),
                penalty_until: word(40),
                acl_until: word(48),
            };
            if e.conn_until | e.pps_until | e.penalty_until | e.acl_until != 0 {
                out.push(e);
            }
        }
        out
    }

    /// Every `STATS` entry, summed over CPUs.
    pub fn stats(&self) -> Vec<Counter> {
        let stats: PerCpuArray<&MapData, Counter> =
            PerCpuArray::try_from(self.ebpf.map(STATS).expect("STATS map")).expect("STATS type");
        (0..STATS_ENTRIES)
            .map(|i| {
                let per_cpu = stats.get(&i, 0).expect("read STATS");
                per_cpu.iter().fold(Counter::default(), |a, c| Counter {
                    packets: a.packets + c.packets,
                    bytes: a.bytes + c.bytes,
                })
            })
            .collect()
    }

    /// `STATS` packets counted for `reason`, over every VIP and CPU.
    pub fn reason_packets(&self, reason: Reason) -> u64 {
        self.stats()
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as u32 % Reason::COUNT == reason as u32)
            .map(|(_, c)| c.packets)
            .sum()
    }
}

/// An object file that replaces the built-in object for every [`Loaded::load`] after it.
static OBJECT_FILE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

/// Reads `path` for [`Loaded::load`]: the benchmarks' `--object`, to compare builds of
/// lb-ebpf without relinking. Only the first call counts.
pub fn use_object_file(path: &std::path::Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let _ = OBJECT_FILE.set(bytes);
    Ok(())
}

/// Verifies and loads XDP program `name` of `ebpf`.
fn load_xdp_program(ebpf: &mut Ebpf, name: &str) {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .unwrap_or_else(|| panic!("{name} in the object"))
        .try_into()
        .unwrap_or_else(|e| panic!("{name} is XDP: {e}"));
    prog.load()
        .unwrap_or_else(|e| panic!("verifying {name}: {e}"));
}

/// One entry of `REFUSED`: a source and until when (coarse clock, ns) each kind of
/// refusal holds.
#[derive(Clone, Copy, Debug)]
pub struct Refused {
    pub addr: [u8; 16],
    pub conn_until: u64,
    pub pps_until: u64,
    pub penalty_until: u64,
    pub acl_until: u64,
}

/// The `CONFIG` keys a test sees when nothing is configured: all zero, i.e. no limits,
/// no ACLs, steering off.
pub fn unconfigured() -> Config {
    Config::default()
}

/// Forms a `FlowKey` from addresses (test helper; panics on bad input).
pub fn flow_key(src: &str, dst: &str, proto: u8) -> FlowKey {
    let src: std::net::SocketAddr = src.parse().expect("src");
    let dst: std::net::SocketAddr = dst.parse().expect("dst");
    let mut k = FlowKey {
        sport: src.port(),
        dport: dst.port(),
        proto,
        ..FlowKey::default()
    };
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            k.src[..4].copy_from_slice(&s.octets());
            k.dst[..4].copy_from_slice(&d.octets());
            k.family = lb_common::FAMILY_V4;
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            k.src = s.octets();
            k.dst = d.octets();
            k.family = lb_common::FAMILY_V6;
        }
        _ => panic!("mixed families"),
    }
    k
}

/// Loads `lb_xdp_pass` from `object` and attaches it (native mode) to `ifaces` inside
/// `ns`: a veth drops frames its peer sends with XDP_TX unless it runs an XDP program
/// (shared/engineering.md). Detached when the returned object is dropped.
pub fn attach_pass(
    ns: &crate::netns::Netns,
    ifaces: &[&str],
    object: &'static [u8],
) -> Result<aya::Ebpf, String> {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(ns.path()).map_err(|e| e.to_string())?;
    let ifaces: Vec<String> = ifaces.iter().map(|s| (*s).to_owned()).collect();
    std::thread::spawn(move || -> Result<aya::Ebpf, String> {
        // SAFETY: setns on this short-lived thread only; the fd is valid.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns: {}", std::io::Error::last_os_error()));
        }
        let mut ebpf = aya::Ebpf::load(object).map_err(|e| e.to_string())?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROG_XDP_PASS)
            .ok_or("no lb_xdp_pass")?
            .try_into()
            .map_err(|e: ProgramError| e.to_string())?;
        prog.load().map_err(|e| e.to_string())?;
        for p in &ifaces {
            prog.attach(p, aya::programs::XdpMode::Driver)
                .map_err(|e| format!("attach to {p}: {e}"))?;
        }
        Ok(ebpf)
    })
    .join()
    .map_err(|_| "attach thread panicked".to_string())?
}
