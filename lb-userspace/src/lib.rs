//! ebpf-lb daemon library: providers feed a pure translation whose route table the proxy
//! serves and whose dataplane configuration is written into the pinned BPF maps.
pub mod admin;
pub mod balance;
pub mod cli;
pub mod daemon;
pub mod dataplane;
pub mod diagnostics;
pub mod metrics;
pub mod policy;
pub mod provider;
pub mod proxy;
pub mod publish;
pub mod routes;
pub mod shutdown;
pub mod tls;
pub mod translate;
pub mod upstream;
