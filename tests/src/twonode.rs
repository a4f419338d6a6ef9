//! Two proxy nodes on one L2 segment, for the steering tests:
//!
//! ```text
//!  {p}-client  c0 198.18.0.1/24 (MTU 1400: room for the IPIP header) --+
//!  {p}-n1      n0 198.18.0.11/24, VIP 198.18.0.210 on lo (answers ARP) -+-- br0 in {p}-sw
//!  {p}-n2      n0 198.18.0.12/24, VIP 198.18.0.210 on lo (arp_ignore) --+   (lb_xdp_pass on
//!  {p}-be      b0 198.18.0.20/24 backends                             --+    the node ports)
//! ```
//! The client reaches the VIP through n1 (MetalLB L2 in miniature). Each node runs
//! `ebpf-lb` with `lb_xdp` on n0; n1 steers flows Maglev gives n2 over IPIP, n2's
//! `lb_tc_decap` strips it and n2's proxy answers the client directly (DSR). Dropping the
//! topology stops the processes, deletes the namespaces and removes the bpffs directories.
//!
//! [`TwoNodes::add_node_network`] adds a separate node network, a veth `b9` between n1
//! (198.19.0.11) and n2 (198.19.0.12), and makes those the nodes' `--node-ip`: the route
//! between the nodes then leaves by `b9`, not by `n0` where `lb_xdp` runs, so n1 must
//! redirect steered frames to `b9` (XDP_REDIRECT through `TX_PORTS`).
use std::{
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{Array, Map, MapData},
};
use lb_common::{CONFIG, CONFIG_KEY, Config, MAGLEV, MAGLEV_SIZE};

use crate::{
    netns::{Netns, ip, run},
    procs::ChildGuard,
    topology::BpffsDir,
    wait::wait_until,
};

pub const VIP: &str = "198.18.0.210";
pub const CLIENT: &str = "198.18.0.1";
pub const NODE_IPS: [&str; 2] = ["198.18.0.11", "198.18.0.12"];
/// The nodes' addresses on the node network of [`TwoNodes::add_node_network`].
pub const NODE_NET_IPS: [&str; 2] = ["198.19.0.11", "198.19.0.12"];
pub const BACKEND: &str = "198.18.0.20";
pub const ADMIN: &str = "127.0.0.1:10254";

pub struct TwoNodes {
    // Drop order: processes, then the XDP helper object, then namespaces, then pins.
    pub daemons: [Option<ChildGuard>; 2],
    pub backends: Vec<ChildGuard>,
    pub pass_programs: Option<Ebpf>,
    pub node_net_programs: Vec<Ebpf>,
    /// Each node's `--node-ip` (and, swapped, `--peer`).
    pub node_ips: [&'static str; 2],
    pub client: Netns,
    pub nodes: [Netns; 2],
    pub backend: Netns,
    pub switch: Netns,
    pub bpffs: [BpffsDir; 2],
}

/// A veth from `ns` (named `inner`, address `addr`) to a bridge port `port` in `sw`.
fn port(sw: &Netns, ns: &Netns, inner: &str, addr: &str, port: &str) -> Result<(), String> {
    ip(&[
        "link", "add", inner, "netns", &ns.name, "type", "veth", "peer", "name", port, "netns",
        &sw.name,
    ])?;
    ns.ip(&["addr", "add", addr, "dev", inner])?;
    ns.ip(&["link", "set", inner, "up"])?;
    sw.ip(&["link", "set", port, "master", "br0"])?;
    sw.ip(&["link", "set", port, "up"])?;
    Ok(())
}

impl TwoNodes {
    pub fn create(prefix: &str) -> Result<Self, String> {
        let pid = std::process::id();
        let t = Self {
            daemons: [None, None],
            backends: Vec::new(),
            pass_programs: None,
            node_net_programs: Vec::new(),
            node_ips: NODE_IPS,
            client: Netns::create(&format!("{prefix}-client"))?,
            nodes: [
                Netns::create(&format!("{prefix}-n1"))?,
                Netns::create(&format!("{prefix}-n2"))?,
            ],
            backend: Netns::create(&format!("{prefix}-be"))?,
            switch: Netns::create(&format!("{prefix}-sw"))?,
            bpffs: [
                BpffsDir(PathBuf::from(format!("/sys/fs/bpf/{prefix}-{pid}-n1"))),
                BpffsDir(PathBuf::from(format!("/sys/fs/bpf/{prefix}-{pid}-n2"))),
            ],
        };
        t.switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        t.switch.ip(&["link", "set", "br0", "up"])?;
        port(&t.switch, &t.client, "c0", "198.18.0.1/24", "pc")?;
        t.client.ip(&["link", "set", "c0", "mtu", "1400"])?;
        // A veth leaves TCP checksums to "hardware" (CHECKSUM_PARTIAL); XDP_TX drops that
        // metadata, so node 2 would see bad checksums. A real client's NIC fills them in:
        // make the client's veth do the same.
        disable_tx_checksum(&t.client, "c0")?;
        for (i, node) in t.nodes.iter().enumerate() {
            port(
                &t.switch,
                node,
                "n0",
                &format!("{}/24", NODE_IPS[i]),
                &format!("p{}", i + 1),
            )?;
            node.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
            for dev in ["all", "n0", "lo"] {
                node.sysctl(&format!("net.ipv4.conf.{dev}.rp_filter"), "0")?;
                if i == 1 {
                    // Only n1 answers ARP for the VIP, as MetalLB's elected speaker would.
                    node.sysctl(&format!("net.ipv4.conf.{dev}.arp_ignore"), "1")?;
                    node.sysctl(&format!("net.ipv4.conf.{dev}.arp_announce"), "2")?;
                }
            }
        }
        port(&t.switch, &t.backend, "b0", "198.18.0.20/24", "pb")?;
        Ok(t)
    }

