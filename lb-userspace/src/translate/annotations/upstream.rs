//! Upstream annotations: how requests reach the backend (protocol, balancing, timeouts,
//! retries, body limits). Implemented by the proxy (`proxy/`, `upstream/`, `balance/`).
use super::Reader;

/// What the upstream annotations ask for. `Default` is ingress-nginx's default behaviour.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UpstreamPolicy {}

pub fn parse(_reader: &Reader<'_>) -> UpstreamPolicy {
    UpstreamPolicy {}
}
