//! Pinned maps carry BTF, so `bpftool map dump` shows field names rather than hex; every
//! map of the interface contract is in the object under its contract name.
//!
//! Needs root (BPF_PROG_LOAD, bpffs); skips with a message otherwise.
use std::{path::PathBuf, process::Command};

use lb_common::{PINNED_MAPS, PROG_XDP, PROTO_TCP, STATS, VIPS, VipKey};
use tests::{packet::PacketBuilder, topology::BpffsDir, xdp::Loaded};

fn bpftool_dump(pin: &std::path::Path) -> String {
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

#[test]
fn pinned_maps_dump_with_btf_field_names() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: needs root for BPF_PROG_LOAD and bpffs");
        return;
    }
    let mut dp = Loaded::load();
    dp.set_vips(&[VipKey::v4([198, 18, 0, 210], 80, PROTO_TCP)]);
    let pins = BpffsDir(PathBuf::from(format!(
        "/sys/fs/bpf/ebpf-lb-pins-{}",
        std::process::id()
    )));
    std::fs::create_dir_all(&pins.0).expect("bpffs dir (is bpffs mounted on /sys/fs/bpf?)");
    for name in PINNED_MAPS {
        dp.ebpf
            .map(name)
            .unwrap_or_else(|| panic!("{name} in the object"))
            .pin(pins.0.join(name))
            .unwrap_or_else(|e| panic!("pin {name}: {e}"));
    }
    let frame = PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80").build();
    dp.run_xdp(PROG_XDP, &frame.bytes, 1).expect("test run");

    let vips = bpftool_dump(&pins.0.join(VIPS));
    for field in [
        "\"addr\"",
        "\"port\": 80",
        "\"proto\": 6",
        "\"family\": 4",
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
    let config = bpftool_dump(&pins.0.join("CONFIG"));
    assert!(
        config.contains("\"maglev_active\"") && config.contains("\"node_v4\""),
        "{config}"
    );
    let flows = bpftool_dump(&pins.0.join("FLOWS"));
    assert!(
        flows.contains("\"sport\": 40000") && flows.contains("\"node\""),
        "{flows}"
    );
}
