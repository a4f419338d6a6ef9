//! The demo topology, shared by `cargo xtask demo` and the end-to-end tests:
//!
//! ```text
//!  {p}-client            {p}-node                                  {p}-be1 / {p}-be2
//!  c0 198.18.0.1/24 ---- n0 198.18.0.2/24 + VIP 198.18.0.210/32
//!                        (lb_xdp attached, native mode)
//!                        nb1 198.18.1.1/24 ------------------------ b1 198.18.1.2/24  model server :9000
//!                        nb2 198.18.2.1/24 ------------------------ b2 198.18.2.2/24  MLflow       :5000
//! ```
//! `ebpf-lb` runs in the node namespace; the backends in theirs. Dropping the topology stops
//! every process, deletes the namespaces (and their veths) and removes the bpffs directory.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use crate::{
    netns::{Netns, run, veth},
    procs::ChildGuard,
    wait::wait_until,
};

pub const VIP: &str = "198.18.0.210";
pub const CLIENT_ADDR: &str = "198.18.0.1";
pub const NODE_IFACE: &str = "n0";
/// Admin listener of the daemon, inside the node namespace.
pub const ADMIN: &str = "127.0.0.1:10254";

/// A backend: its namespace suffix, interface, addresses, port and the name it answers with.
pub struct BackendSpec {
    pub ns: &'static str,
    pub node_if: &'static str,
    pub node_addr: &'static str,
    pub be_if: &'static str,
    pub be_addr: &'static str,
    pub ip: &'static str,
    pub port: u16,
    pub name: &'static str,
}

/// The two backends of examples/demo: the seed's model server and MLflow.
pub const BACKENDS: [BackendSpec; 2] = [
    BackendSpec {
        ns: "be1",
        node_if: "nb1",
        node_addr: "198.18.1.1/24",
        be_if: "b1",
        be_addr: "198.18.1.2/24",
        ip: "198.18.1.2",
        port: 9000,
        name: "model-server",
    },
    BackendSpec {
        ns: "be2",
        node_if: "nb2",
        node_addr: "198.18.2.1/24",
        be_if: "b2",
        be_addr: "198.18.2.2/24",
        ip: "198.18.2.2",
        port: 5000,
        name: "mlflow",
    },
];

/// Removes a bpffs directory (pinned maps and links) on drop.
pub struct BpffsDir(pub PathBuf);

impl Drop for BpffsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct DemoTopology {
    // Fields drop in order: processes first, then namespaces, then pins.
    pub daemon: Option<ChildGuard>,
    pub backends: Vec<ChildGuard>,
    /// `lb_xdp_pass` on the client's c0, when a test needs frames the node sends with
    /// XDP_TX (SYN cookies) to arrive.
    pub client_pass: Option<aya::Ebpf>,
    pub client: Netns,
    pub node: Netns,
    pub backend_ns: Vec<Netns>,
    pub bpffs: BpffsDir,
}

impl DemoTopology {
    /// Creates the namespaces and links. `prefix` keeps concurrent topologies apart.
    pub fn create(prefix: &str, bpffs: &Path) -> Result<Self, String> {
        let client = Netns::create(&format!("{prefix}-client"))?;
        let node = Netns::create(&format!("{prefix}-node"))?;
        let mut backend_ns = Vec::new();
        for b in &BACKENDS {
            backend_ns.push(Netns::create(&format!("{prefix}-{}", b.ns))?);
        }
        let topo = Self {
            daemon: None,
            backends: Vec::new(),
            client_pass: None,
            client,
            node,
            backend_ns,
            bpffs: BpffsDir(bpffs.to_owned()),
        };
        veth(
            &topo.client,
            "c0",
            "198.18.0.1/24",
            &topo.node,
            NODE_IFACE,
            "198.18.0.2/24",
        )?;
        topo.node
            .ip(&["addr", "add", &format!("{VIP}/32"), "dev", NODE_IFACE])?;
        for (b, ns) in BACKENDS.iter().zip(&topo.backend_ns) {
            veth(&topo.node, b.node_if, b.node_addr, ns, b.be_if, b.be_addr)?;
        }
        Ok(topo)
    }

