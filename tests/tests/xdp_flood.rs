//! The flood benchmark's generator really transmits, and each counter the benchmark reads
//! sees its frames: a short live-frames run of `lb_xdp_tx` out of one veth, counted on the
//! other end by the veth's `rx_packets` (bare XDP_DROP), `lb_xdp`'s `STATS` (ACL drop) and
//! an nftables rule's counter (XDP_PASS + nft drop). Without this, a generator that sent
//! nothing would make every case of `xdp-flood` look equally "fast".
//!
//! Needs root (namespaces, XDP, BPF_PROG_TEST_RUN); skips with a message otherwise. The
//! nftables part also needs `nft` (`cargo xtask setup --bench`) and says so when missing.
use std::{net::IpAddr, time::Duration};

use lb_common::{PROG_XDP, PROG_XDP_PASS, PROTO_TCP, Reason, VipKey};
use lb_userspace::dataplane::policy::{Cidr, KernelPolicy};
use tests::{
    flood::{
        self, FLOOD_SRC, FloodSpec, FloodTopology, NftDrop, PROG_XDP_DROP, PROG_XDP_PARSE_DROP,
        PROG_XDP_TX, loaded_xdp,
    },
    netns::is_root,
    packet::{PacketBuilder, arp_request},
    wait::wait_until,
    xdp::Loaded,
};

const FRAMES: u64 = 1000;
/// Frames per generator run: fewer than the receiver's ring holds (veth's 256), and the
/// next run starts only once the last one is accounted for. A receiver on a CPU of its own
/// drains that ring from its NAPI thread, which a busy CPU may not run for a while; one run
/// of all the frames would then count most of them as ring-full.
const BURST: u64 = 200;

fn spec(packets: u64) -> FloodSpec {
    FloodSpec {
        frame: flood::syn_frame(),
        packets,
        max_time: Duration::from_secs(10),
        batch: 64,
        cpu: None,
        stop: None,
    }
}

/// A topology and a loaded generator.
fn setup(prefix: &str) -> (FloodTopology, Loaded) {
    let topo = FloodTopology::create(&format!("{prefix}{}", std::process::id()))
        .unwrap_or_else(|e| panic!("flood topology: {e}"));
    let mut gen_dp = Loaded::load();
    loaded_xdp(&mut gen_dp.ebpf, PROG_XDP_TX).unwrap_or_else(|e| panic!("{e}"));
    (topo, gen_dp)
}

/// Frames the receiver saw and frames the sender counted as ring-full since `start`.
fn counted(topo: &FloodTopology, start: (u64, u64)) -> (u64, u64) {
    let received = topo.receiver_stats().expect("receiver stats").rx_packets - start.0;
    let ring_full = topo.generator_stats().expect("generator stats").tx_dropped - start.1;
    (received, ring_full)
}

