//! Packet tests of `lb_xdp`, Katran style: the real program, run by the kernel through
//! BPF_PROG_TEST_RUN on crafted frames. Each row gives the input bytes, the expected XDP
//! action and output bytes, and the expected change of every `STATS` counter (summed over
//! CPUs; every counter not named must stay unchanged).
//!
//! Needs root (BPF_PROG_LOAD, BPF_PROG_TEST_RUN, bpffs); skips with a message otherwise.
use std::{
    collections::BTreeMap,
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray},
    programs::{ProgramError, TestRun, TestRunOptions, Xdp},
};
use lb_common::{
    Counter, MAX_VIPS, PROG_XDP, PROTO_TCP, PROTO_UDP, Reason, STATS, STATS_ENTRIES, VIPS, VipInfo,
    VipKey,
};
use tests::packet::{self, Frame, PacketBuilder, tcp_flags};

const XDP_PASS: u32 = 2;

/// VIPs every row runs against, with their `STATS` row ids.
const VIP_TCP: (VipKey, u32) = (VipKey::v4([198, 18, 0, 210], 80, PROTO_TCP), 1);
const VIP_UDP: (VipKey, u32) = (VipKey::v4([198, 18, 0, 210], 53, PROTO_UDP), 2);
/// 2001:2::/48 is the IPv6 benchmarking range (RFC 5180), the counterpart of 198.18.0.0/15.
const VIP_V6: (VipKey, u32) = (
    VipKey::v6(
        [0x20, 0x01, 0, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xd2],
        443,
        PROTO_TCP,
    ),
    3,
);

fn skip_unless_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: needs root for BPF_PROG_TEST_RUN");
        return true;
    }
    false
}

/// The lb-ebpf object loaded into the kernel, `lb_xdp` verified and ready to run.
struct Dataplane {
    ebpf: Ebpf,
}

impl Dataplane {
    fn load() -> Self {
        let mut ebpf = EbpfLoader::new()
            .load(lb_userspace::dataplane::object::bytes())
            .unwrap_or_else(|e| panic!("loading the lb-ebpf object: {e}"));
        let prog: &mut Xdp = ebpf
            .program_mut(PROG_XDP)
            .expect("lb_xdp in the object")
            .try_into()
            .expect("lb_xdp is an XDP program");
        // The verifier log is part of the error's Display.
        prog.load()
            .unwrap_or_else(|e| panic!("verifying lb_xdp: {e}"));
        Self { ebpf }
    }

    fn add_vip(&mut self, (key, id): (VipKey, u32)) {
        let mut vips: HashMap<_, VipKey, VipInfo> =
            HashMap::try_from(self.ebpf.map_mut(VIPS).expect("VIPS map")).expect("VIPS type");
        vips.insert(key, VipInfo { id, flags: 0 }, 0)
            .expect("insert VIP");
    }

    fn xdp(&self) -> &Xdp {
        self.ebpf
            .program(PROG_XDP)
            .expect("lb_xdp")
            .try_into()
            .expect("XDP program")
    }

    /// Runs `lb_xdp` `repeat` times on `input`; returns the action and the output frame.
    fn run(&self, input: &[u8], repeat: u32) -> Result<(u32, Vec<u8>), ProgramError> {
        // Room for programs that grow the frame (encapsulation) in later rows.
        let mut out = vec![0u8; input.len() + 256];
        let result = self.xdp().test_run(TestRunOptions {
            data_in: Some(input),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::default()
        })?;
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value, out))
    }

    /// Every `STATS` entry, summed over CPUs.
    fn stats(&self) -> Vec<Counter> {
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
}

