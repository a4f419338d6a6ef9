//! A packet flood on one veth pair, generated in the kernel, for the drop-throughput
//! benchmark (`xdp-flood`, run by `cargo xtask bench xdp`) and its test:
//!
//! ```text
//!  {p}-gen  fg0 198.18.0.1/24 ============ fr0 198.18.0.2/24 + VIP 198.18.0.210/32  {p}-rcv
//!           lb_xdp_tx, run by BPF_PROG_TEST_RUN      the XDP program under test (native),
//!           in live-frames mode: every XDP_TX        optionally XDP_PASS + an nftables drop
//!           leaves fg0 as a real frame               rule at prerouting priority -300
//! ```
//! A socket sender costs ~1.5 us per packet itself and would hide the receiver's cost; the
//! live-frames generator reached ~7.5 Mpps from one core into a bare XDP_DROP here (issue
//! 3). Frames sent with XDP_TX on a veth are dropped unless the peer runs an XDP program:
//! the receiver always runs one.
//!
//! Dropping the topology deletes both namespaces, with the veth pair and any nftables
//! table inside them; XDP links die with their program objects.
use std::{
    ffi::CString,
    os::fd::AsRawFd as _,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    programs::{
        ProgramError, TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId,
    },
};

use crate::{
    netns::{Netns, run},
    packet::PacketBuilder,
    wait::wait_until,
};

pub const GEN_IF: &str = "fg0";
pub const RCV_IF: &str = "fr0";
pub const GEN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xf1, 0x01];
pub const RCV_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xf1, 0x02];
pub const FLOOD_SRC: &str = "198.18.0.1";
pub const VIP: &str = "198.18.0.210";
/// The generator program (lb-ebpf/src/bench.rs).
pub const PROG_XDP_TX: &str = "lb_xdp_tx";
/// A bare XDP_DROP (lb-ebpf/src/bench.rs): the ceiling of every drop path.
pub const PROG_XDP_DROP: &str = "lb_xdp_drop";
/// `lb_xdp`'s header parser, then XDP_DROP: the floor of a drop decided on the headers.
pub const PROG_XDP_PARSE_DROP: &str = "lb_xdp_parse_drop";

/// The XDP program `name` of `ebpf`, loaded (verified) if it was not yet.
pub fn loaded_xdp<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp, String> {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or_else(|| {
            format!("{name} is not in the object (rebuild with `cargo xtask build-ebpf`)")
        })?
        .try_into()
        .map_err(|e| format!("{name}: {e}"))?;
    match prog.load() {
        Ok(()) | Err(ProgramError::AlreadyLoaded) => Ok(prog),
        Err(e) => Err(format!("verifying {name}: {e}")),
    }
}

/// The XDP program `name` of `ebpf` (loaded before with [`loaded_xdp`]).
pub fn xdp<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a Xdp, String> {
    ebpf.program(name)
        .ok_or_else(|| format!("{name} is not in the object"))?
        .try_into()
        .map_err(|e| format!("{name}: {e}"))
}

/// The flood frame: a TCP SYN from the flood source to VIP:80, addressed to the receiver's
/// MAC (the stack drops frames for other hosts before netfilter sees them) with valid IP
/// and TCP checksums, so the nftables rule, not a sanity check, is what drops it.
pub fn syn_frame() -> Vec<u8> {
    PacketBuilder::tcp(&format!("{FLOOD_SRC}:40000"), &format!("{VIP}:80"))
        .macs(GEN_MAC, RCV_MAC)
        .build()
        .bytes
}

/// The two namespaces and the veth pair between them.
pub struct FloodTopology {
    pub generator: Netns,
    pub receiver: Netns,
    /// Where the receiver's veth is served: `None`, in softirq on the generator's CPU
    /// (after each transmission); `Some(cpu)`, by a threaded-NAPI kernel thread pinned to
    /// `cpu`, as a NIC's receive queue is served on its own CPU, apart from the sender.
    pub receive_cpu: Option<usize>,
}

