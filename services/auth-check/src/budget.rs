//! The failure budget per key id. Key ids are public, so anyone can build a well-formed key for a
//! real id; each failed attempt would cost a store lookup and an argon2 run (≈20 ms of CPU). Every
//! uncached attempt takes a token first (and gives it back if the key verifies), so the number of
//! failing attempts that reach the store or argon2 is bounded per id, however many arrive at once.
//!
//! Only ids that exist reach it (made-up ones are refused by the known set first, `known_ids.rs`),
//! so the map is bounded by the keys there are. Full buckets carry no information and are swept
//! when the map grows; a spent bucket — an id under attack — is never forgotten early.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use stanna_keys::KeyId;

/// Tokens a key id starts with (attempts allowed at once).
pub const BURST: f64 = 5.0;
/// Tokens regained per second.
pub const PER_SECOND: f64 = 1.0;
/// Buckets kept before the first sweep of full ones; later sweeps wait until the map has doubled
/// since the last, so sweeping costs O(1) amortised per new id.
const SWEEP_AT: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: SystemTime,
}

/// Token buckets by key id.
#[derive(Default)]
pub(crate) struct FailureBudget {
    buckets: Mutex<Buckets>,
}

#[derive(Default)]
struct Buckets {
    map: HashMap<KeyId, Bucket>,
    /// The size at which full buckets are next swept (0: [`SWEEP_AT`]).
    sweep_at: usize,
}

impl FailureBudget {
    /// Takes a token for an attempt on `id`; `Err(retry_after)` when the budget is spent.
    pub fn take(&self, id: KeyId, now: SystemTime) -> Result<(), Duration> {
        let mut guard = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let Buckets {
            map: buckets,
            sweep_at,
        } = &mut *guard;
        if buckets.len() >= (*sweep_at).max(SWEEP_AT) && !buckets.contains_key(&id) {
            buckets.retain(|_, b| refill(b, now) < BURST);
            *sweep_at = buckets.len() * 2;
        }
        let bucket = buckets.entry(id).or_insert(Bucket {
            tokens: BURST,
            at: now,
        });
        let tokens = refill(bucket, now);
        bucket.at = now;
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            Ok(())
        } else {
            bucket.tokens = tokens;
            Err(Duration::from_secs_f64((1.0 - tokens) / PER_SECOND).max(Duration::from_millis(1)))
        }
    }

    /// Gives back the token of an attempt that verified. A bucket full again is dropped (a full
    /// bucket and no bucket are the same budget), so a key that verifies holds no bucket: 40-odd
    /// bytes per cached key otherwise, until a sweep.
    pub fn refund(&self, id: KeyId) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = buckets.map.get_mut(&id) {
            bucket.tokens = (bucket.tokens + 1.0).min(BURST);
            if bucket.tokens >= BURST {
                buckets.map.remove(&id);
            }
        }
    }
}

fn refill(bucket: &Bucket, now: SystemTime) -> f64 {
    let elapsed = now
        .duration_since(bucket.at)
        .unwrap_or_default()
        .as_secs_f64();
    (bucket.tokens + elapsed * PER_SECOND).min(BURST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_spent_then_refills() {
        let budget = FailureBudget::default();
        let id = KeyId::parse("AbCdEf012345").unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for _ in 0..5 {
            budget.take(id, t0).expect("within the burst");
        }
        assert_eq!(budget.take(id, t0), Err(Duration::from_secs(1)));
        assert!(
            budget.take(id, t0 + Duration::from_secs(1)).is_ok(),
            "one token per second"
        );
        budget.refund(id);
        assert!(
            budget.take(id, t0 + Duration::from_secs(1)).is_ok(),
            "a refund gives the token back"
        );
        // A verified attempt on an id with its whole budget leaves no bucket behind.
        let fresh = KeyId::parse("FreshKeyId00").unwrap();
        budget.take(fresh, t0).unwrap();
        budget.refund(fresh);
        assert!(!budget.buckets.lock().unwrap().map.contains_key(&fresh));
        assert!(
            budget.buckets.lock().unwrap().map.contains_key(&id),
            "a spent one stays"
        );
    }

    /// Past the sweep size, full buckets go and spent ones stay: an id under attack keeps its
    /// spent budget however many other ids came and went.
    #[test]
    fn a_sweep_drops_full_buckets_and_keeps_the_ids_under_attack() {
        let budget = FailureBudget::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let id = |n: usize| KeyId::parse(&format!("{n:0>12}")).unwrap();
        for n in 0..SWEEP_AT - 1 {
            budget.take(id(n), t0).unwrap();
        }
        let t1 = t0 + Duration::from_secs(10);
        let attacked = KeyId::parse("AttackedId00").unwrap();
        for _ in 0..5 {
            budget.take(attacked, t1).unwrap();
        }
        assert_eq!(budget.buckets.lock().unwrap().map.len(), SWEEP_AT);
        budget
            .take(KeyId::parse("ZZZZZZZZZZZZ").unwrap(), t1)
            .unwrap();
        assert_eq!(
            budget.buckets.lock().unwrap().map.len(),
            2,
            "the refilled buckets were swept, the spent one and the new one kept"
        );
        assert!(
            budget.take(attacked, t1).is_err(),
            "the attacked id's budget is still spent"
        );
    }
}
