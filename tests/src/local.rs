//! Loopback harness for userspace-only tests: echo backends and an `ebpf-lb run` on
//! 127.0.0.1 with a manifests directory the test writes. No root needed.
use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use crate::{netns::run, procs::ChildGuard, wait::wait_until};

/// A free TCP port on 127.0.0.1 (bound and released: good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The `ebpf-lb` binary next to this package's binaries.
pub fn ebpf_lb_bin(backend_bin: &Path) -> PathBuf {
    let p = backend_bin.with_file_name("ebpf-lb");
    assert!(
        p.is_file(),
        "{} is missing: `cargo build -p lb-userspace` (cargo xtask test does)",
        p.display()
    );
    p
}

/// An echo backend on 127.0.0.1.
pub fn start_backend(bin: &Path, name: &str) -> (ChildGuard, u16) {
    let port = free_port();
    let child = Command::new(bin)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--name", name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start echo backend");
    let guard = ChildGuard::new(name, child);
    wait_until(Duration::from_secs(10), || {
        curl(&[&format!("http://127.0.0.1:{port}/")]).ok()
    })
    .expect("backend up");
    (guard, port)
}

/// A temporary manifests directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ebpf-lb-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    pub fn write(&self, name: &str, text: &str) {
        // Write then rename, so the watcher never sees a half-written file.
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write manifest");
        std::fs::rename(&tmp, self.0.join(name)).expect("rename manifest");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `ebpf-lb run` on loopback.
pub struct LocalLb {
    pub http_port: u16,
    pub admin_port: u16,
    /// `--https-listen` on 127.0.0.1.
    pub https_port: u16,
    pub child: ChildGuard,
}

impl LocalLb {
    pub fn start(ebpf_lb: &Path, manifests: &Path) -> Self {
        Self::start_with(ebpf_lb, manifests, &["--access-log", "off"])
    }

    /// Starts with extra `ebpf-lb run` arguments.
    ///
    /// The ports are free when picked, but another test's listener or connection may take
    /// one before `ebpf-lb` binds it (it then exits: "cannot bind: Address already in use").
    /// A start-up that exits is tried again on new ports, up to three times in all.
    pub fn start_with(ebpf_lb: &Path, manifests: &Path, extra: &[&str]) -> Self {
        for attempt in 1..=3 {
            match Self::try_start(ebpf_lb, manifests, extra) {
                Some(lb) => return lb,
                None => eprintln!("ebpf-lb exited during start-up (attempt {attempt} of 3)"),
            }
        }
        panic!("ebpf-lb exited during start-up three times (its stderr says why)");
    }

    /// One start: `None` when the process exited before it was ready.
    fn try_start(ebpf_lb: &Path, manifests: &Path, extra: &[&str]) -> Option<Self> {
        let (http_port, admin_port, https_port) = (free_port(), free_port(), free_port());
        let child = Command::new(ebpf_lb)
            .arg("run")
            .arg("--manifests")
            .arg(manifests)
            .args(extra)
            .args(["--http-listen", &format!("127.0.0.1:{http_port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            // Not the default 0.0.0.0:443: tests run side by side and need no root for it.
            .args(["--https-listen", &format!("127.0.0.1:{https_port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("start ebpf-lb");
        let mut child = ChildGuard::new("ebpf-lb", child);
        let ready = format!("http://127.0.0.1:{admin_port}/readyz");
        let started = wait_until(Duration::from_secs(20), || {
            if child.try_status().is_some() {
                return Some(false);
            }
            curl(&["--fail", &ready]).ok().map(|_| true)
        })
        .expect("ebpf-lb ready within 20 s");
        started.then_some(Self {
            http_port,
            admin_port,
            https_port,
            child,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }
}

/// Runs curl with `args` (plus -sS and a 5 s limit); stdout on success.
pub fn curl(args: &[&str]) -> Result<String, String> {
    let out = run(Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .args(args))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// (status, headers text, body) of one request.
pub fn fetch(args: &[&str]) -> (u16, String, String) {
    let text = curl(&[&["-i"], args].concat()).expect("curl");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// A Service `namespace/name` (port 80, named `http`) whose EndpointSlice points at
/// 127.0.0.1:`port`, as YAML documents (each starting with `---`).
pub fn loopback_service(namespace: &str, name: &str, port: u16) -> String {
    format!(
        "\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         spec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\n\
         kind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: {namespace}, labels: \
         {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\n\
         ports: [{{name: http, port: {port}}}]\nendpoints: [{{addresses: [\"127.0.0.1\"]}}]\n"
    )
}