    /// Attaches `lb_xdp_pass` to the bridge ports of the nodes: a veth drops frames sent
    /// with XDP_TX unless its peer runs an XDP program (shared/engineering.md).
    pub fn attach_pass_programs(&mut self, object: &'static [u8]) -> Result<(), String> {
        self.pass_programs = Some(crate::xdp::attach_pass(
            &self.switch,
            &["p1", "p2"],
            object,
        )?);
        Ok(())
    }

    /// Adds the node network: veth `b9` from n1 (198.19.0.11/24) to n2 (198.19.0.12/24),
    /// with `lb_xdp_pass` on both ends (a veth drops redirected frames unless the receiving
    /// end runs an XDP program) and rp_filter off; the nodes' `--node-ip` become these.
    pub fn add_node_network(&mut self, object: &'static [u8]) -> Result<(), String> {
        ip(&[
            "link",
            "add",
            "b9",
            "netns",
            &self.nodes[0].name,
            "type",
            "veth",
            "peer",
            "name",
            "b9",
            "netns",
            &self.nodes[1].name,
        ])?;
        for (i, node) in self.nodes.iter().enumerate() {
            node.ip(&[
                "addr",
                "add",
                &format!("{}/24", NODE_NET_IPS[i]),
                "dev",
                "b9",
            ])?;
            node.ip(&["link", "set", "b9", "up"])?;
            node.sysctl("net.ipv4.conf.b9.rp_filter", "0")?;
            self.node_net_programs
                .push(crate::xdp::attach_pass(node, &["b9"], object)?);
        }
        self.node_ips = NODE_NET_IPS;
        Ok(())
    }

