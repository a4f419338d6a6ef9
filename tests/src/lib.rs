//! Test harness of ebpf-lb: network namespaces, processes and topologies shared by the
//! end-to-end tests and `cargo xtask demo`, plus a packet builder for XDP fixtures.
pub mod fake_apiserver;
pub mod flood;
pub mod l7;
pub mod local;
pub mod netns;
pub mod packet;
pub mod procs;
pub mod topology;
pub mod twonode;
pub mod wait;
pub mod xdp;
