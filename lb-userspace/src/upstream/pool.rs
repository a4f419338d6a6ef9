//! Per-thread pools of idle upstream connections, keyed by endpoint and protocol: no lock
//! and no cross-core traffic on the hot path. An HTTP/1.1 connection goes back to the pool
//! of the thread that finishes its response body; h2 connections are shared per thread.
use std::{cell::RefCell, collections::HashMap, net::SocketAddr};

use hyper::client::conn::{http1, http2};

use super::{RequestBody, send_timeout::SendTimeout};
use crate::translate::annotations::upstream::BackendProtocol;

/// Idle HTTP/1.1 connections kept per endpoint and thread.
const MAX_IDLE_PER_ENDPOINT: usize = 256;

type Key = (SocketAddr, BackendProtocol);

#[derive(Default)]
struct Slot {
    idle: Vec<(http1::SendRequest<RequestBody>, SendTimeout)>,
    h2: Option<(http2::SendRequest<RequestBody>, SendTimeout)>,
}

thread_local! {
    // foldhash: the keys are ours (endpoints), and SipHash showed in the per-request profile.
    static POOL: RefCell<HashMap<Key, Slot, foldhash::fast::RandomState>> =
        RefCell::new(HashMap::default());
}

/// An HTTP/1.1 connection in use by one request.
pub struct Lease {
    key: Key,
    pub(super) sender: http1::SendRequest<RequestBody>,
    /// The connection's `proxy-send-timeout`, set by the request using it.
    pub(super) send_timeout: SendTimeout,
}

impl Lease {
    pub(super) fn new(
        addr: SocketAddr,
        proto: BackendProtocol,
        sender: http1::SendRequest<RequestBody>,
        send_timeout: SendTimeout,
    ) -> Self {
        Self {
            key: (addr, proto),
            sender,
            send_timeout,
        }
    }

    /// Returns the connection to this thread's pool (its response is complete).
    pub fn release(self) {
        if self.sender.is_closed() {
            return;
        }
        POOL.with(|p| {
            let mut p = p.borrow_mut();
            let slot = p.entry(self.key).or_default();
            if slot.idle.len() < MAX_IDLE_PER_ENDPOINT {
                slot.idle.push((self.sender, self.send_timeout));
            }
        });
    }
}

/// The most recently used idle connection that is still open.
pub(super) fn checkout_h1(addr: SocketAddr, proto: BackendProtocol) -> Option<Lease> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let slot = p.get_mut(&(addr, proto))?;
        while let Some((sender, send_timeout)) = slot.idle.pop() {
            if !sender.is_closed() {
                return Some(Lease::new(addr, proto, sender, send_timeout));
            }
        }
        None
    })
}

pub(super) fn checkout_h2(
    addr: SocketAddr,
    proto: BackendProtocol,
) -> Option<(http2::SendRequest<RequestBody>, SendTimeout)> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let slot = p.get_mut(&(addr, proto))?;
        match &slot.h2 {
            Some((s, t)) if !s.is_closed() => Some((s.clone(), t.clone())),
            Some(_) => {
                slot.h2 = None;
                None
            }
            None => None,
        }
    })
}

pub(super) fn put_h2(
    addr: SocketAddr,
    proto: BackendProtocol,
    s: http2::SendRequest<RequestBody>,
    send_timeout: SendTimeout,
) {
    POOL.with(|p| p.borrow_mut().entry((addr, proto)).or_default().h2 = Some((s, send_timeout)));
}

pub(super) fn drop_h2(addr: SocketAddr, proto: BackendProtocol) {
    POOL.with(|p| {
        if let Some(slot) = p.borrow_mut().get_mut(&(addr, proto)) {
            slot.h2 = None;
        }
    });
}
