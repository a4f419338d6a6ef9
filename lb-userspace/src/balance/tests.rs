//! Selection: distributions, stickiness and ejection, table-driven where it fits.
use super::*;

fn eps(n: u8) -> Vec<SocketAddr> {
    (1..=n)
        .map(|i| SocketAddr::from(([198, 18, 1, i], 8080)))
        .collect()
}

fn counts(b: &Backend, strategy: impl Fn(usize) -> Strategy, rounds: usize) -> Vec<usize> {
    let mut c = vec![0; b.endpoints.len()];
    for k in 0..rounds {
        c[b.choose(strategy(k), &[]).expect("endpoint")] += 1;
    }
    c
}

#[test]
fn round_robin_visits_each_endpoint_equally() {
    let b = Backend::new("ns", "svc", "80", eps(3));
    assert_eq!(counts(&b, |_| Strategy::RoundRobin, 300), [100, 100, 100]);
    assert!(b.pick().is_some());
}

#[test]
fn no_endpoints_no_pick() {
    let b = Backend::new("ns", "svc", "80", vec![]);
    assert_eq!(b.pick(), None);
    assert_eq!(b.choose(Strategy::Ewma, &[]), None);
    assert_eq!(b.choose(Strategy::Hash(7), &[]), None);
}

#[test]
fn retries_skip_tried_endpoints() {
    let b = Backend::new("ns", "svc", "80", eps(3));
    for strategy in [Strategy::RoundRobin, Strategy::Ewma, Strategy::Hash(42)] {
        let first = b.choose(strategy, &[]).expect("first");
        let second = b.choose(strategy, &[first]).expect("second");
        let third = b.choose(strategy, &[first, second]).expect("third");
        let mut all = vec![first, second, third];
        all.sort_unstable();
        assert_eq!(all, [0, 1, 2], "{strategy:?}");
        assert_eq!(b.choose(strategy, &[0, 1, 2]), None, "{strategy:?}");
    }
}

#[test]
fn ewma_prefers_the_fast_endpoint() {
    let b = Backend::new("ns", "svc", "80", eps(3));
    for _ in 0..50 {
        b.start(0);
        b.report(0, Outcome::Success, Duration::from_millis(200));
        for i in 1..3 {
            b.start(i);
            b.report(i, Outcome::Success, Duration::from_millis(2));
        }
    }
    let c = counts(&b, |_| Strategy::Ewma, 3000);
    // Endpoint 0 is chosen only when both random picks land on it: never, as p2c picks
    // two distinct endpoints.
    assert_eq!(c[0], 0, "{c:?}");
    assert!(c[1] > 1000 && c[2] > 1000, "{c:?}");
    // Requests in flight count too: a busy fast endpoint loses to an idle one.
    for _ in 0..1000 {
        b.start(1);
    }
    let c = counts(&b, |_| Strategy::Ewma, 3000);
    assert!(c[2] > c[1], "{c:?}");
}

#[test]
fn hashing_is_sticky_spread_and_moves_little_when_an_endpoint_goes() {
    let b = Backend::new("ns", "svc", "80", eps(4));
    let keys: Vec<u64> = (0..4000u32)
        .map(|k| hash::hash_bytes(format!("client-{k}").as_bytes()))
        .collect();
    let placed: Vec<usize> = keys
        .iter()
        .map(|&k| b.choose(Strategy::Hash(k), &[]).expect("endpoint"))
        .collect();
    for (k, p) in keys.iter().zip(&placed) {
        assert_eq!(b.choose(Strategy::Hash(*k), &[]), Some(*p), "sticky");
    }
    let mut c = [0usize; 4];
    for p in &placed {
        c[*p] += 1;
    }
    assert!(c.iter().all(|&n| n > 600 && n < 1400), "spread: {c:?}");

    // Without endpoint 3, only its keys move.
    let smaller = Backend::new("ns", "svc", "80", eps(3));
    for (k, p) in keys.iter().zip(&placed) {
        if *p != 3 {
            assert_eq!(smaller.choose(Strategy::Hash(*k), &[]), Some(*p));
        }
    }
}

#[test]
fn ejection_skips_the_endpoint_and_never_ejects_the_last() {
    let b = Backend::new("ns", "svc", "80", eps(3));
    b.report(0, Outcome::ConnectFailure, Duration::ZERO);
    let c = counts(&b, |_| Strategy::RoundRobin, 100);
    assert_eq!(c[0], 0, "{c:?}");
    b.report(1, Outcome::ConnectFailure, Duration::ZERO);
    b.report(2, Outcome::ConnectFailure, Duration::ZERO);
    // 2 was the last one standing: still served.
    assert_eq!(counts(&b, |_| Strategy::RoundRobin, 10), [0, 0, 10]);
    assert_eq!(b.state[2].ejections(), 0);

    // Ordinary failures eject after 5 in a row; a success in between resets the count.
    let b = Backend::new("ns", "svc", "80", eps(2));
    for _ in 0..4 {
        b.report(0, Outcome::Failure, Duration::ZERO);
    }
    b.report(0, Outcome::Success, Duration::ZERO);
    for _ in 0..4 {
        b.report(0, Outcome::Failure, Duration::ZERO);
    }
    assert_eq!(b.state[0].ejections(), 0);
    b.report(0, Outcome::Failure, Duration::ZERO);
    assert_eq!(b.state[0].ejections(), 1);
    assert!(b.state[0].is_ejected(health::now_ms()));
}

#[test]
fn affinity_tokens_name_endpoints() {
    let b = Backend::new("ns", "svc", "80", eps(3));
    for i in 0..3 {
        let t = b.token(i).expect("token").to_owned();
        assert_eq!(t.len(), 16);
        assert_eq!(b.by_token(&t), Some(i));
    }
    assert_eq!(b.by_token("nope"), None);
    let t0 = b.token(0).expect("token").to_owned();
    b.report(0, Outcome::ConnectFailure, Duration::ZERO);
    assert_eq!(
        b.by_token(&t0),
        None,
        "ejected endpoints lose their sessions"
    );
    // Tokens are stable across rebuilt route tables.
    assert_eq!(
        Backend::new("x", "y", "1", eps(3)).token(0),
        Some(t0.as_str())
    );
}
