//! Failed authentications per client address (`STANNA_UNAUTHENTICATED_RATE_LIMIT`): each 401 a
//! Verify answers takes a token from the address's bucket; an address with none left is answered
//! 429 without a Verify, so one address cannot make the gateway and auth-check work for a flood
//! of made-up keys. IPv6 addresses count per /64 (one host owns a whole /64).
//!
//! The address is the TCP peer's: behind a load balancer that does not keep it, every client
//! shares the balancer's bucket — raise or switch off the limit there (README).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use stanna_keys::WindowLimit;

/// Buckets kept before the first sweep of full ones; later sweeps wait until the map has
/// doubled, so sweeping costs O(1) amortised per new address.
const SWEEP_AT: usize = 10_000;
/// Addresses tracked at most: past it (a flood from more addresses than this within one
/// period) the map starts over rather than grow.
const MAX_TRACKED: usize = 1_000_000;

/// The per-address failure buckets.
pub struct FailedAuthLimiter {
    limit: Option<WindowLimit>,
    state: Mutex<State>,
    /// Addresses tracked (written under the lock): while none is, a check takes no lock — the
    /// proxied path of a system without failures costs one atomic load.
    tracked: AtomicUsize,
}

#[derive(Default)]
struct State {
    buckets: HashMap<u128, Bucket>,
    sweep_at: usize,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl FailedAuthLimiter {
    /// A limiter allowing `limit` failures per address (`None`: off).
    pub fn new(limit: Option<WindowLimit>) -> Self {
        Self {
            limit,
            state: Mutex::new(State::default()),
            tracked: AtomicUsize::new(0),
        }
    }

    /// `Err(retry_after)` when `ip` has no failures left at `now()` (read only when some address
    /// is tracked).
    pub fn check(&self, ip: IpAddr, now: impl FnOnce() -> Instant) -> Result<(), Duration> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        if self.tracked.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let now = now();
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.buckets.get(&address_key(ip)) {
            Some(bucket) if refill(bucket, limit, now) < 1.0 => {
                let missing = 1.0 - refill(bucket, limit, now);
                Err(Duration::from_secs_f64(missing / rate(limit)).max(Duration::from_secs(1)))
            }
            _ => Ok(()),
        }
    }

    /// Takes a token from `ip`'s bucket for a failed authentication at `now`.
    pub fn charge(&self, ip: IpAddr, now: Instant) {
        let Some(limit) = self.limit else {
            return;
        };
        let key = address_key(ip);
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let State { buckets, sweep_at } = &mut *guard;
        if buckets.len() >= (*sweep_at).max(SWEEP_AT) && !buckets.contains_key(&key) {
            buckets.retain(|_, b| refill(b, limit, now) < f64::from(limit.limit()));
            if buckets.len() >= MAX_TRACKED {
                tracing::warn!(
                    addresses = buckets.len(),
                    "failed authentications from too many addresses to track; starting over"
                );
                buckets.clear();
            }
            *sweep_at = buckets.len() * 2;
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: f64::from(limit.limit()),
            at: now,
        });
        bucket.tokens = (refill(bucket, limit, now) - 1.0).max(0.0);
        bucket.at = now;
        self.tracked.store(buckets.len(), Ordering::Relaxed);
    }
}

/// IPv4 as itself (below 2³²), IPv6 by its /64 prefix with bit 32 set, so no IPv6 prefix — not
/// even `::/64` — shares a key with an IPv4 address; IPv4-mapped IPv6 counts as its IPv4 address.
fn address_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4)),
            None => u128::from(v6) >> 64 << 64 | 1 << 32,
        },
    }
}

fn rate(limit: WindowLimit) -> f64 {
    f64::from(limit.limit()) / limit.period().as_secs_f64()
}

fn refill(bucket: &Bucket, limit: WindowLimit, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.tokens + elapsed * rate(limit)).min(f64::from(limit.limit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_after_its_failures_and_refills_over_the_period() {
        let limiter = FailedAuthLimiter::new(Some("3/60s".parse().unwrap()));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(ip, || t0).is_ok());
            limiter.charge(ip, t0);
        }
        let retry = limiter.check(ip, || t0).unwrap_err();
        assert_eq!(retry, Duration::from_secs(20), "one token per 20 s");
        assert!(
            limiter.check(other, || t0).is_ok(),
            "other addresses unaffected"
        );
        assert!(limiter.check(ip, || t0 + Duration::from_secs(20)).is_ok());
    }

    #[test]
    fn ipv6_counts_per_64_and_off_counts_nothing() {
        let limiter = FailedAuthLimiter::new(Some("1/60s".parse().unwrap()));
        let t0 = Instant::now();
        limiter.charge("2001:db8:1:2::1".parse().unwrap(), t0);
        assert!(
            limiter
                .check("2001:db8:1:2::ffff".parse().unwrap(), || t0)
                .is_err()
        );
        assert!(
            limiter
                .check("2001:db8:1:3::1".parse().unwrap(), || t0)
                .is_ok()
        );
        let off = FailedAuthLimiter::new(None);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..1000 {
            off.charge(ip, t0);
        }
        assert!(off.check(ip, || t0).is_ok());
    }
}
