//! ebpf-lb daemon library: providers feed a pure translation whose route table the proxy
//! serves and whose dataplane configuration is written into the pinned BPF maps.
pub mod balance;
pub mod dataplane;
pub mod diagnostics;
pub mod provider;
pub mod routes;
pub mod translate;
