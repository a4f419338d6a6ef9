//! Packet tests of `lb_xdp` and `lb_tc_decap`, Katran style: the real programs, run by the
//! kernel through BPF_PROG_TEST_RUN on crafted frames. Each row gives a description, the
//! map setup, packets run first, the input bytes, the expected action and output bytes,
//! and the expected change of every `STATS` counter (summed over CPUs; every counter not
//! named must stay unchanged). Each row runs on a freshly loaded object.
//!
//! Needs root (BPF_PROG_LOAD, BPF_PROG_TEST_RUN); skips with a message otherwise.
use std::{collections::BTreeMap, net::IpAddr};

use aya::programs::ProgramError;
use lb_common::{
    Counter, EgressPort, FAMILY_V4, FlowKey, MAX_VIPS, NO_NODE, NODE_HAS_V4, NODE_HAS_V6,
    NODE_LOCAL, NODE_REDIRECT, NodeInfo, PROG_XDP, PROTO_TCP, PROTO_UDP, Reason, VipKey, vip_slot,
};
use lb_userspace::dataplane::policy::{Cidr, KernelPolicy};
use tests::{
    packet::{self, Frame, PacketBuilder, tcp_flags},
    xdp::{Loaded, TC_ACT_OK, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX, flow_key},
};

/// VIPs every row runs against; ids are positions, then one id per VIP address.
const VIP_TCP: VipKey = VipKey::v4([198, 18, 0, 210], 80, PROTO_TCP);
const VIP_UDP: VipKey = VipKey::v4([198, 18, 0, 210], 53, PROTO_UDP);
/// 2001:2::/48 is the IPv6 benchmarking range (RFC 5180), the counterpart of 198.18.0.0/15.
const VIP6_ADDR: [u8; 16] = [0x20, 0x01, 0, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xd2];
const VIP_V6: VipKey = VipKey::v6(VIP6_ADDR, 443, PROTO_TCP);
const TCP_ID: u32 = 0;
const UDP_ID: u32 = 1;
const V6_ID: u32 = 2;
/// Address-only entries: 198.18.0.210 and 2001:2::d2.
const ADDR4_ID: u32 = 3;
const ADDR6_ID: u32 = 4;

/// This node (index 0) and a peer (index 1) for the steering rows.
const SELF_V4: [u8; 4] = [198, 18, 0, 2];
const PEER_V4: [u8; 4] = [198, 18, 0, 3];
const SELF_V6: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const PEER_V6: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x03];

fn skip_unless_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: needs root for BPF_PROG_TEST_RUN");
        return true;
    }
    false
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

type Setup = Box<dyn Fn(&mut Loaded)>;
type Check = Box<dyn Fn(&Loaded) -> Result<(), String>>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Program {
    Xdp,
    TcDecap,
}

struct Row {
    name: String,
    program: Program,
    setup: Vec<Setup>,
    /// Packets run through the program before `input` (their counters are not checked).
    before: Vec<Vec<u8>>,
    input: Vec<u8>,
    expect: Expect,
    counted: Deltas,
    check: Option<Check>,
}

impl Row {
    fn new(name: impl Into<String>, input: impl Into<Vec<u8>>) -> Self {
        let input = input.into();
        Self {
            name: name.into(),
            program: Program::Xdp,
            setup: Vec::new(),
            before: Vec::new(),
            expect: Expect::Action {
                action: XDP_PASS,
                output: input.clone(),
            },
            input,
            counted: Deltas::new(),
            check: None,
        }
    }

    /// Passed untouched, counted as a new local flow for `vip_id`.
    fn local_new(name: impl Into<String>, input: impl Into<Vec<u8>>, vip_id: u32) -> Self {
        let row = Self::new(name, input);
        let len = row.input.len() as u64;
        row.counts(&[
            (vip_id, Reason::FlowMiss, len),
            (vip_id, Reason::PassLocal, len),
        ])
    }

    /// Passed untouched, no counter changes.
    fn uncounted(name: impl Into<String>, input: impl Into<Vec<u8>>) -> Self {
        Self::new(name, input)
    }

    /// Dropped, counted once under `reason`.
    fn dropped(name: impl Into<String>, input: impl Into<Vec<u8>>, id: u32, r: Reason) -> Self {
        let row = Self::new(name, input);
        let len = row.input.len() as u64;
        row.action(XDP_DROP).counts(&[(id, r, len)])
    }

    fn rejected(name: impl Into<String>, input: impl Into<Vec<u8>>) -> Self {
        let mut row = Self::new(name, input);
        row.expect = Expect::KernelRejects;
        row
    }

    fn tc(mut self) -> Self {
        self.program = Program::TcDecap;
        if let Expect::Action { action, .. } = &mut self.expect {
            *action = TC_ACT_OK;
        }
        self
    }

    fn setup(mut self, f: impl Fn(&mut Loaded) + 'static) -> Self {
        self.setup.push(Box::new(f));
        self
    }

    fn before(mut self, packets: Vec<Vec<u8>>) -> Self {
        self.before = packets;
        self
    }

    /// Same output as input, this action.
    fn action(mut self, action: u32) -> Self {
        self.expect = Expect::Action {
            action,
            output: self.input.clone(),
        };
        self
    }

    fn output(mut self, action: u32, output: Vec<u8>) -> Self {
        self.expect = Expect::Action { action, output };
        self
    }

    fn counts(mut self, c: &[(u32, Reason, u64)]) -> Self {
        self.counted = c
            .iter()
            .map(|(id, r, bytes)| ((*id, r.name()), (1, *bytes)))
            .collect();
        self
    }

