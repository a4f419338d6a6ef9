//! L7 rate limits per Ingress per client address (`limit-rps`/`-rpm` token buckets with
//! `limit-burst-multiplier`, `limit-connections` concurrency). State lives outside the route
//! table, keyed by Ingress, so it survives route-table swaps. Memory is bounded: idle
//! clients are forgotten when a limiter grows past `MAX_CLIENTS`.
use std::{
    collections::HashMap,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use hyper::body::{Body, Frame, SizeHint};

use crate::{routes::IngressRef, translate::annotations::ratelimit::RateLimitPolicy};

/// Clients tracked per Ingress before idle ones are evicted.
pub const MAX_CLIENTS: usize = 65_536;
/// Consecutive rejections after which a client is reported as abusive (XDP penalty box).
pub const ABUSE_STREAK: u32 = 20;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    streak: u32,
}

#[derive(Debug, Default)]
struct Limiter {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    conns: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct Limited {
    /// The client has been refused `ABUSE_STREAK` times in a row.
    pub abusive: bool,
    /// Over the connection limit (`limit-connections`) rather than the request rate.
    pub connections: bool,
}

/// Holds one of a client's `limit-connections` slots until dropped.
#[derive(Debug)]
pub struct ConnSlot {
    conns: Arc<Mutex<HashMap<IpAddr, u32>>>,
    ip: IpAddr,
}

impl ConnSlot {
    /// `body` holding this slot until it ends or is dropped: a streamed response (SSE, token
    /// streaming) is in flight for as long as it streams, as nginx's `limit_conn` counts a
    /// request until it is finished, not until its response head.
    pub fn hold<B>(self, body: B) -> Holding<B> {
        Holding {
            body,
            slot: Some(self),
        }
    }
}

/// A response body holding a [`ConnSlot`] (see [`ConnSlot::hold`]).
pub struct Holding<B> {
    body: B,
    slot: Option<ConnSlot>,
}

impl<B: Body + Unpin> Body for Holding<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = polled {
            self.slot = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let Ok(mut c) = self.conns.lock() else { return };
        if let Some(n) = c.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.remove(&self.ip);
            }
        }
    }
}

/// Every Ingress's limiter.
#[derive(Debug, Default)]
pub struct RateLimiters {
    limiters: Mutex<HashMap<IngressRef, Arc<Limiter>>>,
}

impl RateLimiters {
    fn limiter(&self, ingress: &IngressRef) -> Option<Arc<Limiter>> {
        let mut map = self.limiters.lock().ok()?;
        Some(map.entry(ingress.clone()).or_default().clone())
    }

    /// Admits or refuses a request from `ip` under `policy`. A `ConnSlot` is returned when
    /// `limit-connections` is set and must live as long as the request.
    pub fn admit(
        &self,
        ingress: &IngressRef,
        policy: &RateLimitPolicy,
        ip: IpAddr,
        now: Instant,
    ) -> Result<Option<ConnSlot>, Limited> {
        if policy.whitelist.iter().any(|n| n.contains(&ip)) {
            return Ok(None);
        }
        let Some(limiter) = self.limiter(ingress) else {
            return Ok(None);
        };
        if let Some(rate) = policy.rate_per_sec {
            let Ok(mut buckets) = limiter.buckets.lock() else {
                return Ok(None);
            };
            if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&ip) {
                evict_idle(&mut buckets, now, rate, policy.burst);
            }
            let b = buckets.entry(ip).or_insert(Bucket {
                tokens: policy.burst,
                last: now,
                streak: 0,
            });
            let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
            b.tokens = (b.tokens + elapsed * rate).min(policy.burst);
            b.last = now;
            if b.tokens < 1.0 {
                b.streak = b.streak.saturating_add(1);
                return Err(Limited {
                    abusive: b.streak >= ABUSE_STREAK,
                    connections: false,
                });
            }
            b.tokens -= 1.0;
            b.streak = 0;
        }
        let Some(max) = policy.connections else {
            return Ok(None);
        };
        let Ok(mut conns) = limiter.conns.lock() else {
            return Ok(None);
        };
        let n = conns.entry(ip).or_insert(0);
        if *n >= max {
            return Err(Limited {
                abusive: false,
                connections: true,
            });
        }
        *n += 1;
        Ok(Some(ConnSlot {
            conns: limiter.conns.clone(),
            ip,
        }))
    }
}

