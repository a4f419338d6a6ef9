//! Kube mode's node set reaches steering: an update carrying the DaemonSet's node set
//! (`Update::nodes`) is applied to `NODES` by the steering thread — joiners get free slots,
//! leavers' slots are cleared, this node keeps its slot — and Maglev is republished.
//! Real maps (loaded object), no namespaces. Needs root (BPF_PROG_LOAD); skips otherwise.
use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use aya::maps::Array;
use lb_common::{EgressPort, NODE_LOCAL, NODES, NodeInfo};
use lb_userspace::{
    dataplane::{steering, sync::KernelSync},
    provider::Update,
};
use tests::{netns::is_root, wait::wait_until, xdp::Loaded};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// The IPv4 addresses in NODES slots 0..4 (None: empty slot), and which slot is local.
fn nodes(ebpf: &Mutex<aya::Ebpf>) -> (Vec<Option<IpAddr>>, Option<usize>) {
    let guard = ebpf.lock().expect("lock");
    let arr: Array<_, NodeInfo> = Array::try_from(guard.map(NODES).expect("NODES")).expect("type");
    let mut out = Vec::new();
    let mut local = None;
    for i in 0..4u32 {
        let n = arr.get(&i, 0).expect("read NODES");
        if n.flags & NODE_LOCAL != 0 {
            local = Some(i as usize);
        }
        out.push((n.v4 != [0; 4]).then(|| IpAddr::from(n.v4)));
    }
    (out, local)
}

fn update(addrs: &[&str]) -> Update {
    Update {
        nodes: Some(addrs.iter().map(|a| ip(a)).collect()),
        ..Update::default()
    }
}

#[test]
fn update_node_sets_reach_nodes_map() {
    if !is_root() {
        eprintln!("skipping: needs root for BPF_PROG_LOAD");
        return;
    }
    let ebpf = Arc::new(Mutex::new(Loaded::load().ebpf));
    // Loopback addresses only (health checks connect to them): port 9 never answers, so
    // the peers stay out of Maglev, which is beside the point (NODES holds the set).
    let handle = steering::start(
        ebpf.clone(),
        steering::Options {
            node_ip: ip("127.0.0.12"),
            peers: Vec::new(),
            port: 9,
        },
        1,
    )
    .expect("steering");
    assert_eq!(
        nodes(&ebpf),
        (vec![Some(ip("127.0.0.12")), None, None, None], Some(0))
    );
    let sync = KernelSync::new(ebpf.clone(), "ebpf-lb", Some(handle.peer_updates()));

    sync.apply(&update(&["127.0.0.11", "127.0.0.12", "127.0.0.13"]));
    let want = (
        vec![
            Some(ip("127.0.0.12")),
            Some(ip("127.0.0.11")),
            Some(ip("127.0.0.13")),
            None,
        ],
        Some(0),
    );
    wait_until(Duration::from_secs(5), || {
        (nodes(&ebpf) == want).then_some(())
    })
    .unwrap_or_else(|| panic!("joiners in NODES: {:?}", nodes(&ebpf)));

    sync.apply(&update(&["127.0.0.12", "127.0.0.13"]));
    let want = (
        vec![Some(ip("127.0.0.12")), None, Some(ip("127.0.0.13")), None],
        Some(0),
    );
    wait_until(Duration::from_secs(5), || {
        (nodes(&ebpf) == want).then_some(())
    })
    .unwrap_or_else(|| panic!("leaver cleared, others kept: {:?}", nodes(&ebpf)));

    // An update without a node set (files mode) leaves the set alone.
    sync.apply(&Update::default());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(nodes(&ebpf), want);
    drop(handle);
}

/// IPv6 peers: their MAC comes from the kernel's IPv6 neighbour table (a netlink dump; there
/// is no text file for it), read inside a namespace of the test's own.
#[test]
fn ipv6_neighbour_macs_from_netlink() {
    if !is_root() {
        eprintln!("skipping: needs root for network namespaces");
        return;
    }
    let ns = tests::netns::Netns::create(&format!("lbnb{}", std::process::id())).expect("netns");
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"])
        .expect("veth");
    ns.ip(&["link", "set", "d0", "up"]).expect("up");
    for (addr, mac, nud) in [
        ("2001:2::11", "02:00:00:00:00:11", "permanent"),
        ("2001:2::12", "02:00:00:00:00:12", "stale"),
        ("198.18.9.11", "02:00:00:00:00:13", "permanent"),
    ] {
        ns.ip(&["neigh", "add", addr, "lladdr", mac, "dev", "d0", "nud", nud])
            .expect("neigh add");
    }
    let file = std::fs::File::open(ns.path()).expect("open netns");
    let got = std::thread::spawn(move || {
        use std::os::fd::AsRawFd as _;
        // SAFETY: setns on this short-lived thread only; the fd is valid.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        ["2001:2::11", "2001:2::12", "2001:2::99", "198.18.9.11"]
            .map(|a| lb_userspace::dataplane::neighbour::mac_of(ip(a)))
    })
    .join()
    .expect("lookup thread");
    assert_eq!(
        got,
        [
            Some([2, 0, 0, 0, 0, 0x11]),
            Some([2, 0, 0, 0, 0, 0x12]),
            None,
            Some([2, 0, 0, 0, 0, 0x13]),
        ]
    );
}