    fn check(mut self, f: impl Fn(&Loaded) -> Result<(), String> + 'static) -> Self {
        self.check = Some(Box::new(f));
        self
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

/// An IPv6 frame with an 8-byte extension header of type `ext` inserted before TCP.
fn with_ipv6_ext(frame: &Frame, ext: u8) -> Vec<u8> {
    let mut b = frame.bytes[..frame.l4].to_vec();
    let plen = u16::from_be_bytes([b[frame.l3 + 4], b[frame.l3 + 5]]) + 8;
    b[frame.l3 + 4..frame.l3 + 6].copy_from_slice(&plen.to_be_bytes());
    b[frame.l3 + 6] = ext;
    // Next header TCP, length 0 (8 bytes); PadN or fragment offset 0 with M set.
    b.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
    if ext == 44 {
        let n = b.len();
        b[n - 6..].copy_from_slice(&[0, 1, 0, 0, 0x12, 0x34]);
    }
    b.extend_from_slice(&frame.bytes[frame.l4..]);
    b
}

/// ICMP "fragmentation needed" from a router (198.18.0.254) to the VIP, quoting the
/// VIP's reply `vip:80 -> client:cport`.
fn icmp_frag_needed(cport: u16) -> Vec<u8> {
    let quoted = PacketBuilder::tcp("198.18.0.210:80", &format!("198.18.0.1:{cport}"))
        .tcp_flags(tcp_flags::ACK)
        .build();
    let mut icmp = vec![3, 4, 0, 0, 0, 0, 0x05, 0xc8]; // MTU 1480
    icmp.extend_from_slice(&quoted.bytes[quoted.l3..quoted.l4 + 8]);
    let c = packet::checksum(&[&icmp]);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4_frame([198, 18, 0, 254], [198, 18, 0, 210], 1, &icmp)
}

/// ICMPv6 "packet too big" to the IPv6 VIP quoting `vip:443 -> client:cport`.
fn icmp6_too_big(cport: u16) -> Vec<u8> {
    let quoted = PacketBuilder::tcp("[2001:2::d2]:443", &format!("[2001:2::1]:{cport}"))
        .tcp_flags(tcp_flags::ACK)
        .build();
    let mut icmp = vec![2, 0, 0, 0, 0, 0, 0x05, 0x00];
    icmp.extend_from_slice(&quoted.bytes[quoted.l3..quoted.l4 + 8]);
    // The checksum is not checked by lb_xdp; left zero.
    let mut b = quoted.bytes[..quoted.l3].to_vec();
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    h.extend_from_slice(&[58, 64]);
    h.extend_from_slice(&[0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe]);
    h.extend_from_slice(&VIP6_ADDR);
    b.extend_from_slice(&h);
    b.extend_from_slice(&icmp);
    b
}

/// Ethernet (client -> node) + a 20-byte IPv4 header + `payload`.
fn ipv4_frame(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let c = packet::checksum(&[&h]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    packet::ethernet(packet::ETH_P_IP, &h)
}

/// What `lb_xdp` must emit when it steers `inner` to the peer: built here independently of
/// the kernel code, outer IPv4 header checksum by `packet::checksum`.
fn ipip(inner: &Frame) -> Vec<u8> {
    let l3 = &inner.bytes[inner.l3..];
    let mut b = PEER_MAC.to_vec();
    b.extend_from_slice(&packet::NODE_MAC);
    b.extend_from_slice(&inner.bytes[12..inner.l3]); // VLAN tag (if any) + ethertype
    let total = (20 + u16::from_be_bytes([l3[2], l3[3]])).to_be_bytes();
    let mut h = vec![
        0x45,
        l3[1],
        total[0],
        total[1],
        0,
        0,
        l3[6] & 0x40,
        0,
        64,
        4,
        0,
        0,
    ];
    h.extend_from_slice(&SELF_V4);
    h.extend_from_slice(&PEER_V4);
    let c = packet::checksum(&[&h]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    b.extend_from_slice(&h);
    b.extend_from_slice(l3);
    b
}

fn ip6ip6(inner: &Frame) -> Vec<u8> {
    let l3 = &inner.bytes[inner.l3..];
    let mut b = PEER_MAC.to_vec();
    b.extend_from_slice(&packet::NODE_MAC);
    b.extend_from_slice(&inner.bytes[12..inner.l3]);
    let plen = (40 + u16::from_be_bytes([l3[4], l3[5]])).to_be_bytes();
    b.extend_from_slice(&[0x60, 0, 0, 0, plen[0], plen[1], 41, 64]);
    b.extend_from_slice(&SELF_V6);
    b.extend_from_slice(&PEER_V6);
    b.extend_from_slice(l3);
    b
}

fn policy(edit: impl Fn(&mut KernelPolicy) + 'static) -> impl Fn(&mut Loaded) + 'static {
    move |dp: &mut Loaded| {
        let mut p = KernelPolicy::default();
        edit(&mut p);
        dp.set_policy(&p);
    }
}

fn cidrs(list: &[&str]) -> Vec<Cidr> {
    list.iter().map(|c| c.parse().expect("cidr")).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// Two nodes: this one (index 0, local) and the peer (index 1); Maglev's live half (0)
/// sends every flow to `node`, the other half to the other node.
/// The MAC of the other interface the route to the peer leaves by (redirect rows).
const EGRESS_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x09];

/// Node 1 (the peer) is reached through another interface: flagged `NODE_REDIRECT`,
/// with `EGRESS` (when `egress`) and `TX_PORTS` (when `port`) pointing at `lo`.
fn redirected_peer(egress: bool, port: bool) -> impl Fn(&mut Loaded) + 'static {
    move |dp: &mut Loaded| {
        dp.set_node(
            1,
            NodeInfo {
                v6: PEER_V6,
                v4: PEER_V4,
                mac: PEER_MAC,
                flags: NODE_HAS_V4 | NODE_HAS_V6 | NODE_REDIRECT,
            },
        );
        // SAFETY: a NUL-terminated name.
        let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        if port {
            dp.set_tx_port(1, lo);
        }
        if egress {
            dp.set_egress(
                1,
                EgressPort {
                    ifindex: lo,
                    src_mac: EGRESS_MAC,
                    _pad: 0,
                },
            );
        }
    }
}

/// `frame` with the source MAC replaced by `mac`.
fn from_mac(mut frame: Vec<u8>, mac: [u8; 6]) -> Vec<u8> {
    frame[6..12].copy_from_slice(&mac);
    frame
}

fn steering(node: u32) -> impl Fn(&mut Loaded) + 'static {
    move |dp: &mut Loaded| {
        dp.set_node(
            0,
            NodeInfo {
                v6: SELF_V6,
                v4: SELF_V4,
                mac: packet::NODE_MAC,
                flags: NODE_LOCAL | NODE_HAS_V4 | NODE_HAS_V6,
            },
        );
        dp.set_node(
            1,
            NodeInfo {
                v6: PEER_V6,
                v4: PEER_V4,
                mac: PEER_MAC,
                flags: NODE_HAS_V4 | NODE_HAS_V6,
            },
        );
        dp.fill_maglev(0, node);
        dp.fill_maglev(1, 1 - node);
        dp.edit_config(|c| {
            c.steering = 1;
            c.maglev_active = 0;
            c.node_v4 = SELF_V4;
            c.node_v6 = SELF_V6;
        });
    }
}

fn syn(src: &str) -> Vec<u8> {
    PacketBuilder::tcp(src, "198.18.0.210:80").build().bytes
}

fn udp(src: &str) -> Vec<u8> {
    PacketBuilder::udp(src, "198.18.0.210:53")
        .payload(b"q")
        .build()
        .bytes
}

fn flow_absent(key: FlowKey) -> impl Fn(&Loaded) -> Result<(), String> {
    move |dp: &Loaded| match dp.flow(&key) {
        None => Ok(()),
        Some(v) => Err(format!("flow still in FLOWS: {v:?}")),
    }
}

fn flow_is(key: FlowKey, node: u32) -> impl Fn(&Loaded) -> Result<(), String> {
    move |dp: &Loaded| match dp.flow(&key) {
        Some(v) if v.node == node => Ok(()),
        other => Err(format!("FLOWS entry {other:?}, want node {node}")),
    }
}

fn parse_rows() -> Vec<Row> {
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
    let len = |b: &[u8]| b.len() as u64;

    vec![
        // VIP traffic: a new flow served here, counted as flow_miss + pass_local.
        Row::local_new("IPv4 TCP SYN to TCP VIP", v4_tcp.bytes.clone(), TCP_ID),
        Row::local_new(
            "IPv4 TCP ACK+PSH with 1400-byte payload to TCP VIP",
            PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80")
                .tcp_flags(tcp_flags::ACK | tcp_flags::PSH)
                .tcp_seq_ack(1000, 2000)
                .payload(&[0xab; 1400])
                .build()
                .bytes,
            TCP_ID,
        ),
        Row::local_new("IPv4 UDP to UDP VIP", v4_udp.bytes.clone(), UDP_ID),
        Row::local_new(
            "IPv4 UDP with empty payload (8-byte header exactly) to UDP VIP",
            PacketBuilder::udp("198.18.0.1:40000", "198.18.0.210:53")
                .build()
                .bytes,
            UDP_ID,
        ),
        Row::local_new(
            "802.1Q-tagged IPv4 TCP to TCP VIP",
            vlan_tcp.bytes.clone(),
            TCP_ID,
        ),
        Row::local_new(
            "802.1ad-tagged IPv4 UDP to UDP VIP",
            PacketBuilder::udp("198.18.0.1:40000", "198.18.0.210:53")
                .vlan_8021ad(4094)
                .build()
                .bytes,
            UDP_ID,
        ),
        Row::local_new("IPv6 TCP to IPv6 VIP", v6_tcp.bytes.clone(), V6_ID),
        Row::local_new(
            "IPv4 with 4 bytes of options (IHL 6) to TCP VIP",
            PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80")
                .ipv4_options(&[0x01, 0x01, 0x01, 0x00])
                .build()
                .bytes,
            TCP_ID,
        ),
        Row::local_new(
            "IPv4 with 40 bytes of options (IHL 15) to UDP VIP",
            PacketBuilder::udp("198.18.0.1:40000", "198.18.0.210:53")
                .ipv4_options(&max_options)
                .build()
                .bytes,
            UDP_ID,
        ),
        Row::new("second packet of a TCP flow is a flow hit", {
            PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80")
                .tcp_flags(tcp_flags::ACK)
                .build()
                .bytes
        })
        .before(vec![v4_tcp.bytes.clone()])
        .counts(&[
            (TCP_ID, Reason::FlowHit, 54),
            (TCP_ID, Reason::PassLocal, 54),
        ]),
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
            "IPv4 protocol 1 with a non-ICMP-error body to the VIP address",
            with_ipv4(&v4_tcp, |h| h[9] = 1),
        ),
        Row::uncounted(
            "IPv4 TCP to port 0 of the VIP address (the address-only key is not traffic)",
            PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:0")
                .build()
                .bytes,
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
        // Malformed IP headers: not ours to judge.
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
            "IPv4 ethertype carrying version 6",
            with_ipv4(&v4_tcp, |h| h[0] = 0x65),
        ),
        Row::uncounted("IPv6 ethertype carrying version 4", {
            let mut b = v6_tcp.bytes.clone();
            b[v6_tcp.l3] = 0x40;
            b
        }),
        // Short or invalid L4 header to a VIP address: dropped as malformed.
        Row::dropped(
            "IPv4 IHL 15 but no options: the TCP header would run past the frame",
            PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80")
                .ihl(15)
                .build()
                .bytes,
            ADDR4_ID,
            Reason::DropMalformed,
        ),
        Row::dropped(
            "IPv4 header, no TCP header",
            v4_tcp.truncated(v4_tcp.l4),
            ADDR4_ID,
            Reason::DropMalformed,
        ),
        Row::dropped(
            "truncated TCP header (19 of 20 bytes)",
            v4_tcp.truncated(v4_tcp.l4 + 19),
            ADDR4_ID,
            Reason::DropMalformed,
        ),
        Row::dropped(
            "truncated TCP header after VLAN tag (10 of 20 bytes)",
            vlan_tcp.truncated(vlan_tcp.l4 + 10),
            ADDR4_ID,
            Reason::DropMalformed,
        ),
        Row::dropped(
            "truncated UDP header (7 of 8 bytes)",
            v4_udp.truncated(v4_udp.l4 + 7),
            ADDR4_ID,
            Reason::DropMalformed,
        ),
        Row::dropped(
            "truncated TCP header after IPv6 (19 of 20 bytes)",
            v6_tcp.truncated(v6_tcp.l4 + 19),
            ADDR6_ID,
            Reason::DropMalformed,
        ),
        Row::dropped(
            "TCP data offset 4 (< 5)",
            {
                let mut b = v4_tcp.bytes.clone();
                b[v4_tcp.l4 + 12] = 4 << 4;
                b
            },
            ADDR4_ID,
            Reason::DropMalformed,
        ),
        Row::uncounted(
            "truncated TCP header to a non-VIP address",
            PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.99:80")
                .build()
                .truncated(v4_tcp.l4 + 10),
        ),
        // Fragments and IPv6 extension headers (policy in lb-ebpf/src/parse.rs).
        Row::dropped(
            "IPv4 first fragment (MF, offset 0) to TCP VIP",
            with_ipv4(&v4_tcp, |h| h[6] = 0x20),
            ADDR4_ID,
            Reason::DropMalformed,
        ),
        Row::dropped(
            "IPv4 later fragment (offset 1480) to the VIP address",
            with_ipv4(&v4_tcp, |h| h[6..8].copy_from_slice(&185u16.to_be_bytes())),
            ADDR4_ID,
            Reason::DropMalformed,
        ),
        Row::uncounted(
            "IPv4 fragment to a non-VIP address",
            with_ipv4(
                &PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.99:80").build(),
                |h| h[6] = 0x20,
            ),
        ),
        Row::dropped(
            "IPv6 Hop-by-Hop header before TCP to IPv6 VIP",
            with_ipv6_ext(&v6_tcp, 0),
            ADDR6_ID,
            Reason::DropMalformed,
        ),
        Row::dropped(
            "IPv6 Destination Options header before TCP to IPv6 VIP",
            with_ipv6_ext(&v6_tcp, 60),
            ADDR6_ID,
            Reason::DropMalformed,
        ),
        Row::dropped(
            "IPv6 Fragment header to IPv6 VIP",
            with_ipv6_ext(&v6_tcp, 44),
            ADDR6_ID,
            Reason::DropMalformed,
        ),
        // ICMP.
        Row::uncounted(
            "ICMP echo request to the VIP address: the local stack answers",
            ipv4_frame(
                [198, 18, 0, 1],
                [198, 18, 0, 210],
                1,
                &[8, 0, 0xf7, 0xfe, 0, 1, 0, 0],
            ),
        ),
        Row::new(
            "ICMP fragmentation needed for a VIP flow, served here",
            icmp_frag_needed(40000),
        )
        .counts(&[(TCP_ID, Reason::PassLocal, len(&icmp_frag_needed(40000)))]),
        Row::new(
            "ICMPv6 packet too big for an IPv6 VIP flow, served here",
            icmp6_too_big(40000),
        )
        .counts(&[(V6_ID, Reason::PassLocal, len(&icmp6_too_big(40000)))]),
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
        Row::uncounted(
            "truncated IPv6 header (39 of 40 bytes)",
            v6_tcp.truncated(v6_tcp.l3 + 39),
        ),
        // Not IP at all.
        Row::uncounted(
            "ARP request for the VIP",
            packet::arp_request(ip4("198.18.0.1"), ip4("198.18.0.210")),
        ),
        Row::uncounted(
            "LLDP (ethertype 0x88cc)",
            packet::ethernet(0x88cc, &[0; 46]),
        ),
        Row::uncounted("802.1Q tag carrying ARP", {
            let arp = packet::arp_request(ip4("198.18.0.1"), ip4("198.18.0.210"));
            let mut b = arp[..12].to_vec();
            b.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
            b.extend_from_slice(&arp[12..]);
            b
        }),
    ]
}

fn ip4(s: &str) -> std::net::Ipv4Addr {
    s.parse().expect("addr")
}

fn policy_rows() -> Vec<Row> {
    let s = syn("198.18.0.1:40000");
    let s6 = PacketBuilder::tcp("[2001:2::1]:40000", "[2001:2::d2]:443")
        .build()
        .bytes;
    vec![
        Row::dropped(
            "deny list: source in 198.18.0.0/24",
            s.clone(),
            TCP_ID,
            Reason::DropAcl,
        )
        .setup(policy(|p| p.deny = cidrs(&["198.18.0.0/24"]))),
        Row::dropped(
            "deny list: IPv6 source in 2001:2::/64",
            s6.clone(),
            V6_ID,
            Reason::DropAcl,
        )
        .setup(policy(|p| p.deny = cidrs(&["2001:2::/64"]))),
        Row::local_new(
            "deny list: source outside the denied prefix",
            s.clone(),
            TCP_ID,
        )
        .setup(policy(|p| {
            p.deny = cidrs(&["198.18.1.0/24", "198.18.0.2/32"])
        })),
        Row::dropped(
            "allow list: source outside it",
            s.clone(),
            TCP_ID,
            Reason::DropAcl,
        )
        .setup(policy(|p| p.allow = cidrs(&["198.18.9.0/24"]))),
        Row::local_new("allow list: source inside it", s.clone(), TCP_ID)
            .setup(policy(|p| p.allow = cidrs(&["198.18.0.0/24"]))),
        Row::dropped("deny wins over allow", s.clone(), TCP_ID, Reason::DropAcl).setup(policy(
            |p| {
                p.allow = cidrs(&["198.18.0.0/24"]);
                p.deny = cidrs(&["198.18.0.1/32"]);
            },
        )),
        Row::local_new(
            "an IPv4 allow list does not restrict IPv6",
            s6.clone(),
            V6_ID,
        )
        .setup(policy(|p| p.allow = cidrs(&["198.18.9.0/24"]))),
        Row::uncounted(
            "non-VIP traffic from a denied source passes",
            PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.99:80")
                .build()
                .bytes,
        )
        .setup(policy(|p| p.deny = cidrs(&["0.0.0.0/0"]))),
        Row::dropped(
            "penalty box: source reported by the proxy",
            s.clone(),
            TCP_ID,
            Reason::DropPenalty,
        )
        .setup(|dp| dp.penalize(ip("198.18.0.1"), 60)),
        Row::local_new("penalty box: sentence expired", s.clone(), TCP_ID)
            .setup(|dp| dp.penalize_expired(ip("198.18.0.1"))),
        Row::local_new("penalty box: another source", s.clone(), TCP_ID)
            .setup(|dp| dp.penalize(ip("198.18.0.7"), 60)),
        Row::dropped(
            "new connections: third SYN with rate 1/s, burst 2",
            syn("198.18.0.1:40003"),
            TCP_ID,
            Reason::DropRateConn,
        )
        .setup(policy(|p| (p.conn_rate, p.conn_burst) = (1, 2)))
        .before(vec![syn("198.18.0.1:40001"), syn("198.18.0.1:40002")]),
        Row::local_new(
            "new connections: a second source is unaffected",
            syn("198.18.0.5:40001"),
            TCP_ID,
        )
        .setup(policy(|p| (p.conn_rate, p.conn_burst) = (1, 2)))
        .before(vec![
            syn("198.18.0.1:40001"),
            syn("198.18.0.1:40002"),
            syn("198.18.0.1:40003"),
        ]),
        Row::new(
            "new connections: an ACK of an admitted flow is not a new connection",
            PacketBuilder::tcp("198.18.0.1:40001", "198.18.0.210:80")
                .tcp_flags(tcp_flags::ACK)
                .build()
                .bytes,
        )
        .setup(policy(|p| (p.conn_rate, p.conn_burst) = (1, 2)))
        .before(vec![syn("198.18.0.1:40001"), syn("198.18.0.1:40002")])
        .counts(&[
            (TCP_ID, Reason::FlowHit, 54),
            (TCP_ID, Reason::PassLocal, 54),
        ]),
        Row::dropped(
            "new connections: a second UDP flow with rate 1/s, burst 1",
            udp("198.18.0.1:1001"),
            UDP_ID,
            Reason::DropRateConn,
        )
        .setup(policy(|p| (p.conn_rate, p.conn_burst) = (1, 1)))
        .before(vec![udp("198.18.0.1:1000")]),
        Row::new(
            "new connections: more datagrams of a known UDP flow",
            udp("198.18.0.1:1000"),
        )
        .setup(policy(|p| (p.conn_rate, p.conn_burst) = (1, 1)))
        .before(vec![udp("198.18.0.1:1000")])
        .counts(&[
            (UDP_ID, Reason::FlowHit, 43),
            (UDP_ID, Reason::PassLocal, 43),
        ]),
        Row::dropped(
            "packets/s: fourth packet with rate 1/s, burst 3",
            udp("198.18.0.1:1000"),
            UDP_ID,
            Reason::DropRatePps,
        )
        .setup(policy(|p| (p.pps, p.pps_burst) = (1, 3)))
        .before(vec![udp("198.18.0.1:1000"); 3]),
        Row::local_new(
            "packets/s: a second source is unaffected",
            udp("198.18.0.9:1000"),
            UDP_ID,
        )
        .setup(policy(|p| (p.pps, p.pps_burst) = (1, 3)))
        .before(vec![udp("198.18.0.1:1000"); 4]),
    ]
}

fn steer_rows() -> Vec<Row> {
    let v4 = PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80").build();
    let v4_opts = PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80")
        .ipv4_options(&[0x01; 8])
        .payload(b"hello")
        .build();
    let vlan = PacketBuilder::udp("198.18.0.1:40000", "198.18.0.210:53")
        .vlan(7)
        .payload(b"q")
        .build();
    let v6 = PacketBuilder::tcp("[2001:2::1]:40000", "[2001:2::d2]:443")
        .payload(&[7; 100])
        .build();
    let fin = PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80")
        .tcp_flags(tcp_flags::FIN | tcp_flags::ACK)
        .build();
    let rst = PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80")
        .tcp_flags(tcp_flags::RST)
        .build();
    let ack = PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80")
        .tcp_flags(tcp_flags::ACK)
        .build();
    let key = flow_key("198.18.0.1:40000", "198.18.0.210:80", PROTO_TCP);
    let n = |f: &Frame| f.len() as u64;
    vec![
        Row::new(
            "new flow, Maglev picks the peer: IPIP to it, XDP_TX",
            v4.bytes.clone(),
        )
        .setup(steering(1))
        .output(XDP_TX, ipip(&v4))
        .counts(&[
            (TCP_ID, Reason::FlowMiss, n(&v4)),
            (TCP_ID, Reason::SteeredRemote, n(&v4)),
        ])
        .check(flow_is(key, 1)),
        Row::local_new("new flow, Maglev picks this node", v4.bytes.clone(), TCP_ID)
            .setup(steering(0))
            .check(flow_is(key, 0)),
        // The last ACK after a FIN removed the entry (or a flow LRU evicted): steered by
        // Maglev, and no entry that would outlive the connection.
        Row::new(
            "TCP ACK of no known flow: steered, not remembered",
            ack.bytes.clone(),
        )
        .setup(steering(1))
        .output(XDP_TX, ipip(&ack))
        .counts(&[
            (TCP_ID, Reason::FlowMiss, n(&ack)),
            (TCP_ID, Reason::SteeredRemote, n(&ack)),
        ])
        .check(flow_absent(key)),
        Row::new(
            "route to the peer leaves by another interface: XDP_REDIRECT, its MAC as source",
            v4.bytes.clone(),
        )
        .setup(steering(1))
        .setup(redirected_peer(true, true))
        .output(XDP_REDIRECT, from_mac(ipip(&v4), EGRESS_MAC))
        .counts(&[
            (TCP_ID, Reason::FlowMiss, n(&v4)),
            (TCP_ID, Reason::SteeredRemote, n(&v4)),
        ]),
        Row::new(
            "IPv6 flow redirected the same way (IP6IP6)",
            v6.bytes.clone(),
        )
        .setup(steering(1))
        .setup(redirected_peer(true, true))
        .output(XDP_REDIRECT, from_mac(ip6ip6(&v6), EGRESS_MAC))
        .counts(&[
            (V6_ID, Reason::FlowMiss, n(&v6)),
            (V6_ID, Reason::SteeredRemote, n(&v6)),
        ]),
        Row::new(
            "802.1Q frame redirected: the tag stays with the arrival network",
            vlan.bytes.clone(),
        )
        .setup(steering(1))
        .setup(redirected_peer(true, true))
        .output(XDP_REDIRECT, {
            let tagged = from_mac(ipip(&vlan), EGRESS_MAC);
            let mut untagged = tagged[..12].to_vec();
            untagged.extend_from_slice(&tagged[16..]);
            untagged
        })
        .counts(&[
            (UDP_ID, Reason::FlowMiss, n(&vlan)),
            (UDP_ID, Reason::SteeredRemote, n(&vlan)),
        ]),
        Row::new(
            "NODE_REDIRECT before its EGRESS entry is written: XDP_TX as before",
            v4.bytes.clone(),
        )
        .setup(steering(1))
        .setup(redirected_peer(false, true))
        .output(XDP_TX, ipip(&v4))
        .counts(&[
            (TCP_ID, Reason::FlowMiss, n(&v4)),
            (TCP_ID, Reason::SteeredRemote, n(&v4)),
        ]),
        Row::new(
            "EGRESS without a TX_PORTS device: the redirect fails closed (XDP_DROP)",
            v4.bytes.clone(),
        )
        .setup(steering(1))
        .setup(redirected_peer(true, false))
        .output(XDP_DROP, from_mac(ipip(&v4), EGRESS_MAC))
        .counts(&[
            (TCP_ID, Reason::FlowMiss, n(&v4)),
            (TCP_ID, Reason::SteeredRemote, n(&v4)),
        ]),
        Row::new(
            "flow hit on the peer wins over Maglev (this node)",
            v4.bytes.clone(),
        )
        .setup(steering(0))
        .setup(move |dp| dp.insert_flow(&key, 1))
        .output(XDP_TX, ipip(&v4))
        .counts(&[
            (TCP_ID, Reason::FlowHit, n(&v4)),
            (TCP_ID, Reason::SteeredRemote, n(&v4)),
        ]),
        Row::new(
            "flow hit here wins over Maglev (the peer)",
            v4.bytes.clone(),
        )
        .setup(steering(1))
        .setup(move |dp| dp.insert_flow(&key, 0))
        .counts(&[
            (TCP_ID, Reason::FlowHit, n(&v4)),
            (TCP_ID, Reason::PassLocal, n(&v4)),
        ]),
        Row::local_new(
            "Maglev's other half is live (maglev_active 1)",
            v4.bytes.clone(),
            TCP_ID,
        )
        .setup(steering(1))
        .setup(|dp| dp.edit_config(|c| c.maglev_active = 1)),
        Row::new(
            "IPv4 options are carried inside the tunnel unchanged",
            v4_opts.bytes.clone(),
        )
        .setup(steering(1))
        .output(XDP_TX, ipip(&v4_opts))
        .counts(&[
            (TCP_ID, Reason::FlowMiss, n(&v4_opts)),
            (TCP_ID, Reason::SteeredRemote, n(&v4_opts)),
        ]),
        Row::new(
            "802.1Q tag kept on the encapsulated frame (UDP)",
            vlan.bytes.clone(),
        )
        .setup(steering(1))
        .output(XDP_TX, ipip(&vlan))
        .counts(&[
            (UDP_ID, Reason::FlowMiss, n(&vlan)),
            (UDP_ID, Reason::SteeredRemote, n(&vlan)),
        ]),
        Row::new("IPv6 flow to the peer: IP6IP6", v6.bytes.clone())
            .setup(steering(1))
            .output(XDP_TX, ip6ip6(&v6))
            .counts(&[
                (V6_ID, Reason::FlowMiss, n(&v6)),
                (V6_ID, Reason::SteeredRemote, n(&v6)),
            ]),
        Row::local_new(
            "IPv6 flow, this node has no IPv6 address: served here",
            v6.bytes.clone(),
            V6_ID,
        )
        .setup(steering(1))
        .setup(|dp| dp.edit_config(|c| c.node_v6 = [0; 16])),
        Row::new(
            "FIN of a steered flow is sent on and removes the flow",
            fin.bytes.clone(),
        )
        .setup(steering(0))
        .setup(move |dp| dp.insert_flow(&key, 1))
        .output(XDP_TX, ipip(&fin))
        .counts(&[
            (TCP_ID, Reason::FlowHit, n(&fin)),
            (TCP_ID, Reason::SteeredRemote, n(&fin)),
        ])
        .check(flow_absent(key)),
        Row::new(
            "RST of an unknown flow is steered but not remembered",
            rst.bytes.clone(),
        )
        .setup(steering(1))
        .output(XDP_TX, ipip(&rst))
        .counts(&[
            (TCP_ID, Reason::FlowMiss, n(&rst)),
            (TCP_ID, Reason::SteeredRemote, n(&rst)),
        ])
        .check(flow_absent(key)),
        Row::new(
            "ICMP fragmentation needed follows its flow to the peer",
            icmp_frag_needed(40000),
        )
        .setup(steering(0))
        .setup(move |dp| dp.insert_flow(&key, 1))
        .output(XDP_TX, {
            let f = icmp_frag_needed(40000);
            ipip(&Frame {
                l3: 14,
                l4: 34,
                payload: 34,
                bytes: f,
            })
        })
        .counts(&[(
            TCP_ID,
            Reason::SteeredRemote,
            icmp_frag_needed(40000).len() as u64,
        )])
        .check(flow_is(key, 1)),
        Row::dropped(
            "ACL drops before steering",
            v4.bytes.clone(),
            TCP_ID,
            Reason::DropAcl,
        )
        .setup(steering(1))
        .setup(policy(|p| p.deny = cidrs(&["198.18.0.1/32"]))),
    ]
}

/// The frame the peer receives when `inner` is steered to it, as the peer's `lb_tc_decap`
/// sees it, and what it must hand to the stack.
fn decap_rows() -> Vec<Row> {
    let v4 = PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80")
        .payload(b"GET / HTTP/1.1\r\n\r\n")
        .build();
    let v6 = PacketBuilder::tcp("[2001:2::1]:40000", "[2001:2::d2]:443").build();
    let other = PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.99:80").build();
    let stripped = |f: &Frame| {
        let mut b = PEER_MAC.to_vec();
        b.extend_from_slice(&packet::NODE_MAC);
        b.extend_from_slice(&f.bytes[12..]);
        b
    };
    // The receiving node is the peer: its own address is PEER_V4/6.
    let peer = |dp: &mut Loaded| {
        dp.edit_config(|c| {
            c.node_v4 = PEER_V4;
            c.node_v6 = PEER_V6;
        })
    };
    let enc4 = ipip(&v4);
    let enc6 = ip6ip6(&v6);
    vec![
        Row::new(
            "IPIP to this node, inner TCP to the VIP: outer header stripped",
            enc4.clone(),
        )
        .tc()
        .setup(peer)
        .output(TC_ACT_OK, stripped(&v4))
        .counts(&[(TCP_ID, Reason::Decapsulated, enc4.len() as u64)]),
        Row::new(
            "IP6IP6 to this node, inner TCP to the IPv6 VIP: stripped",
            enc6.clone(),
        )
        .tc()
        .setup(peer)
        .output(TC_ACT_OK, stripped(&v6))
        .counts(&[(V6_ID, Reason::Decapsulated, enc6.len() as u64)]),
        Row::new("IPIP to another node: untouched", enc4.clone())
            .tc()
            .setup(|dp| dp.edit_config(|c| c.node_v4 = [198, 18, 0, 77])),
        Row::new(
            "IPIP to this node, inner not to a VIP: untouched",
            ipip(&other),
        )
        .tc()
        .setup(peer),
        Row::new("plain TCP to the VIP: untouched", v4.bytes.clone())
            .tc()
            .setup(peer),
    ]
}

fn run_rows(rows: Vec<Row>) {
    let mut failures = Vec::new();
    let total = rows.len();
    for row in &rows {
        let mut dp = Loaded::load();
        dp.set_vips(&[VIP_TCP, VIP_UDP, VIP_V6]);
        for s in &row.setup {
            s(&mut dp);
        }
        for p in &row.before {
            dp.run_xdp(PROG_XDP, p, 1).expect("earlier packet");
        }
        let before = dp.stats();
        let result = match row.program {
            Program::Xdp => dp.run_xdp(PROG_XDP, &row.input, 1).map(|(a, o, _)| (a, o)),
            Program::TcDecap => dp.run_tc(&row.input),
        };
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
                if got_action == XDP_TX || got_action == XDP_REDIRECT {
                    problems.extend(verify_encapsulated(&got_output).err());
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
        if let Some(check) = &row.check
            && let Err(e) = check(&dp)
        {
            problems.push(e);
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
        "{} of {total} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Checks an encapsulated frame on its own terms: outer IPv4 header checksum sums to zero,
/// outer length fields match the frame, and the inner TCP/UDP checksum still verifies.
fn verify_encapsulated(frame: &[u8]) -> Result<(), String> {
    let mut l3 = 14;
    if frame[12..14] == [0x81, 0x00] {
        l3 = 18;
    }
    let outer = &frame[l3..];
    let (inner, outer_len) = match outer[0] >> 4 {
        4 => {
            if packet::checksum(&[&outer[..20]]) != 0 {
                return Err("outer IPv4 header checksum does not verify".into());
            }
            (
                &outer[20..],
                usize::from(u16::from_be_bytes([outer[2], outer[3]])),
            )
        }
        6 => (
            &outer[40..],
            40 + usize::from(u16::from_be_bytes([outer[4], outer[5]])),
        ),
        v => return Err(format!("outer IP version {v}")),
    };
    if outer_len != outer.len() {
        return Err(format!(
            "outer length {outer_len}, frame carries {}",
            outer.len()
        ));
    }
    let (src, dst, proto, l4): (Vec<u8>, Vec<u8>, u8, &[u8]) = if inner[0] >> 4 == 4 {
        if packet::checksum(&[&inner[..usize::from(inner[0] & 0xf) * 4]]) != 0 {
            return Err("inner IPv4 header checksum does not verify".into());
        }
        let ihl = usize::from(inner[0] & 0xf) * 4;
        (
            inner[12..16].to_vec(),
            inner[16..20].to_vec(),
            inner[9],
            &inner[ihl..],
        )
    } else {
        (
            inner[8..24].to_vec(),
            inner[24..40].to_vec(),
            inner[6],
            &inner[40..],
        )
    };
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Ok(()); // ICMP: its own checksum is end to end and untouched
    }
    let mut pseudo = src.clone();
    pseudo.extend_from_slice(&dst);
    if src.len() == 4 {
        pseudo.extend_from_slice(&[0, proto]);
        pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    } else {
        pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, proto]);
    }
    if packet::checksum(&[&pseudo, l4]) != 0 {
        return Err("inner L4 checksum does not verify".into());
    }
    Ok(())
}

#[test]
fn lb_xdp_parse_and_policy_for_odd_packets() {
    if skip_unless_root() {
        return;
    }
    run_rows(parse_rows());
}

#[test]
fn lb_xdp_acl_penalty_and_rate_limits() {
    if skip_unless_root() {
        return;
    }
    run_rows(policy_rows());
}

#[test]
fn lb_xdp_steering_and_encapsulation() {
    if skip_unless_root() {
        return;
    }
    run_rows(steer_rows());
}

#[test]
fn lb_tc_decap_strips_our_tunnels_only() {
    if skip_unless_root() {
        return;
    }
    run_rows(decap_rows());
}

/// What `lb_xdp` emits for a steered flow, fed to the peer's `lb_tc_decap`, is the
/// original packet again (with the MACs of the hop between the nodes).
#[test]
fn encapsulation_round_trips_through_decap() {
    if skip_unless_root() {
        return;
    }
    let inner = PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80")
        .payload(b"x")
        .build();
    let mut sender = Loaded::load();
    sender.set_vips(&[VIP_TCP, VIP_UDP, VIP_V6]);
    steering(1)(&mut sender);
    let (action, wire, _) = sender.run_xdp(PROG_XDP, &inner.bytes, 1).expect("run");
    assert_eq!(action, XDP_TX);
    let mut receiver = Loaded::load();
    receiver.set_vips(&[VIP_TCP, VIP_UDP, VIP_V6]);
    receiver.edit_config(|c| c.node_v4 = PEER_V4);
    let (action, out) = receiver.run_tc(&wire).expect("run tc");
    assert_eq!(action, TC_ACT_OK);
    assert_eq!(&out[12..], &inner.bytes[12..]);
    assert_eq!(&out[..6], &PEER_MAC);
}

/// `repeat` runs the program that many times on the same frame: the benchmarks rely on it.
#[test]
fn lb_xdp_repeat_counts_every_run() {
    if skip_unless_root() {
        return;
    }
    let mut dp = Loaded::load();
    dp.set_vips(&[VIP_TCP, VIP_UDP, VIP_V6]);
    let frame = PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80").build();
    let before = dp.stats();
    let (action, output, _) = dp.run_xdp(PROG_XDP, &frame.bytes, 1000).expect("test run");
    assert_eq!(action, XDP_PASS);
    assert_eq!(output, frame.bytes);
    let got = deltas(&before, &dp.stats());
    let l = frame.len() as u64;
    let want = Deltas::from([
        ((TCP_ID, Reason::PassLocal.name()), (1000, 1000 * l)),
        ((TCP_ID, Reason::FlowMiss.name()), (1, l)),
        ((TCP_ID, Reason::FlowHit.name()), (999, 999 * l)),
    ]);
    assert_eq!(got, want);
    let _ = FAMILY_V4;
}

/// Pins the calling thread to CPU 0: the SYN-rate window is per CPU, so the rows below
/// need every run on one CPU to be deterministic.
fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET and sched_setaffinity on the
    // calling thread (pid 0) with a valid set have no other preconditions.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(
        rc,
        0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
}

/// Checks `out` is the SYN-ACK answering `syn` field by field (checksums recomputed here)
/// and returns its cookie (sequence number) and MSS option.
fn verify_synack(syn: &packet::Frame, out: &[u8]) -> (u32, u16) {
    let b = &syn.bytes;
    let v4 = b[syn.l3] >> 4 == 4;
    let ip_len = if v4 { 20 } else { 40 };
    assert_eq!(out.len(), syn.l3 + ip_len + 24, "frame length");
    assert_eq!(&out[0..6], &b[6..12], "back to the sender's MAC");
    assert_eq!(&out[6..12], &b[0..6], "from the MAC it arrived on");
    assert_eq!(
        &out[12..syn.l3],
        &b[12..syn.l3],
        "ethertype (and VLAN) kept"
    );
    let ip = &out[syn.l3..syn.l3 + ip_len];
    let (src, dst): (IpAddr, IpAddr) = if v4 {
        assert_eq!(ip[0], 0x45);
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 44, "IPv4 total length");
        assert_eq!((ip[8], ip[9]), (64, PROTO_TCP), "TTL, protocol");
        assert_eq!(
            &ip[12..16],
            &b[syn.l3 + 16..syn.l3 + 20],
            "source is the VIP"
        );
        assert_eq!(&ip[16..20], &b[syn.l3 + 12..syn.l3 + 16], "to the client");
        assert_eq!(packet::checksum(&[ip]), 0, "IPv4 header checksum");
        let a = |s: &[u8]| IpAddr::from(<[u8; 4]>::try_from(s).expect("4 bytes"));
        (a(&ip[12..16]), a(&ip[16..20]))
    } else {
        assert_eq!(ip[0] >> 4, 6);
        assert_eq!(
            u16::from_be_bytes([ip[4], ip[5]]),
            24,
            "IPv6 payload length"
        );
        assert_eq!((ip[6], ip[7]), (PROTO_TCP, 64), "next header, hop limit");
        assert_eq!(
            &ip[8..24],
            &b[syn.l3 + 24..syn.l3 + 40],
            "source is the VIP"
        );
        assert_eq!(&ip[24..40], &b[syn.l3 + 8..syn.l3 + 24], "to the client");
        let a = |s: &[u8]| IpAddr::from(<[u8; 16]>::try_from(s).expect("16 bytes"));
        (a(&ip[8..24]), a(&ip[24..40]))
    };
    let tcp = &out[syn.l3 + ip_len..];
    let t = &b[syn.l4..];
    assert_eq!(&tcp[0..2], &t[2..4], "source port is the VIP port");
    assert_eq!(&tcp[2..4], &t[0..2], "to the client port");
    let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
    let ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
    assert_eq!(ack, seq.wrapping_add(1), "acknowledges the SYN");
    assert_eq!(tcp[12] >> 4, 6, "data offset: header + MSS option");
    assert_eq!(tcp[13], tcp_flags::SYN | tcp_flags::ACK);
    assert_eq!(&tcp[20..22], &[2, 4], "MSS option");
    let pseudo = packet::pseudo_header(src, dst, PROTO_TCP, tcp.len());
    assert_eq!(packet::checksum(&[&pseudo, tcp]), 0, "TCP checksum");
    let cookie = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    (cookie, u16::from_be_bytes([tcp[22], tcp[23]]))
}

/// SYN cookies: over the threshold, a SYN to a VIP with a listener is answered in XDP with
/// a SYN-ACK carrying the kernel's cookie (XDP_TX); the ACK returning it is admitted and
/// its flow remembered as served here; an ACK with a wrong cookie takes the usual path;
/// without a listener, or while `net.ipv4.tcp_syncookies` is not 2 (the kernel would not
/// accept the ACK), SYNs go to the stack. IPv4 and IPv6. Runs in a namespace of its own
/// (BPF_PROG_TEST_RUN finds listeners in the caller's namespace; the sysctl is per
/// namespace).
#[test]
fn lb_xdp_syn_cookies() {
    if skip_unless_root() {
        return;
    }
    let ns =
        tests::netns::Netns::create(&format!("lbck{}", std::process::id())).expect("namespace");
    let file = std::fs::File::open(ns.path()).expect("open netns");
    std::thread::scope(|s| {
        s.spawn(|| {
            use std::os::fd::AsRawFd as _;
            // SAFETY: setns on this scoped thread only; the fd is valid.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            syn_cookie_checks(&ns);
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    });
}

fn syn_cookie_checks(ns: &tests::netns::Netns) {
    pin_to_cpu0();
    // Listeners the cookie code finds with bpf_skc_lookup_tcp; the closed port has none.
    let l4 = std::net::TcpListener::bind("0.0.0.0:0").expect("bind v4");
    let l6 = std::net::TcpListener::bind("[::]:0").expect("bind v6");
    let closed = std::net::TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let p4 = l4.local_addr().expect("addr").port();
    let p6 = l6.local_addr().expect("addr").port();
    let vips = [
        VipKey::v4([198, 18, 0, 210], p4, PROTO_TCP),
        VipKey::v6(VIP6_ADDR, p6, PROTO_TCP),
        VipKey::v4([198, 18, 0, 210], closed, PROTO_TCP),
    ];
    let mut dp = Loaded::load();
    dp.set_vips(&vips);
    dp.edit_config(|c| c.syn_cookie_threshold = 1);
    // MSS 1460, NOP, window scale 7: a SYN with options, as real clients send.
    let options = [2, 4, 0x05, 0xb4, 1, 3, 3, 7];
    let plain = |id: u32, frame: &[u8]| -> Deltas {
        let len = frame.len() as u64;
        [
            ((id, Reason::FlowMiss.name()), (1, len)),
            ((id, Reason::PassLocal.name()), (1, len)),
        ]
        .into()
    };

    // tcp_syncookies=1: the kernel only takes cookie ACKs after a real SYN-queue overflow,
    // so XDP leaves SYNs over the threshold to it.
    ns.sysctl("net.ipv4.tcp_syncookies", "1").expect("sysctl");
    for cport in [40000, 40001, 40002] {
        let syn = PacketBuilder::tcp(
            &format!("198.18.0.1:{cport}"),
            &format!("198.18.0.210:{p4}"),
        )
        .build();
        let before = dp.stats();
        let (action, _, _) = dp.run_xdp(PROG_XDP, &syn.bytes, 1).expect("run");
        assert_eq!(action, XDP_PASS, "tcp_syncookies=1: SYN to the stack");
        assert_eq!(deltas(&before, &dp.stats()), plain(0, &syn.bytes));
    }
    ns.sysctl("net.ipv4.tcp_syncookies", "2").expect("sysctl");

    let cases = [
        (0u32, "198.18.0.1", "198.18.0.210".to_string(), p4),
        (1, "[2001:2::1]", "[2001:2::d2]".to_string(), p6),
    ];
    for (id, client, vip, port) in cases {
        let at = |cport: u16| (format!("{client}:{cport}"), format!("{vip}:{port}"));
        if id == 1 {
            // The IPv6 VIP's window starts here: its first SYN is under the threshold.
            let (c, v) = at(41000);
            let first = PacketBuilder::tcp(&c, &v).tcp_options(&options).build();
            let (action, _, _) = dp.run_xdp(PROG_XDP, &first.bytes, 1).expect("run");
            assert_eq!(action, XDP_PASS, "{vip}: first SYN under the threshold");
        }

        let (c, v) = at(41001);
        let syn = PacketBuilder::tcp(&c, &v)
            .tcp_seq_ack(5000, 0)
            .tcp_options(&options)
            .build();
        let before = dp.stats();
        let (action, out, _) = dp.run_xdp(PROG_XDP, &syn.bytes, 1).expect("run");
        assert_eq!(
            action, XDP_TX,
            "{vip}: SYN over the threshold answered with a cookie"
        );
        let len = syn.bytes.len() as u64;
        let want: Deltas = [
            ((id, Reason::FlowMiss.name()), (1, len)),
            ((id, Reason::SyncookieSent.name()), (1, len)),
        ]
        .into();
        assert_eq!(deltas(&before, &dp.stats()), want, "{vip}: SYN counters");
        let (cookie, mss) = verify_synack(&syn, &out);
        // The largest entry of the kernel's cookie MSS table not above 1460 (IPv4:
        // 536/1300/1440/1460; IPv6: 1220/1420/1440/8940).
        let want_mss = if id == 0 { 1460 } else { 1440 };
        assert_eq!(mss, want_mss, "{vip}: the cookie keeps the client's MSS");
        let key = flow_key(&c, &v, PROTO_TCP);
        assert!(
            dp.flow(&key).is_none(),
            "{vip}: no state kept for a cookie SYN"
        );

        let ack = PacketBuilder::tcp(&c, &v)
            .tcp_flags(tcp_flags::ACK)
            .tcp_seq_ack(5001, cookie.wrapping_add(1))
            .build();
        let before = dp.stats();
        let (action, out, _) = dp.run_xdp(PROG_XDP, &ack.bytes, 1).expect("run");
        assert_eq!(
            (action, &out),
            (XDP_PASS, &ack.bytes),
            "{vip}: cookie ACK passes"
        );
        let len = ack.bytes.len() as u64;
        let want: Deltas = [
            ((id, Reason::FlowMiss.name()), (1, len)),
            ((id, Reason::SyncookieAccepted.name()), (1, len)),
            ((id, Reason::PassLocal.name()), (1, len)),
        ]
        .into();
        assert_eq!(deltas(&before, &dp.stats()), want, "{vip}: ACK counters");
        assert_eq!(
            dp.flow(&key).map(|f| f.node),
            Some(NO_NODE),
            "{vip}: admitted flow is served here"
        );

        // The same cookie from another client port is not valid: the usual path.
        let (c, v) = at(41002);
        let forged = PacketBuilder::tcp(&c, &v)
            .tcp_flags(tcp_flags::ACK)
            .tcp_seq_ack(5001, cookie.wrapping_add(1))
            .build();
        let before = dp.stats();
        let (action, _, _) = dp.run_xdp(PROG_XDP, &forged.bytes, 1).expect("run");
        assert_eq!(action, XDP_PASS, "{vip}: wrong cookie");
        assert_eq!(deltas(&before, &dp.stats()), plain(id, &forged.bytes));
    }

    // No listener on the port: over the threshold, SYNs still go to the stack.
    for cport in [42000, 42001, 42002] {
        let syn = PacketBuilder::tcp(
            &format!("198.18.0.1:{cport}"),
            &format!("198.18.0.210:{closed}"),
        )
        .build();
        let before = dp.stats();
        let (action, _, _) = dp.run_xdp(PROG_XDP, &syn.bytes, 1).expect("run");
        assert_eq!(action, XDP_PASS, "SYN to a port without a listener");
        assert_eq!(deltas(&before, &dp.stats()), plain(2, &syn.bytes));
    }
}

/// Two VIPs whose keys want the same `VIP_INDEX` slot: the first holds it, the second is
/// found through the slot's `spill` mark in `VIPS`; a colliding key that is no VIP passes
/// uncounted. Also: a VIP removed from the set stops being one.
#[test]
fn vip_index_collisions_spill_to_vips() {
    if skip_unless_root() {
        return;
    }
    let first = VIP_TCP;
    let slot = vip_slot(&first);
    let mut colliding = (1..=u16::MAX)
        .map(|port| VipKey::v4([198, 18, 0, 210], port, PROTO_TCP))
        .filter(|k| *k != first && vip_slot(k) == slot);
    let second = colliding.next().expect("a port whose key shares the slot");
    let stranger = colliding.next().expect("another one");
    let mut dp = Loaded::load();
    dp.set_vips(&[first, second]);
    for (key, id) in [(first, 0u32), (second, 1)] {
        let frame =
            PacketBuilder::tcp("198.18.0.1:40000", &format!("198.18.0.210:{}", key.port)).build();
        let before = dp.stats();
        let (action, _, _) = dp.run_xdp(PROG_XDP, &frame.bytes, 1).expect("test run");
        assert_eq!(action, XDP_PASS);
        let got = deltas(&before, &dp.stats());
        let l = frame.len() as u64;
        let want = Deltas::from([
            ((id, Reason::PassLocal.name()), (1, l)),
            ((id, Reason::FlowMiss.name()), (1, l)),
        ]);
        assert_eq!(got, want, "port {}", key.port);
    }
    let frame = PacketBuilder::tcp(
        "198.18.0.1:40000",
        &format!("198.18.0.210:{}", stranger.port),
    )
    .build();
    let before = dp.stats();
    let (action, _, _) = dp.run_xdp(PROG_XDP, &frame.bytes, 1).expect("test run");
    assert_eq!(action, XDP_PASS);
    assert_eq!(deltas(&before, &dp.stats()), Deltas::new());
    // The first VIP goes away: the second moves into the slot (keeping its id 1), the
    // first is no VIP.
    dp.set_vips(&[second]);
    let frame = PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80").build();
    let before = dp.stats();
    let (action, _, _) = dp.run_xdp(PROG_XDP, &frame.bytes, 1).expect("test run");
    assert_eq!(action, XDP_PASS);
    assert_eq!(deltas(&before, &dp.stats()), Deltas::new());
    let frame =
        PacketBuilder::tcp("198.18.0.1:40001", &format!("198.18.0.210:{}", second.port)).build();
    let before = dp.stats();
    dp.run_xdp(PROG_XDP, &frame.bytes, 1).expect("test run");
    let l = frame.len() as u64;
    assert_eq!(
        deltas(&before, &dp.stats()),
        Deltas::from([
            ((1, Reason::PassLocal.name()), (1, l)),
            ((1, Reason::FlowMiss.name()), (1, l)),
        ])
    );
    // A newcomer takes the free id 0, whose row counted the first VIP: it starts at zero.
    assert_ne!(dp.stats()[Reason::PassLocal.index(0) as usize].packets, 0);
    dp.set_vips(&[second, VipKey::v4([198, 18, 0, 211], 80, PROTO_TCP)]);
    assert!(
        Reason::ALL
            .iter()
            .all(|r| dp.stats()[r.index(0) as usize] == Counter::default()),
        "the reused row was zeroed"
    );
}

/// A limit whose refusals last less than the coarse clock can lag (1000 packets/s, burst
/// 1: the next packet is due 1 ms later) is decided with the precise clock: of 100 runs
/// within microseconds one passes, and 2 ms later the source passes again (the coarse
/// clock, a tick of up to 4-10 ms behind, would often still refuse it).
#[test]
fn lb_xdp_short_refusals_use_the_precise_clock() {
    if skip_unless_root() {
        return;
    }
    let mut dp = Loaded::load();
    dp.set_vips(&[VIP_TCP]);
    let mut p = KernelPolicy::default();
    (p.pps, p.pps_burst) = (1000, 1);
    dp.set_policy(&p);
    let frame = PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80")
        .tcp_flags(tcp_flags::ACK)
        .build();
    let l = frame.len() as u64;
    let before = dp.stats();
    dp.run_xdp(PROG_XDP, &frame.bytes, 100).expect("test run");
    let got = deltas(&before, &dp.stats());
    assert_eq!(got.get(&(TCP_ID, Reason::PassLocal.name())), Some(&(1, l)));
    assert_eq!(
        got.get(&(TCP_ID, Reason::DropRatePps.name())),
        Some(&(99, 99 * l))
    );
    std::thread::sleep(std::time::Duration::from_millis(2));
    let (action, _, _) = dp.run_xdp(PROG_XDP, &frame.bytes, 1).expect("test run");
    assert_eq!(action, XDP_PASS);
}

/// The per-CPU refusal cache (`REFUSED`): once a source is over its new-connection limit,
/// its SYNs are refused from the cache (which then holds it), its other packets still pass,
/// and another source is not affected. With a packets/s limit, every packet is refused.
#[test]
fn lb_xdp_refusal_cache_keeps_limits_exact() {
    if skip_unless_root() {
        return;
    }
    let mut dp = Loaded::load();
    dp.set_vips(&[VIP_TCP]);
    let mut p = KernelPolicy::default();
    (p.conn_rate, p.conn_burst) = (1, 1);
    dp.set_policy(&p);
    let syn_a = PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80").build();
    let ack_a = PacketBuilder::tcp("198.18.0.1:40001", "198.18.0.210:80")
        .tcp_flags(tcp_flags::ACK)
        .build();
    let syn_b = PacketBuilder::tcp("198.18.0.7:40000", "198.18.0.210:80").build();
    let l = syn_a.len() as u64;
    let before = dp.stats();
    dp.run_xdp(PROG_XDP, &syn_a.bytes, 50).expect("test run");
    let got = deltas(&before, &dp.stats());
    assert_eq!(got.get(&(TCP_ID, Reason::PassLocal.name())), Some(&(1, l)));
    assert_eq!(
        got.get(&(TCP_ID, Reason::DropRateConn.name())),
        Some(&(49, 49 * l))
    );
    // The cache holds the source (on the CPU that ran it) with a refusal ~1 s ahead.
    let cached = dp.refused_sources();
    assert!(
        cached
            .iter()
            .any(|r| r.addr[..4] == [198, 18, 0, 1] && r.conn_until > 0),
        "REFUSED holds 198.18.0.1: {cached:?}"
    );
    for frame in [&ack_a, &syn_b] {
        let (action, _, _) = dp.run_xdp(PROG_XDP, &frame.bytes, 1).expect("test run");
        assert_eq!(action, XDP_PASS);
    }
    // Packets/s: the cached refusal applies to every packet of the source.
    (p.conn_rate, p.pps, p.pps_burst) = (0, 1, 1);
    dp.set_policy(&p);
    let before = dp.stats();
    dp.run_xdp(PROG_XDP, &ack_a.bytes, 50).expect("test run");
    let got = deltas(&before, &dp.stats());
    assert_eq!(
        got.get(&(TCP_ID, Reason::DropRatePps.name())),
        Some(&(49, 49 * l))
    );
    // The penalty box: every packet of a penalized source is dropped, from the cache once
    // the first drop put it there; the source's slot is taken from the rate-limited one
    // only if they share it, which the test does not depend on.
    dp.penalize(ip("198.18.0.9"), 60);
    dp.edit_config(|c| c.penalty_active = 1);
    let from_c = PacketBuilder::tcp("198.18.0.9:40000", "198.18.0.210:80")
        .tcp_flags(tcp_flags::ACK)
        .build();
    let before = dp.stats();
    dp.run_xdp(PROG_XDP, &from_c.bytes, 20).expect("test run");
    let got = deltas(&before, &dp.stats());
    assert_eq!(
        got,
        Deltas::from([((TCP_ID, Reason::DropPenalty.name()), (20, 20 * l))])
    );
    let cached = dp.refused_sources();
    assert!(
        cached
            .iter()
            .any(|r| r.addr[..4] == [198, 18, 0, 9] && r.penalty_until > 0),
        "REFUSED holds 198.18.0.9: {cached:?}"
    );
}

/// The per-CPU last drop verdict (`LAST_DROP`): once a source's packets to a VIP are
/// dropped, the next ones from it (any source port) to that VIP:port are dropped right
/// after parsing, counted under the same VIP and reason; shown by taking the VIP away,
/// which the long way would pass. A new-connection verdict covers SYNs only; another
/// source, port or protocol is decided the long way; and a verdict is trusted for at most
/// `TRUST_NS` (100 ms), even when its refusal (a 60 s penalty here) lasts longer.
#[test]
fn lb_xdp_last_drop_verdict_answers_a_flood_for_a_while() {
    if skip_unless_root() {
        return;
    }
    // Per-CPU state: every run on one CPU.
    pin_to_cpu0();
    let mut dp = Loaded::load();
    let tcp = |src: &str, dst: &str, flags: u8| {
        PacketBuilder::tcp(src, dst).tcp_flags(flags).build().bytes
    };
    let run = |dp: &Loaded, frame: &[u8]| dp.run_xdp(PROG_XDP, frame, 1).expect("test run").0;
    let counted = |dp: &Loaded, before: &[Counter]| deltas(before, &dp.stats());
    let l = tcp("198.18.0.9:1", "198.18.0.210:80", tcp_flags::ACK).len() as u64;

    // The penalty box: dropped the long way, then from the verdict with the VIP gone.
    dp.set_vips(&[VIP_TCP]);
    dp.penalize(ip("198.18.0.9"), 60);
    dp.edit_config(|c| c.penalty_active = 1);
    let ack = tcp("198.18.0.9:40000", "198.18.0.210:80", tcp_flags::ACK);
    assert_eq!(run(&dp, &ack), XDP_DROP);
    dp.set_vips(&[]);
    let before = dp.stats();
    let other_sport = tcp("198.18.0.9:40001", "198.18.0.210:80", tcp_flags::ACK);
    assert_eq!(run(&dp, &other_sport), XDP_DROP, "answered by the verdict");
    assert_eq!(
        counted(&dp, &before),
        Deltas::from([((TCP_ID, Reason::DropPenalty.name()), (1, l))])
    );
    let other_port = tcp("198.18.0.9:40000", "198.18.0.210:81", tcp_flags::ACK);
    let other_source = tcp("198.18.0.10:40000", "198.18.0.210:80", tcp_flags::ACK);
    assert_eq!(run(&dp, &other_port), XDP_PASS, "another port: not a VIP");
    assert_eq!(
        run(&dp, &other_source),
        XDP_PASS,
        "another source: not a VIP"
    );
    // Still this CPU's last verdict (passing packets leave it), for at most 100 ms.
    assert_eq!(run(&dp, &ack), XDP_DROP);
    std::thread::sleep(std::time::Duration::from_millis(150));
    assert_eq!(run(&dp, &ack), XDP_PASS, "the verdict ran out; no VIP");

    // New connections/s: the verdict covers the source's SYNs, not its other packets.
    dp.set_vips(&[VIP_TCP]);
    let mut p = KernelPolicy::default();
    (p.conn_rate, p.conn_burst) = (1, 1);
    dp.set_policy(&p);
    let syn = |sport: u16| {
        tcp(
            &format!("198.18.0.2:{sport}"),
            "198.18.0.210:80",
            tcp_flags::SYN,
        )
    };
    assert_eq!(run(&dp, &syn(40000)), XDP_PASS, "the burst");
    assert_eq!(run(&dp, &syn(40001)), XDP_DROP);
    dp.set_vips(&[]);
    let before = dp.stats();
    assert_eq!(run(&dp, &syn(40002)), XDP_DROP, "answered by the verdict");
    assert_eq!(
        counted(&dp, &before),
        Deltas::from([((TCP_ID, Reason::DropRateConn.name()), (1, l))])
    );
    let ack = tcp("198.18.0.2:40001", "198.18.0.210:80", tcp_flags::ACK);
    assert_eq!(run(&dp, &ack), XDP_PASS, "not a SYN: not covered; no VIP");
    let udp = PacketBuilder::udp("198.18.0.2:40001", "198.18.0.210:80")
        .build()
        .bytes;
    assert_eq!(run(&dp, &udp), XDP_PASS, "another protocol: not covered");
}

/// The per-CPU flow cache (`FLOW_CACHE`) in front of `FLOWS`: established TCP flows are
/// answered from it, SYNs and a new epoch go back to `FLOWS`, an entry `FLOWS` lost is
/// dropped within a second, a FIN clears it, and UDP flows are never cached.
#[test]
fn lb_xdp_flow_cache_answers_only_what_flows_said() {
    if skip_unless_root() {
        return;
    }
    // Per-CPU state: every run on one CPU.
    pin_to_cpu0();
    let mut dp = Loaded::load();
    dp.set_vips(&[VIP_TCP, VIP_UDP, VIP_V6]);
    steering(0)(&mut dp); // Maglev: this node (XDP_PASS); the peer is node 1 (XDP_TX).
    let tcp = |flags: u8| {
        PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80")
            .tcp_flags(flags)
            .build()
            .bytes
    };
    let (ack, syn) = (tcp(tcp_flags::ACK), tcp(tcp_flags::SYN));
    let fin = tcp(tcp_flags::FIN | tcp_flags::ACK);
    let key = flow_key("198.18.0.1:40000", "198.18.0.210:80", PROTO_TCP);
    let run = |dp: &Loaded, frame: &[u8]| dp.run_xdp(PROG_XDP, frame, 1).expect("test run").0;
    let cached = |dp: &Loaded| -> Vec<(u32, u32)> {
        let bytes = flow_bytes(&key);
        dp.cached_flows()
            .into_iter()
            .filter(|(k, _, _)| *k == bytes)
            .map(|(_, node, epoch)| (node, epoch))
            .collect()
    };

    // A FLOWS hit fills the cache; the next packet is answered from it even after FLOWS
    // changed behind its back (no epoch bump), which shows the cache decided.
    dp.insert_flow(&key, 1);
    assert_eq!(run(&dp, &ack), XDP_TX);
    let epoch = dp.config().flow_epoch;
    assert_eq!(cached(&dp), vec![(1, epoch)]);
    dp.insert_flow_quietly(&key, 0);
    assert_eq!(run(&dp, &ack), XDP_TX, "answered from FLOW_CACHE");

    // A SYN never reads the cache: FLOWS decides, and the cache follows.
    assert_eq!(run(&dp, &syn), XDP_PASS);
    assert_eq!(cached(&dp), vec![(0, epoch)]);
    assert_eq!(run(&dp, &ack), XDP_PASS);

    // A new epoch (a new Maglev table, flows written by the daemon) sends it to FLOWS.
    dp.insert_flow_quietly(&key, 1);
    assert_eq!(run(&dp, &ack), XDP_PASS, "still cached");
    dp.edit_config(|c| c.flow_epoch = c.flow_epoch.wrapping_add(1));
    assert_eq!(run(&dp, &ack), XDP_TX);

    // FLOWS lost the entry (another CPU saw the FIN, or the LRU evicted it): the cache is
    // trusted for at most a second more, then Maglev decides (this node), uncached.
    dp.remove_flow_quietly(&key);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(run(&dp, &ack), XDP_PASS);
    assert_eq!(dp.flow(&key), None, "a non-SYN miss is not remembered");

    // A FIN seen here removes the flow from FLOWS and from this CPU's cache.
    dp.insert_flow(&key, 1);
    assert_eq!(run(&dp, &ack), XDP_TX);
    assert_eq!(cached(&dp).len(), 1);
    assert_eq!(run(&dp, &fin), XDP_TX);
    assert_eq!(dp.flow(&key), None);
    assert!(cached(&dp).is_empty(), "FIN clears the cached flow");

    // UDP flows keep their idle timeout in FLOWS: remembered there, never cached.
    let udp_key = flow_key("198.18.0.1:40000", "198.18.0.210:53", PROTO_UDP);
    assert_eq!(run(&dp, &udp("198.18.0.1:40000")), XDP_PASS);
    assert!(dp.flow(&udp_key).is_some());
    let udp_bytes = flow_bytes(&udp_key);
    assert!(dp.cached_flows().iter().all(|(k, _, _)| *k != udp_bytes));
}

/// A `FlowKey`'s 40 bytes as the kernel stores them.
fn flow_bytes(key: &FlowKey) -> [u8; 40] {
    let mut b = [0u8; 40];
    b[..16].copy_from_slice(&key.src);
    b[16..32].copy_from_slice(&key.dst);
    b[32..34].copy_from_slice(&key.sport.to_ne_bytes());
    b[34..36].copy_from_slice(&key.dport.to_ne_bytes());
    b[36] = key.proto;
    b[37] = key.family;
    b
}

/// A source the ACLs denied is refused from the per-CPU `REFUSED` cache for at most
/// `ACL_REFUSAL_NS` (100 ms): taken off the deny list, it passes again after that, while
/// the sources still denied stay dropped.
#[test]
fn lb_xdp_acl_refusals_end_after_the_deny_list_changes() {
    if skip_unless_root() {
        return;
    }
    pin_to_cpu0();
    let mut dp = Loaded::load();
    dp.set_vips(&[VIP_TCP]);
    let mut p = KernelPolicy {
        deny: cidrs(&["198.18.0.1/32", "198.18.0.5/32"]),
        ..KernelPolicy::default()
    };
    dp.set_policy(&p);
    let from = |src: &str| {
        PacketBuilder::tcp(src, "198.18.0.210:80")
            .tcp_flags(tcp_flags::ACK)
            .build()
            .bytes
    };
    let (a, b) = (from("198.18.0.1:40000"), from("198.18.0.5:40000"));
    let before = dp.stats();
    dp.run_xdp(PROG_XDP, &a, 10).expect("test run");
    let got = deltas(&before, &dp.stats());
    let l = a.len() as u64;
    assert_eq!(
        got,
        Deltas::from([((TCP_ID, Reason::DropAcl.name()), (10, 10 * l))])
    );
    assert!(
        dp.refused_sources()
            .iter()
            .any(|r| r.addr[..4] == [198, 18, 0, 1] && r.acl_until > 0),
        "REFUSED holds 198.18.0.1: {:?}",
        dp.refused_sources()
    );
    p.deny = cidrs(&["198.18.0.5/32"]);
    dp.set_policy(&p);
    std::thread::sleep(std::time::Duration::from_millis(150));
    assert_eq!(dp.run_xdp(PROG_XDP, &a, 1).expect("test run").0, XDP_PASS);
    assert_eq!(dp.run_xdp(PROG_XDP, &b, 1).expect("test run").0, XDP_DROP);
    // An allow list: a source outside it is refused the same way; the source it now lets
    // in (denied a moment ago, so still in the cache) passes once the refusal ran out.
    p.deny.clear();
    p.allow = cidrs(&["198.18.0.5/32"]);
    dp.set_policy(&p);
    assert_eq!(dp.run_xdp(PROG_XDP, &a, 1).expect("test run").0, XDP_DROP);
    std::thread::sleep(std::time::Duration::from_millis(150));
    assert_eq!(dp.run_xdp(PROG_XDP, &b, 1).expect("test run").0, XDP_PASS);
    assert_eq!(dp.run_xdp(PROG_XDP, &a, 1).expect("test run").0, XDP_DROP);
}

/// A restart of another build finds `VIP_INDEX` written for another `vip_slot` (or new and
/// empty). `spill_vip_index`, run before the program is replaced, sends every lookup to
/// `VIPS` until `set_vips` rewrites the index, so VIP packets are never taken for other
/// traffic in between (here: a denied source stays dropped). Each packet comes from
/// another address of the denied range, so none is answered by the last drop verdict
/// (`LAST_DROP`) without a VIP lookup.
#[test]
fn lb_xdp_finds_vips_while_the_index_is_from_another_build() {
    if skip_unless_root() {
        return;
    }
    use aya::maps::Array;
    use lb_common::{VIP_INDEX, VIP_INDEX_SLOTS, VipSlot};
    let mut dp = Loaded::load();
    dp.set_vips(&[VIP_TCP]);
    dp.set_policy(&KernelPolicy {
        deny: cidrs(&["198.18.0.0/24"]),
        ..KernelPolicy::default()
    });
    let mut sources = 1..;
    let mut pkt = || {
        let src = sources.next().expect("an address");
        PacketBuilder::tcp(&format!("198.18.0.{src}:40000"), "198.18.0.210:80")
            .build()
            .bytes
    };
    assert_eq!(dp.run_xdp(PROG_XDP, &pkt(), 1).expect("run").0, XDP_DROP);
    let mine = vip_slot(&VIP_TCP);
    let other = (mine + 1) % VIP_INDEX_SLOTS;
    {
        // The index as a build with another slot function left it.
        let mut index: Array<_, VipSlot> =
            Array::try_from(dp.ebpf.map_mut(VIP_INDEX).expect("VIP_INDEX")).expect("array");
        let slot = index.get(&mine, 0).expect("slot");
        assert_eq!((slot.key, slot.used), (VIP_TCP, 1));
        index.set(other, slot, 0).expect("write");
        index.set(mine, VipSlot::default(), 0).expect("write");
    }
    assert_eq!(
        dp.run_xdp(PROG_XDP, &pkt(), 1).expect("run").0,
        XDP_PASS,
        "a stale index misses the VIP"
    );
    lb_userspace::dataplane::spill_vip_index(&mut dp.ebpf).expect("spill");
    assert_eq!(
        dp.run_xdp(PROG_XDP, &pkt(), 1).expect("run").0,
        XDP_DROP,
        "spilled: found in VIPS"
    );
    dp.set_vips(&[VIP_TCP]);
    assert_eq!(dp.run_xdp(PROG_XDP, &pkt(), 1).expect("run").0, XDP_DROP);
    let index: Array<_, VipSlot> =
        Array::try_from(dp.ebpf.map(VIP_INDEX).expect("VIP_INDEX")).expect("array");
    let slot = index.get(&mine, 0).expect("slot");
    assert_eq!((slot.key, slot.used, slot.spill), (VIP_TCP, 1, 0));
    let stale = index.get(&other, 0).expect("slot");
    assert_eq!(
        (stale.used, stale.spill),
        (0, 0),
        "set_vips cleared the rest"
    );
}
