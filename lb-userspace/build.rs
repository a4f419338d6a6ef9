//! Embeds the eBPF object built by `cargo xtask build-ebpf` (the one way the object is
//! built; see README "Building"). The object is looked up at `$LB_EBPF_OBJECT`, else at
//! `<workspace>/target/ebpf/lb-ebpf.o`, where build-ebpf copies it.
use std::{env, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=LB_EBPF_OBJECT");
    let path = match env::var_os("LB_EBPF_OBJECT") {
        Some(p) => PathBuf::from(p),
        None => {
            let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
            manifest
                .join("..")
                .join("target")
                .join("ebpf")
                .join("lb-ebpf.o")
        }
    };
    println!("cargo:rerun-if-changed={}", path.display());
    if !path.is_file() {
        eprintln!(
            "error: the eBPF object {} does not exist.\n\
             Build it first with `cargo xtask build-ebpf` (or `cargo xtask setup` on a new \
             machine), or point LB_EBPF_OBJECT at a built lb-ebpf object.",
            path.display()
        );
        std::process::exit(1);
    }
    println!("cargo:rustc-env=LB_EBPF_OBJECT_PATH={}", path.display());
}