    /// Packets node `i` received on interface `iface` (from `/proc/net/dev`, which follows
    /// the reader's namespace; `/sys` under nsenter shows the host's).
    pub fn rx_packets(&self, i: usize, iface: &str) -> Result<u64, String> {
        let out = run(self.nodes[i].command("cat").arg("/proc/net/dev"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.trim_start().strip_prefix(&format!("{iface}:")))
            .and_then(|rest| rest.split_whitespace().nth(1)?.parse().ok())
            .ok_or_else(|| format!("no rx_packets for {iface} in /proc/net/dev:\n{text}"))
    }

    /// Starts an echo backend named `name` on BACKEND:`port`.
    pub fn start_backend(&mut self, bin: &Path, port: u16, name: &str) -> Result<(), String> {
        let child = self
            .backend
            .command(bin)
            .args(["--listen", &format!("{BACKEND}:{port}"), "--name", name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        self.backends.push(ChildGuard::new(name, child));
        let url = format!("http://{BACKEND}:{port}/");
        wait_until(Duration::from_secs(10), || {
            curl(&self.backend, &url, &[]).ok()
        })
        .map(|_| ())
        .ok_or_else(|| format!("backend {name} did not come up"))
    }

    /// Starts `ebpf-lb` on node `i` (0 or 1) with `manifests`, steering between both nodes.
    pub fn start_daemon(&mut self, i: usize, bin: &Path, manifests: &Path) -> Result<(), String> {
        let child = self.nodes[i]
            .command(bin)
            .args(["run", "--manifests"])
            .arg(manifests)
            .args(["--iface", "n0", "--vip", VIP, "--http-listen", "0.0.0.0:80"])
            .args([
                "--admin-listen",
                ADMIN,
                "--xdp-mode",
                "native",
                "--keep-attached",
            ])
            .args([
                "--node-ip",
                self.node_ips[i],
                "--peer",
                self.node_ips[1 - i],
                "--bpffs",
            ])
            .arg(&self.bpffs[i].0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .env("RUST_LOG", "info")
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        self.daemons[i] = Some(ChildGuard::new(&format!("ebpf-lb n{}", i + 1), child));
        let url = format!("http://{ADMIN}/readyz");
        wait_until(Duration::from_secs(20), || {
            curl(&self.nodes[i], &url, &[]).ok()
        })
        .map(|_| ())
        .ok_or_else(|| format!("ebpf-lb on n{} did not become ready", i + 1))
    }

    /// The distinct node indices in node `i`'s live Maglev table.
    pub fn maglev_nodes(&self, i: usize) -> Result<Vec<u32>, String> {
        let open = |name: &str| {
            MapData::from_pin(self.bpffs[i].0.join(name)).map_err(|e| format!("{name}: {e}"))
        };
        let cfg: Array<MapData, Config> =
            Array::try_from(Map::Array(open(CONFIG)?)).map_err(|e| e.to_string())?;
        let cfg = cfg.get(&CONFIG_KEY, 0).map_err(|e| e.to_string())?;
        let table: Array<MapData, u32> =
            Array::try_from(Map::Array(open(MAGLEV)?)).map_err(|e| e.to_string())?;
        let base = cfg.maglev_active * MAGLEV_SIZE;
        // A sample of slots is enough to see whether both nodes are in.
        let mut seen: Vec<u32> = (0..MAGLEV_SIZE)
            .step_by(97)
            .filter_map(|s| table.get(&(base + s), 0).ok())
            .collect();
        seen.sort_unstable();
        seen.dedup();
        Ok(seen)
    }
}

/// `ethtool -K IFACE tx off` inside `ns`, through the SIOCETHTOOL ioctl (ethtool itself is
/// not always installed).
pub fn disable_tx_checksum(ns: &Netns, iface: &str) -> Result<(), String> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_STXCSUM: u32 = 0x17;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [libc::c_char; libc::IFNAMSIZ],
        data: *mut libc::c_void,
        _pad: [u8; 16],
    }
    let file = std::fs::File::open(ns.path()).map_err(|e| e.to_string())?;
    let iface = iface.to_owned();
    std::thread::spawn(move || -> Result<(), String> {
        // SAFETY: setns on this short-lived thread only; the fd is valid.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: plain socket(2) call.
        let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        if sock < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        let mut value = EthtoolValue {
            cmd: ETHTOOL_STXCSUM,
            data: 0,
        };
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: (&mut value as *mut EthtoolValue).cast(),
            _pad: [0; 16],
        };
        for (d, s) in req
            .name
            .iter_mut()
            .zip(iface.bytes().take(libc::IFNAMSIZ - 1))
        {
            *d = s as libc::c_char;
        }
        // SAFETY: `req` and `value` outlive the call; the kernel reads/writes only them.
        let rc = unsafe { libc::ioctl(sock, SIOCETHTOOL, &mut req) };
        let err = std::io::Error::last_os_error();
        // SAFETY: closing the socket we opened.
        unsafe { libc::close(sock) };
        if rc != 0 {
            return Err(format!("ETHTOOL_STXCSUM on {iface}: {err}"));
        }
        Ok(())
    })
    .join()
    .map_err(|_| "ethtool thread panicked".to_string())?
}

/// curl in `ns`: the body of a 2xx answer, else an error.
pub fn curl(ns: &Netns, url: &str, extra: &[&str]) -> Result<String, String> {
    let out = run(ns
        .command("curl")
        .args(["-sS", "--fail", "--max-time", "5"])
        .args(extra)
        .arg(url))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