/// Attaches `prog` of `rcv` to the receiver, floods `FRAMES` frames in bursts, detaches;
/// returns the frames the receiver's veth saw (and checks that none was lost on the way).
fn flood_into(topo: &FloodTopology, gen_dp: &Loaded, rcv: &mut Loaded, prog: &str) -> u64 {
    let link = topo
        .attach_receiver(loaded_xdp(&mut rcv.ebpf, prog).unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or_else(|e| panic!("{e}"));
    let rx0 = topo.settle().expect("receiver stats");
    let start = (
        rx0,
        topo.generator_stats().expect("generator stats").tx_dropped,
    );
    let generator = flood::xdp(&gen_dp.ebpf, PROG_XDP_TX).expect("generator program");
    let mut sent = 0;
    while sent < FRAMES {
        let burst = BURST.min(FRAMES - sent);
        let run = flood::flood(topo, generator, &spec(burst)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(run.packets, burst, "the generator stopped early");
        sent += burst;
        let drained = wait_until(Duration::from_secs(5), || {
            let (received, ring_full) = counted(topo, start);
            (received + ring_full >= sent).then_some(())
        });
        assert!(
            drained.is_some(),
            "frames sent: {sent}, counted: {:?}",
            counted(topo, start)
        );
    }
    let (received, ring_full) = counted(topo, start);
    link.detach(loaded_xdp(&mut rcv.ebpf, prog).unwrap_or_else(|e| panic!("{e}")))
        .expect("detach");
    assert_eq!(
        received + ring_full,
        FRAMES,
        "every frame sent is either received or counted as ring-full at the sender"
    );
    assert!(
        received >= FRAMES * 9 / 10,
        "{received} of {FRAMES} frames reached the receiver ({ring_full} ring-full)"
    );
    received
}

#[test]
fn generator_frames_reach_the_receiver_counters() {
    if !is_root() {
        eprintln!("skipping: needs root for namespaces, XDP and BPF_PROG_TEST_RUN");
        return;
    }
    let (topo, gen_dp) = setup("xft");

    // Bare XDP_DROP: the veth's rx_packets is the counter.
    let mut bare = Loaded::load();
    flood_into(&topo, &gen_dp, &mut bare, PROG_XDP_DROP);

    // lb_xdp with the flood source denied: STATS drop_acl counts every received frame.
    let mut lb = Loaded::load();
    lb.set_vips(&[VipKey::v4([198, 18, 0, 210], 80, PROTO_TCP)]);
    let src: IpAddr = FLOOD_SRC.parse().expect("flood source");
    lb.set_policy(&KernelPolicy {
        deny: vec![Cidr::new(src, 32)],
        ..KernelPolicy::default()
    });
    let received = flood_into(&topo, &gen_dp, &mut lb, PROG_XDP);
    assert_eq!(lb.reason_packets(Reason::DropAcl), received);
}

/// `xdp-flood --rx-cpu`: the receiver served by threaded NAPI on a CPU of its own still
/// sees every frame, and its kernel thread runs only there.
#[test]
fn a_receiver_served_on_its_own_cpu_counts_every_frame() {
    if !is_root() {
        eprintln!("skipping: needs root for namespaces, XDP and BPF_PROG_TEST_RUN");
        return;
    }
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("skipping: needs two CPUs");
        return;
    }
    let (mut topo, gen_dp) = setup("xfr");
    topo.receive_cpu = Some(1);
    let mut bare = Loaded::load();
    flood_into(&topo, &gen_dp, &mut bare, PROG_XDP_DROP);
    // Attached again (flood_into detaches): the new NAPI thread is pinned too.
    let link = topo
        .attach_receiver(loaded_xdp(&mut bare.ebpf, PROG_XDP_DROP).expect("program"))
        .expect("attach");
    let threads = flood::receiver_napi_threads().expect("threads");
    assert!(!threads.is_empty(), "no threaded NAPI");
    for tid in threads {
        // SAFETY: a zeroed cpu_set_t is a valid (empty) set for the kernel to fill.
        let only_cpu_1 = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::sched_getaffinity(tid, size_of::<libc::cpu_set_t>(), &mut set) == 0
                && libc::CPU_ISSET(1, &set)
                && libc::CPU_COUNT(&set) == 1
        };
        assert!(only_cpu_1, "napi thread {tid} is not pinned to CPU 1 alone");
    }
    link.detach(loaded_xdp(&mut bare.ebpf, PROG_XDP_DROP).expect("program"))
        .expect("detach");
}

#[test]
fn nft_drop_rule_counts_the_flood() {
    if !is_root() {
        eprintln!("skipping: needs root for namespaces, XDP and BPF_PROG_TEST_RUN");
        return;
    }
    if !flood::have_nft() {
        eprintln!("skipping: nft is not installed (`cargo xtask setup --bench` installs it)");
        return;
    }
    let (topo, gen_dp) = setup("xfn");
    let nft = NftDrop::install(&topo).unwrap_or_else(|e| panic!("{e}"));
    let mut pass = Loaded::load();
    let received = flood_into(&topo, &gen_dp, &mut pass, PROG_XDP_PASS);
    assert_eq!(nft.dropped().expect("nft counter"), received);
}

/// The floor case (`lb_xdp_parse_drop`) drops what `lb_xdp` parses as TCP/UDP (the flood's
/// SYN included) and passes the rest, so its figure is the cost of reading real headers.
#[test]
fn parse_drop_floor_drops_tcp_udp_and_passes_the_rest() {
    if !is_root() {
        eprintln!("skipping: needs root for BPF_PROG_TEST_RUN");
        return;
    }
    let mut dp = Loaded::load();
    dp.load_xdp(PROG_XDP_PARSE_DROP);
    let run = |frame: &[u8]| {
        dp.run_xdp(PROG_XDP_PARSE_DROP, frame, 1)
            .expect("test run")
            .0
    };
    const DROP: u32 = 1;
    const PASS: u32 = 2;
    assert_eq!(run(&flood::syn_frame()), DROP, "the flood frame");
    let tcp = PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80").build();
    assert_eq!(run(&tcp.bytes), DROP, "TCP");
    let udp = PacketBuilder::udp("[2001:db8::1]:5353", "[2001:db8::2]:53").build();
    assert_eq!(run(&udp.bytes), DROP, "UDP over IPv6");
    let arp = arp_request(
        "198.18.0.1".parse().expect("ip"),
        "198.18.0.2".parse().expect("ip"),
    );
    assert_eq!(run(&arp), PASS, "ARP");
    assert_eq!(run(&tcp.truncated(30)), PASS, "truncated IPv4 header");
}