impl FloodTopology {
    /// Creates `{prefix}-gen` and `{prefix}-rcv` and the veth pair, with fixed MACs.
    pub fn create(prefix: &str) -> Result<Self, String> {
        let t = Self {
            generator: Netns::create(&format!("{prefix}-gen"))?,
            receiver: Netns::create(&format!("{prefix}-rcv"))?,
            receive_cpu: None,
        };
        // No IPv6 on the pair: router solicitations and MLD reports the kernel sends when a
        // link comes up would otherwise reach the receiver's counters beside the flood.
        // (A kernel booted without IPv6 has no such sysctl, and nothing to silence.)
        if std::path::Path::new("/proc/sys/net/ipv6").exists() {
            for ns in [&t.generator, &t.receiver] {
                ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
                ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
            }
        }
        crate::netns::ip(&[
            "link",
            "add",
            GEN_IF,
            "netns",
            &t.generator.name,
            "type",
            "veth",
            "peer",
            "name",
            RCV_IF,
            "netns",
            &t.receiver.name,
        ])?;
        let mac = |m: [u8; 6]| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        for (ns, dev, m, addr) in [
            (&t.generator, GEN_IF, GEN_MAC, "198.18.0.1/24"),
            (&t.receiver, RCV_IF, RCV_MAC, "198.18.0.2/24"),
        ] {
            ns.ip(&["link", "set", dev, "address", &mac(m)])?;
            ns.ip(&["addr", "add", addr, "dev", dev])?;
            ns.ip(&["link", "set", dev, "up"])?;
        }
        t.receiver
            .ip(&["addr", "add", &format!("{VIP}/32"), "dev", RCV_IF])?;
        Ok(t)
    }

    /// Attaches `prog` (loaded) to the receiver's veth in native mode.
    pub fn attach_receiver(&self, prog: &mut Xdp) -> Result<Attached, String> {
        let attached = in_netns(&self.receiver, || {
            let index = if_index(RCV_IF)?;
            prog.attach_to_if_index(index, XdpMode::Driver)
                .map_err(|e| format!("attaching XDP to {RCV_IF}: {e}"))
        })
        .map(|id| Attached(Some(id)))?;
        if let Some(cpu) = self.receive_cpu {
            // The veth's NAPI instances come with its XDP program: again after each attach.
            self.receive_on(cpu)?;
        }
        Ok(attached)
    }

    /// Threaded NAPI on the receiver's veth, its kernel threads (`napi/<dev>-<id>`) pinned
    /// to `cpu`.
    fn receive_on(&self, cpu: usize) -> Result<(), String> {
        // `ip netns exec` mounts the namespace's own /sys, where the veth is.
        crate::netns::run(
            Command::new("ip")
                .args(["netns", "exec", &self.receiver.name])
                .args([
                    "sh",
                    "-c",
                    &format!("echo 1 > /sys/class/net/{RCV_IF}/threaded"),
                ]),
        )?;
        let threads = receiver_napi_threads()?;
        if threads.is_empty() {
            return Err(format!(
                "no napi/{RCV_IF}-* thread after enabling threaded NAPI"
            ));
        }
        threads.into_iter().try_for_each(|tid| pin_to_cpu(tid, cpu))
    }

    /// The receiver veth's counters. A veth with an XDP program counts every frame its
    /// program saw in `rx_packets`, whatever the verdict.
    pub fn receiver_stats(&self) -> Result<LinkStats, String> {
        link_stats(&self.receiver, RCV_IF)
    }

    /// The generator veth's counters: `tx_dropped` includes frames that did not fit the
    /// receiver's ring.
    pub fn generator_stats(&self) -> Result<LinkStats, String> {
        link_stats(&self.generator, GEN_IF)
    }

    /// Waits (up to 2 s) until the receiver's `rx_packets` stops changing, so frames still
    /// in its ring are counted; returns the final value.
    pub fn settle(&self) -> Result<u64, String> {
        let mut last = self.receiver_stats()?.rx_packets;
        let settled = wait_until(Duration::from_secs(2), || {
            let now = self.receiver_stats().ok()?.rx_packets;
            let done = now == last;
            last = now;
            done.then_some(now)
        });
        settled.ok_or_else(|| format!("{RCV_IF} kept receiving after the flood ended"))
    }
}

/// An XDP link of a receiver program; detach it with [`Attached::detach`] (dropping the
/// program object detaches it too).
pub struct Attached(Option<XdpLinkId>);