    /// Attaches `lb_xdp_pass` to the client's c0 so frames `lb_xdp` answers with XDP_TX
    /// (SYN-ACKs with SYN cookies) reach the client.
    pub fn attach_client_pass(&mut self, object: &'static [u8]) -> Result<(), String> {
        self.client_pass = Some(crate::xdp::attach_pass(&self.client, &["c0"], object)?);
        Ok(())
    }

    /// Starts the echo backends and waits until each answers.
    pub fn start_backends(&mut self, backend_bin: &Path) -> Result<(), String> {
        for (b, ns) in BACKENDS.iter().zip(&self.backend_ns) {
            let child = ns
                .command(backend_bin)
                .args([
                    "--listen",
                    &format!("{}:{}", b.ip, b.port),
                    "--name",
                    b.name,
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("starting {}: {e}", backend_bin.display()))?;
            self.backends.push(ChildGuard::new(b.name, child));
            let url = format!("http://{}:{}/healthz", b.ip, b.port);
            wait_until(Duration::from_secs(10), || {
                self.curl_from(&self.node, &url).ok()
            })
            .ok_or_else(|| format!("backend {} did not come up at {url}", b.name))?;
        }
        Ok(())
    }

    /// Starts `ebpf-lb run` in the node namespace with XDP on n0 and waits for /readyz.
    pub fn start_daemon(
        &mut self,
        ebpf_lb: &Path,
        manifests: &Path,
        xdp_mode: &str,
        stderr: Stdio,
    ) -> Result<(), String> {
        self.start_daemon_with(ebpf_lb, manifests, xdp_mode, stderr, &[])
    }

    /// [`Self::start_daemon`] with `extra` arguments for `ebpf-lb run`.
    pub fn start_daemon_with(
        &mut self,
        ebpf_lb: &Path,
        manifests: &Path,
        xdp_mode: &str,
        stderr: Stdio,
        extra: &[&str],
    ) -> Result<(), String> {
        let child = self
            .node
            .command(ebpf_lb)
            .args(["run", "--manifests"])
            .arg(manifests)
            .args([
                "--iface",
                NODE_IFACE,
                "--vip",
                VIP,
                "--http-listen",
                "0.0.0.0:80",
            ])
            .args(["--admin-listen", ADMIN, "--xdp-mode", xdp_mode, "--bpffs"])
            .arg(&self.bpffs.0)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .env("RUST_LOG", "info")
            .spawn()
            .map_err(|e| format!("starting {}: {e}", ebpf_lb.display()))?;
        self.daemon = Some(ChildGuard::new("ebpf-lb", child));
        let url = format!("http://{ADMIN}/readyz");
        let ready = wait_until(Duration::from_secs(20), || {
            if let Some(status) = self.daemon.as_mut().and_then(ChildGuard::try_status) {
                return Some(Err(format!("ebpf-lb exited during start-up: {status}")));
            }
            self.curl_from(&self.node, &url).ok().map(Ok)
        });
        match ready {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(e),
            None => Err(format!("ebpf-lb did not become ready ({url})")),
        }
    }

    /// GET `url` with curl from inside `ns`: the body of a 2xx answer, else an error.
    pub fn curl_from(&self, ns: &Netns, url: &str) -> Result<String, String> {
        let out = run(ns
            .command("curl")
            .args(["-sS", "--fail", "--max-time", "5", url]))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// GET `path` on the VIP from the client namespace: (status, body).
    pub fn curl_vip(&self, path: &str) -> Result<(u16, String), String> {
        let url = format!("http://{VIP}{path}");
        let out = run(self.client.command("curl").args([
            "-sS",
            "--max-time",
            "5",
            "-w",
            "\n%{http_code}",
            &url,
        ]))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text
            .rsplit_once('\n')
            .ok_or_else(|| format!("curl {url}: no status"))?;
        let code = code
            .trim()
            .parse()
            .map_err(|_| format!("curl {url}: bad status {code:?}"))?;
        Ok((code, body.to_owned()))
    }

    /// `bpftool map dump pinned <bpffs>/<map>`, as text.
    pub fn bpftool_dump(&self, map: &str, json: bool) -> Result<String, String> {
        let mut cmd = Command::new("bpftool");
        if json {
            cmd.arg("-j");
        }
        cmd.args(["map", "dump", "pinned"])
            .arg(self.bpffs.0.join(map));
        let out = run(&mut cmd)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