/// Changed counters, keyed by (vip id, reason name): (packets, bytes).
type Deltas = BTreeMap<(u32, &'static str), (u64, u64)>;

fn deltas(before: &[Counter], after: &[Counter]) -> Deltas {
    let mut d = Deltas::new();
    for vip_id in 0..MAX_VIPS {
        for reason in Reason::ALL {
            let i = reason.index(vip_id) as usize;
            let (b, a) = (before[i], after[i]);
            if a != b {
                d.insert(
                    (vip_id, reason.name()),
                    (a.packets - b.packets, a.bytes - b.bytes),
                );
            }
        }
    }
    d
}

enum Expect {
    /// The program runs and returns `action` with `output` as the frame.
    Action { action: u32, output: Vec<u8> },
    /// BPF_PROG_TEST_RUN refuses the input with EINVAL before the program runs (frames
    /// shorter than an Ethernet header: such frames never reach XDP on a real NIC either).
    KernelRejects,
}

struct Row {
    name: &'static str,
    input: Vec<u8>,
    expect: Expect,
    counted: Deltas,
}

impl Row {
    /// Passed untouched and counted once for `vip_id` as PassLocal, bytes = frame length.
    fn counted(name: &'static str, input: impl Into<Vec<u8>>, vip_id: u32) -> Self {
        let input = input.into();
        let counted = Deltas::from([((vip_id, Reason::PassLocal.name()), (1, input.len() as u64))]);
        Self {
            name,
            expect: Expect::Action {
                action: XDP_PASS,
                output: input.clone(),
            },
            input,
            counted,
        }
    }

    /// Passed untouched, no counter changes.
    fn uncounted(name: &'static str, input: impl Into<Vec<u8>>) -> Self {
        let input = input.into();
        Self {
            name,
            expect: Expect::Action {
                action: XDP_PASS,
                output: input.clone(),
            },
            input,
            counted: Deltas::new(),
        }
    }

    fn rejected(name: &'static str, input: impl Into<Vec<u8>>) -> Self {
        Self {
            name,
            input: input.into(),
            expect: Expect::KernelRejects,
            counted: Deltas::new(),
        }
    }
}

/// A frame with its IPv4 header edited and the header checksum recomputed.
fn with_ipv4(frame: &Frame, edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut b = frame.bytes.clone();
    let h = &mut b[frame.l3..frame.l4];
    edit(h);
    h[10..12].copy_from_slice(&[0, 0]);
    let csum = packet::checksum(&[h]);
    h[10..12].copy_from_slice(&csum.to_be_bytes());
    b
}

fn rows() -> Vec<Row> {
    let (_, tcp_id) = VIP_TCP;
    let (_, udp_id) = VIP_UDP;
    let (_, v6_id) = VIP_V6;
    let v4_tcp = PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80").build();
    let v4_udp = PacketBuilder::udp("198.18.0.1:40000", "198.18.0.210:53")
        .payload(b"query")
        .build();
    let v6_tcp = PacketBuilder::tcp("[2001:2::1]:40000", "[2001:2::d2]:443").build();
    let vlan_tcp = PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80")
        .vlan(7)
        .build();
    // 40 bytes of NOP options: IHL 15, the largest header IPv4 allows.
    let max_options = [0x01; 40];

    vec![
        // VIP traffic: counted once, bytes = whole frame.
        Row::counted("IPv4 TCP SYN to TCP VIP", v4_tcp.bytes.clone(), tcp_id),
        Row::counted(
            "IPv4 TCP ACK+PSH with 1400-byte payload to TCP VIP",
            PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80")
                .tcp_flags(tcp_flags::ACK | tcp_flags::PSH)
                .tcp_seq_ack(1000, 2000)
                .payload(&[0xab; 1400])
                .build()
                .bytes,
            tcp_id,
        ),
        Row::counted("IPv4 UDP to UDP VIP", v4_udp.bytes.clone(), udp_id),
        Row::counted(
            "IPv4 UDP with empty payload (8-byte header exactly) to UDP VIP",
            PacketBuilder::udp("198.18.0.1:40000", "198.18.0.210:53")
                .build()
                .bytes,
            udp_id,
        ),
        Row::counted(
            "802.1Q-tagged IPv4 TCP to TCP VIP",
            vlan_tcp.bytes.clone(),
            tcp_id,
        ),
        Row::counted(
            "802.1ad-tagged IPv4 UDP to UDP VIP",
            PacketBuilder::udp("198.18.0.1:40000", "198.18.0.210:53")
                .vlan_8021ad(4094)
                .build()
                .bytes,
            udp_id,
        ),
        Row::counted("IPv6 TCP to IPv6 VIP", v6_tcp.bytes.clone(), v6_id),
        Row::counted(
            "IPv4 with 4 bytes of options (IHL 6) to TCP VIP",
            PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80")
                .ipv4_options(&[0x01, 0x01, 0x01, 0x00])
                .build()
                .bytes,
            tcp_id,
        ),
        Row::counted(
            "IPv4 with 40 bytes of options (IHL 15) to UDP VIP",
            PacketBuilder::udp("198.18.0.1:40000", "198.18.0.210:53")
                .ipv4_options(&max_options)
                .build()
                .bytes,
            udp_id,
        ),
        // Not a VIP:port:protocol: untouched, uncounted.
        Row::uncounted(
            "IPv4 TCP to VIP address, other port",
            PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:443")
                .build()
                .bytes,
        ),
        Row::uncounted(
            "IPv4 UDP to the TCP VIP's port",
            PacketBuilder::udp("198.18.0.1:40000", "198.18.0.210:80")
                .build()
                .bytes,
        ),
        Row::uncounted(
            "IPv4 TCP to non-VIP address, VIP port",
            PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.99:80")
                .build()
                .bytes,
        ),
        Row::uncounted(
            "IPv4 TCP from the VIP (source matches, destination does not)",
            PacketBuilder::tcp("198.18.0.210:80", "198.18.0.1:40000")
                .build()
                .bytes,
        ),
        Row::uncounted(
            "IPv4 ICMP to VIP address (protocol 1)",
            with_ipv4(&v4_tcp, |h| h[9] = 1),
        ),
        Row::uncounted(
            "IPv6 TCP to IPv6 VIP, other port",
            PacketBuilder::tcp("[2001:2::1]:40000", "[2001:2::d2]:80")
                .build()
                .bytes,
        ),
        Row::uncounted(
            "IPv6 to c612:d2:: port 80: same key bytes as the IPv4 TCP VIP, other family",
            PacketBuilder::tcp("[2001:2::1]:40000", "[c612:d2::]:80")
                .build()
                .bytes,
        ),
        // Malformed IP headers.
        Row::uncounted(
            "IPv4 IHL 4 (< 5)",
            PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80")
                .ihl(4)
                .build()
                .bytes,
        ),
        Row::uncounted(
            "IPv4 IHL 0",
            PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80")
                .ihl(0)
                .build()
                .bytes,
        ),
        Row::uncounted(
            "IPv4 IHL 15 but no options: the TCP header would run past the frame",
            PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80")
                .ihl(15)
                .build()
                .bytes,
        ),
        Row::uncounted(
            "IPv4 ethertype carrying version 6",
            with_ipv4(&v4_tcp, |h| h[0] = 0x65),
        ),
        Row::uncounted("IPv6 ethertype carrying version 4", {
            let mut b = v6_tcp.bytes.clone();
            b[v6_tcp.l3] = 0x40;
            b
        }),
        // Truncated frames: every read must stay inside the packet.
        Row::rejected("truncated Ethernet header (10 bytes)", v4_tcp.truncated(10)),
        Row::rejected("empty frame", Vec::new()),
        Row::uncounted(
            "Ethernet header only, IPv4 ethertype (14 bytes)",
            v4_tcp.truncated(14),
        ),
        Row::uncounted(
            "802.1Q tag cut after the TPID (16 bytes)",
            vlan_tcp.truncated(16),
        ),
        Row::uncounted(
            "802.1Q tag, no IPv4 header (18 bytes)",
            vlan_tcp.truncated(18),
        ),
        Row::uncounted(
            "truncated IPv4 header (19 of 20 bytes)",
            v4_tcp.truncated(v4_tcp.l3 + 19),
        ),
        Row::uncounted("IPv4 header, no TCP header", v4_tcp.truncated(v4_tcp.l4)),
        Row::uncounted(
            "truncated TCP header (19 of 20 bytes)",
            v4_tcp.truncated(v4_tcp.l4 + 19),
        ),
        Row::uncounted(
            "truncated TCP header after VLAN tag (10 of 20 bytes)",
            vlan_tcp.truncated(vlan_tcp.l4 + 10),
        ),
        Row::uncounted(
            "truncated UDP header (7 of 8 bytes)",
            v4_udp.truncated(v4_udp.l4 + 7),
        ),
        Row::uncounted(
            "truncated IPv6 header (39 of 40 bytes)",
            v6_tcp.truncated(v6_tcp.l3 + 39),
        ),
        Row::uncounted(
            "truncated TCP header after IPv6 (19 of 20 bytes)",
            v6_tcp.truncated(v6_tcp.l4 + 19),
        ),
        // Not IP at all.
        Row::uncounted(
            "ARP request for the VIP",
            packet::arp_request(
                "198.18.0.1".parse().expect("addr"),
                "198.18.0.210".parse().expect("addr"),
            ),
        ),
        Row::uncounted(
            "LLDP (ethertype 0x88cc)",
            packet::ethernet(0x88cc, &[0; 46]),
        ),
        Row::uncounted("802.1Q tag carrying ARP", {
            let arp = packet::arp_request(
                "198.18.0.1".parse().expect("addr"),
                "198.18.0.210".parse().expect("addr"),
            );
            let mut b = arp[..12].to_vec();
            b.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
            b.extend_from_slice(&arp[12..]);
            b
        }),
    ]
}

fn loaded_with_vips() -> Dataplane {
    let mut dp = Dataplane::load();
    for vip in [VIP_TCP, VIP_UDP, VIP_V6] {
        dp.add_vip(vip);
    }
    dp
}

#[test]
fn lb_xdp_packet_table() {
    if skip_unless_root() {
        return;
    }
    let dp = loaded_with_vips();
    let rows = rows();
    let mut failures = Vec::new();
    for row in &rows {
        let before = dp.stats();
        let result = dp.run(&row.input, 1);
        let counted = deltas(&before, &dp.stats());
        let mut problems = Vec::new();
        match (&row.expect, result) {
            (Expect::Action { action, output }, Ok((got_action, got_output))) => {
                if got_action != *action {
                    problems.push(format!("action {got_action}, want {action}"));
                }
                if got_output != *output {
                    problems.push(format!(
                        "output differs ({} bytes, want {})\n      got  {got_output:02x?}\n      want {output:02x?}",
                        got_output.len(),
                        output.len()
                    ));
                }
            }
            (Expect::KernelRejects, Err(ProgramError::SyscallError(e)))
                if e.io_error.raw_os_error() == Some(libc::EINVAL) => {}
            (Expect::KernelRejects, Ok((action, _))) => {
                problems.push(format!(
                    "kernel ran the program (action {action}), want EINVAL"
                ));
            }
            (_, Err(e)) => problems.push(format!("test run failed: {e}")),
        }
        if counted != row.counted {
            problems.push(format!(
                "counters changed {counted:?}, want {:?}",
                row.counted
            ));
        }
        if problems.is_empty() {
            eprintln!("ok   {}", row.name);
        } else {
            eprintln!("FAIL {}", row.name);
            failures.push(format!("{}:\n    {}", row.name, problems.join("\n    ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

/// `repeat` runs the program that many times on the same frame: the benchmarks rely on it.
#[test]
fn lb_xdp_repeat_counts_every_run() {
    if skip_unless_root() {
        return;
    }
    let dp = loaded_with_vips();
    let frame = PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80").build();
    let before = dp.stats();
    let (action, output) = dp.run(&frame.bytes, 1000).expect("test run");
    assert_eq!(action, XDP_PASS);
    assert_eq!(output, frame.bytes);
    let want = Deltas::from([(
        (VIP_TCP.1, Reason::PassLocal.name()),
        (1000, 1000 * frame.len() as u64),
    )]);
    assert_eq!(deltas(&before, &dp.stats()), want);
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const BPFFS: &str = "/sys/fs/bpf";

/// Mounts bpffs on /sys/fs/bpf unless it is already there (containers often lack it).
fn ensure_bpffs() {
    let path = std::ffi::CString::new(BPFFS).expect("path");
    // SAFETY: statfs writes into the zeroed struct we pass; the path is NUL-terminated.
    let mounted = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(path.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    };
    if mounted {
        return;
    }
    eprintln!("mounting bpffs on {BPFFS}");
    let fstype = std::ffi::CString::new("bpf").expect("fstype");
    // SAFETY: all pointers are NUL-terminated strings or null for no data.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            path.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    assert_eq!(
        rc,
        0,
        "mount -t bpf bpf {BPFFS}: {}",
        std::io::Error::last_os_error()
    );
}

/// A fresh directory under /sys/fs/bpf, removed with every pin in it when dropped (also
/// when the test panics).
struct PinDir(PathBuf);

impl PinDir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = Path::new(BPFFS).join(format!(
            "ebpf-lb-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        Self(dir)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Ok(entries) = fs::read_dir(&self.0) {
            for entry in entries.flatten() {
                let _ = fs::remove_file(entry.path());
            }
        }
        if let Err(e) = fs::remove_dir(&self.0)
            && e.kind() != ErrorKind::NotFound
        {
            eprintln!("could not remove {}: {e}", self.0.display());
        }
    }
}

fn bpftool_dump(pin: &Path) -> String {
    let out = Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(pin)
        .output()
        .unwrap_or_else(|e| panic!("running bpftool: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bpftool map dump pinned {}: {}\n{stdout}{}",
        pin.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Pinned maps carry BTF, so `bpftool map dump` shows field names rather than hex.
#[test]
fn pinned_maps_dump_with_btf_field_names() {
    if skip_unless_root() {
        return;
    }
    ensure_bpffs();
    let dp = loaded_with_vips();
    let pins = PinDir::new();
    for name in [VIPS, STATS] {
        dp.ebpf
            .map(name)
            .expect("map")
            .pin(pins.0.join(name))
            .unwrap_or_else(|e| panic!("pin {name}: {e}"));
    }
    // One counted packet, so the dump shows a live, non-zero counter.
    let frame = PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80").build();
    assert_eq!(dp.run(&frame.bytes, 1).expect("test run").0, XDP_PASS);

    let vips = bpftool_dump(&pins.0.join(VIPS));
    for field in [
        "\"addr\"",
        "\"port\": 80",
        "\"proto\": 6",
        "\"family\": 4",
        "\"id\": 1",
        "\"flags\"",
    ] {
        assert!(vips.contains(field), "VIPS dump lacks {field}:\n{vips}");
    }
    let stats = bpftool_dump(&pins.0.join(STATS));
    for field in ["\"packets\": 1", &format!("\"bytes\": {}", frame.len())] {
        assert!(
            stats.contains(field),
            "STATS dump lacks {field}:\n{}",
            &stats[..stats.len().min(2000)]
        );
    }
}
