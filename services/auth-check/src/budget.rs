//! The failure budget per key id. Key ids are public, so anyone can build a well-formed key for a
//! real id; each failed attempt would cost a store lookup and an argon2 run (≈20 ms of CPU). Every
//! uncached attempt takes a token first (and gives it back if the key verifies), so the number of
//! failing attempts that reach the store or argon2 is bounded per id, however many arrive at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use stanna_keys::KeyId;

/// Tokens a key id starts with (attempts allowed at once).
pub const BURST: f64 = 5.0;
/// Tokens regained per second.
pub const PER_SECOND: f64 = 1.0;
/// Ids tracked at most; full, the oldest-refilled buckets (full ones) are dropped first.
const CAPACITY: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: SystemTime,
}

/// Token buckets by key id.
#[derive(Default)]
pub(crate) struct FailureBudget {
    buckets: Mutex<HashMap<KeyId, Bucket>>,
}

impl FailureBudget {
    /// Takes a token for an attempt on `id`; `Err(retry_after)` when the budget is spent.
    pub fn take(&self, id: KeyId, now: SystemTime) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= CAPACITY && !buckets.contains_key(&id) {
            // Full buckets carry no information; if made-up ids keep the map full of spent ones,
            // start over rather than scan the map on every request (each id then gets at most
            // one more burst).
            buckets.retain(|_, b| refill(b, now) < BURST);
            if buckets.len() >= CAPACITY * 9 / 10 {
                buckets.clear();
            }
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

    /// Gives back the token of an attempt that verified.
    pub fn refund(&self, id: KeyId) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = buckets.get_mut(&id) {
            bucket.tokens = (bucket.tokens + 1.0).min(BURST);
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
    }
}