/// Forgets clients whose bucket has been full for a while (they carry no state).
fn evict_idle(buckets: &mut HashMap<IpAddr, Bucket>, now: Instant, rate: f64, burst: f64) {
    let refill = Duration::from_secs_f64((burst / rate).clamp(1.0, 3600.0));
    buckets.retain(|_, b| now.saturating_duration_since(b.last) < refill);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingress() -> IngressRef {
        IngressRef {
            namespace: "ns".into(),
            name: "i".into(),
        }
    }

    fn policy(rate: f64, burst: f64, conns: Option<u32>) -> RateLimitPolicy {
        RateLimitPolicy {
            rate_per_sec: Some(rate),
            burst,
            connections: conns,
            whitelist: Vec::new(),
        }
    }

    #[test]
    fn whitelisted_sources_are_never_limited() {
        let l = RateLimiters::default();
        let ing = ingress();
        let p = RateLimitPolicy {
            whitelist: vec!["198.18.0.0/30".parse().expect("cidr")],
            ..policy(1.0, 1.0, Some(1))
        };
        let t0 = Instant::now();
        let inside: IpAddr = "198.18.0.2".parse().expect("ip");
        let outside: IpAddr = "198.18.0.9".parse().expect("ip");
        for _ in 0..10 {
            let admitted = l.admit(&ing, &p, inside, t0);
            assert!(matches!(admitted, Ok(None)), "no slot taken either");
        }
        let first = l.admit(&ing, &p, outside, t0);
        assert!(first.is_ok());
        assert!(l.admit(&ing, &p, outside, t0).is_err());
    }

    #[test]
    fn bucket_refills_at_the_rate() {
        let l = RateLimiters::default();
        let ing = ingress();
        let ip: IpAddr = "198.18.0.1".parse().expect("ip");
        let other: IpAddr = "198.18.0.2".parse().expect("ip");
        let p = policy(10.0, 5.0, None);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(l.admit(&ing, &p, ip, t0).is_ok());
        }
        assert!(l.admit(&ing, &p, ip, t0).is_err(), "burst spent");
        assert!(
            l.admit(&ing, &p, other, t0).is_ok(),
            "other clients unaffected"
        );
        assert!(
            l.admit(&ing, &p, ip, t0 + Duration::from_millis(100))
                .is_ok(),
            "one token per 100 ms"
        );
        assert!(
            l.admit(&ing, &p, ip, t0 + Duration::from_millis(100))
                .is_err()
        );
    }

    #[test]
    fn abusive_after_a_streak_and_connection_slots() {
        let l = RateLimiters::default();
        let ing = ingress();
        let ip: IpAddr = "198.18.0.1".parse().expect("ip");
        let t0 = Instant::now();
        let p = policy(1.0, 1.0, None);
        assert!(l.admit(&ing, &p, ip, t0).is_ok());
        let mut last = None;
        for _ in 0..ABUSE_STREAK {
            last = l.admit(&ing, &p, ip, t0).err();
        }
        assert_eq!(
            last,
            Some(Limited {
                abusive: true,
                connections: false
            })
        );

        let p = RateLimitPolicy {
            rate_per_sec: None,
            burst: 0.0,
            connections: Some(2),
            whitelist: Vec::new(),
        };
        let a = l.admit(&ing, &p, ip, t0).expect("slot 1");
        let _b = l.admit(&ing, &p, ip, t0).expect("slot 2");
        assert!(l.admit(&ing, &p, ip, t0).is_err());
        drop(a);
        assert!(
            l.admit(&ing, &p, ip, t0).is_ok(),
            "a freed slot is reusable"
        );
    }
}
