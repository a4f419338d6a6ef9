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
use lb_common::{NODE_LOCAL, NODES, NodeInfo};
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