/// Where frames to a peer go, from the kernel's routes (inside a namespace of the test's
/// own): a peer on the link is reached at its own MAC; a peer behind a gateway at the
/// gateway's; and when the route leaves by another interface than the XDP one, the egress
/// port names that interface and its MAC (the peer is redirected there).
#[test]
fn next_hops_follow_the_kernels_routes() {
    if !is_root() {
        eprintln!("skipping: needs root for network namespaces");
        return;
    }
    let ns = tests::netns::Netns::create(&format!("lbnh{}", std::process::id())).expect("netns");
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"])
        .expect("veth");
    ns.ip(&["link", "set", "d0", "address", "02:00:00:00:00:d0"])
        .expect("mac");
    for dev in ["d0", "d1", "lo"] {
        ns.ip(&["link", "set", dev, "up"]).expect("up");
    }
    ns.ip(&["addr", "add", "198.18.9.1/24", "dev", "d0"])
        .expect("addr");
    ns.ip(&["route", "add", "198.19.5.0/24", "via", "198.18.9.254"])
        .expect("route");
    for (addr, mac) in [
        ("198.18.9.11", "02:00:00:00:00:11"),
        ("198.18.9.254", "02:00:00:00:00:fe"),
    ] {
        ns.ip(&[
            "neigh",
            "add",
            addr,
            "lladdr",
            mac,
            "dev",
            "d0",
            "nud",
            "permanent",
        ])
        .expect("neigh add");
    }
    let file = std::fs::File::open(ns.path()).expect("open netns");
    let (d0, on_link, routed, elsewhere, unreachable) = std::thread::spawn(move || {
        use std::os::fd::AsRawFd as _;
        // SAFETY: setns on this short-lived thread only; the fd is valid.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        // SAFETY: a NUL-terminated name.
        let d0 = unsafe { libc::if_nametoindex(c"d0".as_ptr()) };
        let lo = 1;
        (
            d0,
            steering::next_hop(ip("198.18.9.11"), d0),
            steering::next_hop(ip("198.19.5.7"), d0),
            steering::next_hop(ip("198.19.5.7"), lo),
            steering::next_hop(ip("198.20.0.1"), d0),
        )
    })
    .join()
    .expect("lookup thread");
    assert_eq!(on_link, (Some([2, 0, 0, 0, 0, 0x11]), None));
    assert_eq!(
        routed,
        (Some([2, 0, 0, 0, 0, 0xfe]), None),
        "the gateway's MAC"
    );
    assert_eq!(
        elsewhere,
        (
            Some([2, 0, 0, 0, 0, 0xfe]),
            Some(EgressPort {
                ifindex: d0,
                src_mac: [2, 0, 0, 0, 0, 0xd0],
                _pad: 0
            })
        ),
        "the route leaves by d0, XDP runs elsewhere: redirected to d0 from d0's MAC"
    );
    assert_eq!(unreachable.1, None, "no route: no egress port");
}

/// `lb_tc_decap` on the interface holding `--node-ip` follows that address across
/// restarts: attached there (its own pinned link) when it is not `--iface`, moved when the
/// address moves to another interface, and removed when it moves onto `--iface`; TCX
/// queries of each interface say where the program runs.
#[test]
fn node_address_decap_link_follows_the_address() {
    use aya::programs::{SchedClassifier, TcAttachType};
    use lb_userspace::dataplane::{Dataplane, XdpAttachMode, node_link_pin};

    if !is_root() {
        eprintln!("skipping: needs root for network namespaces and BPF");
        return;
    }
    let pid = std::process::id();
    let ns = tests::netns::Netns::create(&format!("lbnl{pid}")).expect("netns");
    for (a, b, addr) in [
        ("x0", "x1", "198.18.7.1/24"),
        ("y0", "y1", "198.19.7.1/24"),
        ("z0", "z1", "198.19.8.1/24"),
    ] {
        ns.ip(&["link", "add", a, "type", "veth", "peer", "name", b])
            .expect("veth");
        ns.ip(&["addr", "add", addr, "dev", a]).expect("addr");
        for dev in [a, b] {
            ns.ip(&["link", "set", dev, "up"]).expect("up");
        }
    }
    let pins =
        tests::topology::BpffsDir(std::path::PathBuf::from(format!("/sys/fs/bpf/lbnl-{pid}")));
    let dir = pins.0.clone();
    let file = std::fs::File::open(ns.path()).expect("open netns");
    let steps = std::thread::spawn(move || {
        use std::os::fd::AsRawFd as _;
        // SAFETY: setns on this short-lived thread only; the fd is valid.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let decap_on = |iface: &str| -> bool {
            SchedClassifier::query_tcx(iface, TcAttachType::Ingress)
                .expect("tcx query")
                .1
                .iter()
                .any(|p| p.name_as_str() == Some("lb_tc_decap"))
        };
        let mut seen = Vec::new();
        for node_ip in ["198.19.7.1", "198.19.8.1", "198.18.7.1"] {
            let mut dp = Dataplane::attach("x0", &dir, XdpAttachMode::Skb).expect("attach");
            dp.start_steering(steering::Options {
                node_ip: ip(node_ip),
                peers: Vec::new(),
                port: 9,
            })
            .expect("steering");
            seen.push((
                node_ip,
                ["x0", "y0", "z0"].map(decap_on),
                ["y0", "z0"].map(|i| dir.join(node_link_pin(i)).exists()),
            ));
            // As a restart does: programs, links and maps stay for the next daemon.
            dp.release();
        }
        // The last run's links are unpinned: nothing stays attached.
        let dp = Dataplane::attach("x0", &dir, XdpAttachMode::Skb).expect("attach");
        dp.detach().expect("detach");
        seen.push(("detached", ["x0", "y0", "z0"].map(decap_on), [false; 2]));
        seen
    })
    .join()
    .expect("dataplane thread");
    assert_eq!(
        steps,
        vec![
            ("198.19.7.1", [true, true, false], [true, false]),
            ("198.19.8.1", [true, false, true], [false, true]),
            ("198.18.7.1", [true, false, false], [false, false]),
            ("detached", [false, false, false], [false, false]),
        ]
    );
    drop(pins);
}