impl Attached {
    pub fn detach(mut self, prog: &mut Xdp) -> Result<(), String> {
        match self.0.take() {
            Some(id) => prog.detach(id).map_err(|e| format!("detaching XDP: {e}")),
            None => Ok(()),
        }
    }
}

/// Packet counters of one interface, from `ip -s -j link show`.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

fn link_stats(ns: &Netns, dev: &str) -> Result<LinkStats, String> {
    let out =
        run(Command::new("ip").args(["-n", &ns.name, "-s", "-j", "link", "show", "dev", dev]))?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("ip -s -j link show {dev}: {e}"))?;
    let stats = &json[0]["stats64"];
    let field = |dir: &str, name: &str| {
        stats[dir][name]
            .as_u64()
            .ok_or_else(|| format!("ip -s -j link show {dev}: no stats64.{dir}.{name}"))
    };
    Ok(LinkStats {
        rx_packets: field("rx", "packets")?,
        rx_dropped: field("rx", "dropped")?,
        tx_packets: field("tx", "packets")?,
        tx_dropped: field("tx", "dropped")?,
    })
}

/// Runs `f` on a short-lived thread inside `ns`'s network namespace: interface names and
/// indices (attach, BPF_PROG_TEST_RUN's `ingress_ifindex`) are resolved there.
pub fn in_netns<R: Send>(
    ns: &Netns,
    f: impl FnOnce() -> Result<R, String> + Send,
) -> Result<R, String> {
    let file = std::fs::File::open(ns.path()).map_err(|e| format!("{}: {e}", ns.path()))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns on this thread only (it ends with the scope); the fd is valid.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(format!(
                    "setns {}: {}",
                    ns.name,
                    std::io::Error::last_os_error()
                ));
            }
            f()
        })
        .join()
        .map_err(|_| format!("thread in {} panicked", ns.name))?
    })
}

/// The index of `dev` in the calling thread's network namespace.
pub fn if_index(dev: &str) -> Result<u32, String> {
    let name = CString::new(dev).map_err(|_| format!("bad interface name {dev:?}"))?;
    // SAFETY: a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(format!("{dev}: {}", std::io::Error::last_os_error())),
        i => Ok(i),
    }
}

/// How one flood went.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    /// Frames the generator ran (each one XDP_TX out of the sending veth).
    pub packets: u64,
    /// Wall time from the first BPF_PROG_TEST_RUN call to the return of the last.
    pub elapsed: Duration,
    /// Time the kernel reports it spent running the frames (its mean per frame times the
    /// frames), which leaves out the time it yielded the CPU to other tasks. The receiver's
    /// softirq work runs inside it when the kernel does not defer it to ksoftirqd.
    pub kernel: Duration,
}

/// What to send and how.
#[derive(Clone, Debug)]
pub struct FloodSpec {
    pub frame: Vec<u8>,
    /// Stop after this many frames...
    pub packets: u64,
    /// ...or once this much time has passed, whichever comes first.
    pub max_time: Duration,
    /// Live-frames batch size (frames per NAPI-like batch; the kernel allows 1..=256).
    pub batch: u32,
    /// Pin the generator thread to this CPU; the receiver's softirq work, raised by the
    /// generator's transmissions, then runs there as well.
    pub cpu: Option<usize>,
    /// Set (by a signal handler) to stop between BPF_PROG_TEST_RUN calls.
    pub stop: Option<Arc<AtomicBool>>,
}

/// Frames per BPF_PROG_TEST_RUN call: short enough for the time bound to bite promptly.
const CHUNK: u64 = 1_000_000;

