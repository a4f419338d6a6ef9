//! `ebpf-lb check`, `routes` and `version` output against reviewed snapshots
//! (tests/fixtures/cli/*.expected). To update after an intended change, run the command as
//! the test does (from tests/) and review the diff.
use std::{path::Path, process::Command};

fn ebpf_lb(args: &[&str]) -> (i32, String) {
    let backend = Path::new(env!("CARGO_BIN_EXE_echo-backend"));
    let bin = tests::local::ebpf_lb_bin(backend);
    let out = Command::new(bin)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "off")
        .output()
        .expect("run ebpf-lb");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn expected(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/cli")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn check_reports_every_problem_and_exits_1() {
    let (code, out) = ebpf_lb(&["check", "--manifests", "fixtures/cli/bad"]);
    assert_eq!(out, expected("bad.check.expected"));
    assert_eq!(code, 1);
}

#[test]
fn check_passes_clean_manifests() {
    let (code, out) = ebpf_lb(&["check", "--manifests", "fixtures/cli/good"]);
    assert_eq!(out, expected("good.check.expected"));
    assert_eq!(code, 0);
}

#[test]
fn routes_table_shows_backends_weights_and_annotations() {
    let (code, out) = ebpf_lb(&["routes", "--manifests", "fixtures/cli/good"]);
    assert_eq!(out, expected("good.routes.expected"));
    assert_eq!(code, 0);
}

#[test]
fn version_and_errors_for_a_person() {
    let (code, out) = ebpf_lb(&["version"]);
    assert_eq!(
        (code, out),
        (0, format!("ebpf-lb {}\n", env!("CARGO_PKG_VERSION")))
    );
    let backend = Path::new(env!("CARGO_BIN_EXE_echo-backend"));
    let out = Command::new(tests::local::ebpf_lb_bin(backend))
        .args(["check", "--manifests", "/nonexistent-dir"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read manifests directory /nonexistent-dir"),
        "{err}"
    );
}