/// Runs `generator` (`lb_xdp_tx`, loaded) in live-frames mode inside the
/// generator namespace: `spec.frame` is transmitted out of the generator's veth
/// `spec.packets` times, or until `spec.max_time` has passed (or `spec.stop` is set: an
/// error).
pub fn flood(topo: &FloodTopology, generator: &Xdp, spec: &FloodSpec) -> Result<Sent, String> {
    let len = u32::try_from(spec.frame.len()).map_err(|_| "frame too long".to_string())?;
    in_netns(&topo.generator, || {
        if let Some(cpu) = spec.cpu {
            pin_to_cpu(0, cpu)?;
        }
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex. The kernel wants data 0 and data_end the frame's length.
        let ctx: Vec<u8> = [0, len, 0, if_index(GEN_IF)?, 0, 0]
            .iter()
            .flat_map(|v: &u32| v.to_ne_bytes())
            .collect();
        let start = Instant::now();
        let mut sent = 0u64;
        let mut kernel = Duration::ZERO;
        while sent < spec.packets && start.elapsed() < spec.max_time {
            if spec
                .stop
                .as_ref()
                .is_some_and(|s| s.load(Ordering::Relaxed))
            {
                return Err("interrupted".to_string());
            }
            // At most CHUNK, so it fits the u32 `repeat`.
            let chunk = (spec.packets - sent).min(CHUNK) as u32;
            let r = generator
                .test_run(TestRunOptions {
                    data_in: Some(&spec.frame),
                    ctx_in: Some(&ctx),
                    repeat: chunk,
                    attrs: TestRunAttrs::new().xdp_live_frames(spec.batch),
                    ..TestRunOptions::default()
                })
                .map_err(|e| format!("BPF_PROG_TEST_RUN (live frames) on {GEN_IF}: {e}"))?;
            sent += u64::from(chunk);
            // The kernel reports whole nanoseconds per frame: +-0.5 ns.
            kernel += r.duration * chunk;
        }
        Ok(Sent {
            packets: sent,
            elapsed: start.elapsed(),
            kernel,
        })
    })
}

/// The kernel threads serving the receiver's veth in threaded-NAPI mode (`napi/<dev>-<id>`).
pub fn receiver_napi_threads() -> Result<Vec<i32>, String> {
    let prefix = format!("napi/{RCV_IF}-");
    let mut threads = Vec::new();
    for entry in std::fs::read_dir("/proc")
        .map_err(|e| format!("/proc: {e}"))?
        .flatten()
    {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end().starts_with(&prefix) {
            threads.push(pid);
        }
    }
    Ok(threads)
}

/// Pins thread `tid` (0: the calling one) to `cpu`.
fn pin_to_cpu(tid: i32, cpu: usize) -> Result<(), String> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET stays within it for valid cpus.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(format!("cpu {cpu} out of range"));
        }
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "pinning thread {tid} to cpu {cpu}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// An nftables table `inet bench` in the receiver namespace with a prerouting chain at
/// priority -300 that counts and drops the flood source; deleted on drop (and with the
/// namespace in any case).
pub struct NftDrop<'a> {
    ns: &'a Netns,
}

impl<'a> NftDrop<'a> {
    pub fn install(topo: &'a FloodTopology) -> Result<Self, String> {
        let ns = &topo.receiver;
        let guard = Self { ns };
        guard.nft(&["add", "table", "inet", "bench"])?;
        guard.nft(&[
            "add",
            "chain",
            "inet",
            "bench",
            "pre",
            "{ type filter hook prerouting priority -300; }",
        ])?;
        guard.nft(&[
            "add", "rule", "inet", "bench", "pre", "ip", "saddr", FLOOD_SRC, "counter", "drop",
        ])?;
        Ok(guard)
    }

    fn nft(&self, args: &[&str]) -> Result<Vec<u8>, String> {
        run(self.ns.command("nft").args(args)).map(|o| o.stdout)
    }

    /// Packets the drop rule has counted.
    pub fn dropped(&self) -> Result<u64, String> {
        let out = self.nft(&["-j", "list", "chain", "inet", "bench", "pre"])?;
        let json: serde_json::Value =
            serde_json::from_slice(&out).map_err(|e| format!("nft -j list chain: {e}"))?;
        json["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item["rule"]["expr"].as_array())
            .flatten()
            .find_map(|expr| expr["counter"]["packets"].as_u64())
            .ok_or_else(|| "nft -j list chain inet bench pre: no counter".to_string())
    }
}

impl Drop for NftDrop<'_> {
    fn drop(&mut self) {
        let _ = self.nft(&["delete", "table", "inet", "bench"]);
    }
}

/// Whether `nft` is installed (`cargo xtask setup --bench` installs it).
pub fn have_nft() -> bool {
    Command::new("nft")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
