//! Usage and last-used times: counted in memory on every Verify of a known key (one map update
//! under a sharded lock, the same cost last-used alone had), written back once per flush interval
//! in multi-row statements ([`stanna_store::KeyStore::record_usage`]), so a key used 10 000 times
//! a second costs one row per hour and one last-used write per interval.
//!
//! Only keys whose state was found are counted (an id nobody created never reaches here, and
//! the store drops rows of ids that do not exist), so guessing ids cannot grow the table.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use stanna_keys::KeyId;
use stanna_store::{KeyStore, Outcome, PartialWrite, UsageCounts, UsageRow, hour_of};

/// Shards of the pending map: every Verify updates it, so one lock would be a point of
/// contention between all the runtime's threads.
const SHARDS: usize = 16;

/// One key's pending counts: the current hour's, and its latest admitted use.
#[derive(Debug, Clone, Copy)]
struct Pending {
    hour: i64,
    counts: UsageCounts,
    last_used: Option<SystemTime>,
}

/// One shard: the pending keys, and the counts of earlier hours moved aside when a key's
/// requests crossed an hour boundary between two flushes.
#[derive(Debug, Default)]
struct Shard {
    pending: HashMap<KeyId, Pending>,
    earlier: Vec<UsageRow>,
}

/// What a flush takes out: usage rows (one per key and hour) and last-used times (one per key).
#[derive(Debug, Default)]
pub(crate) struct Drained {
    rows: Vec<UsageRow>,
    last_used: Vec<(KeyId, SystemTime)>,
}

/// Counts and uses not yet written.
pub(crate) struct Usage {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    /// Last-used times written so far (for metrics and tests).
    pub last_used_written: AtomicU64,
    /// Usage rows written so far.
    pub rows_written: AtomicU64,
}

impl Default for Usage {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            last_used_written: AtomicU64::new(0),
            rows_written: AtomicU64::new(0),
        }
    }
}

impl Usage {
    /// Counts one request of `id` at `at` with `outcome`; an admitted one is also a use.
    pub fn record(&self, id: KeyId, outcome: Outcome, at: SystemTime) {
        let hour = hour_of(at);
        let shard = &self.shards[self.hasher.hash_one(id) as usize % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        let Shard { pending, earlier } = &mut *shard;
        let entry = pending.entry(id).or_insert(Pending {
            hour,
            counts: UsageCounts::default(),
            last_used: None,
        });
        if entry.hour != hour {
            if !entry.counts.is_empty() {
                earlier.push(UsageRow {
                    key_id: id,
                    hour: entry.hour,
                    counts: entry.counts,
                });
            }
            entry.hour = hour;
            entry.counts = UsageCounts::default();
        }
        let slot = &mut entry.counts.by_outcome[outcome as usize];
        *slot = slot.saturating_add(1);
        if outcome == Outcome::Allowed && entry.last_used.is_none_or(|t| t < at) {
            entry.last_used = Some(at);
        }
    }

    /// Takes everything pending, merged so each (key, hour) and each key's use appears once.
    fn drain(&self) -> Drained {
        let mut rows: HashMap<(KeyId, i64), UsageCounts> = HashMap::new();
        let mut last_used = Vec::new();
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for row in shard.earlier.drain(..) {
                rows.entry((row.key_id, row.hour))
                    .or_default()
                    .add(&row.counts);
            }
            // Taken, not drained: the map's buckets go with it (a drained map keeps its capacity,
            // about 100 bytes per key used in the busiest interval, for good).
            for (id, p) in std::mem::take(&mut shard.pending) {
                if !p.counts.is_empty() {
                    rows.entry((id, p.hour)).or_default().add(&p.counts);
                }
                if let Some(at) = p.last_used {
                    last_used.push((id, at));
                }
            }
        }
        let mut rows: Vec<UsageRow> = rows
            .into_iter()
            .map(|((key_id, hour), counts)| UsageRow {
                key_id,
                hour,
                counts,
            })
            .collect();
        // One order for every auth-check: two flushes touching the same rows then lock them in
        // the same order, so PostgreSQL never has to break a deadlock between them.
        rows.sort_unstable_by_key(|r| (r.key_id, r.hour));
        last_used.sort_unstable_by_key(|(id, _)| *id);
        Drained { rows, last_used }
    }

    /// Puts back what a failed flush did not write, to be written by the next one.
    fn restore(&self, rows: &[UsageRow], last_used: &[(KeyId, SystemTime)]) {
        for row in rows {
            let shard = &self.shards[self.hasher.hash_one(row.key_id) as usize % SHARDS];
            shard
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .earlier
                .push(*row);
        }
        for (id, at) in last_used {
            let shard = &self.shards[self.hasher.hash_one(*id) as usize % SHARDS];
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let entry = shard.pending.entry(*id).or_insert(Pending {
                hour: hour_of(*at),
                counts: UsageCounts::default(),
                last_used: None,
            });
            if entry.last_used.is_none_or(|t| t < *at) {
                entry.last_used = Some(*at);
            }
        }
    }

    /// Writes every pending count and use; on failure, what was not written is kept for the
    /// next flush (what was, is not written again). Returns (usage rows, last-used times).
    pub async fn flush(&self, store: &KeyStore) -> Result<(usize, usize), PartialWrite> {
        let Drained { rows, last_used } = self.drain();
        if rows.is_empty() && last_used.is_empty() {
            return Ok((0, 0));
        }
        let result = store.record_usage(&rows, &last_used).await;
        let (rows_done, uses_done) = match &result {
            Ok(()) => (rows.len(), last_used.len()),
            Err(partial) => (partial.rows_written, partial.last_used_written),
        };
        self.rows_written
            .fetch_add(rows_done as u64, Ordering::Relaxed);
        self.last_used_written
            .fetch_add(uses_done as u64, Ordering::Relaxed);
        match result {
            Ok(()) => Ok((rows_done, uses_done)),
            Err(partial) => {
                self.restore(&rows[rows_done..], &last_used[uses_done..]);
                Err(partial)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn id(n: u8) -> KeyId {
        KeyId::parse(&format!("AbCdEf01234{}", n as char)).unwrap()
    }

    /// Counts sum per key and hour; an hour boundary between flushes splits a key's counts into
    /// two rows; only admitted requests move last-used, and it keeps the latest.
    #[test]
    fn counts_are_merged_per_key_and_hour_and_only_admissions_are_uses() {
        let usage = Usage::default();
        let hour = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000 / 3600 * 3600);
        let (a, b) = (id(b'a'), id(b'b'));
        for _ in 0..3 {
            usage.record(a, Outcome::Allowed, hour + Duration::from_secs(10));
        }
        usage.record(a, Outcome::RateLimited, hour + Duration::from_secs(20));
        usage.record(a, Outcome::Allowed, hour + Duration::from_secs(5));
        usage.record(b, Outcome::Inactive, hour + Duration::from_secs(30));
        // Into the next hour: a's first hour moves aside.
        let next = hour + Duration::from_secs(3600);
        usage.record(a, Outcome::Forbidden, next);
        usage.record(a, Outcome::Expired, next + Duration::from_secs(1));
        let Drained {
            mut rows,
            mut last_used,
        } = usage.drain();
        rows.sort_by_key(|r| (r.key_id, r.hour));
        last_used.sort();
        let h = hour_of(hour);
        assert_eq!(
            rows,
            vec![
                UsageRow {
                    key_id: a,
                    hour: h,
                    counts: UsageCounts {
                        by_outcome: [4, 1, 0, 0, 0]
                    }
                },
                UsageRow {
                    key_id: a,
                    hour: h + stanna_store::usage::HOUR_MICROS,
                    counts: UsageCounts {
                        by_outcome: [0, 0, 0, 1, 1]
                    }
                },
                UsageRow {
                    key_id: b,
                    hour: h,
                    counts: UsageCounts {
                        by_outcome: [0, 0, 1, 0, 0]
                    }
                },
            ]
        );
        assert_eq!(
            last_used,
            vec![(a, hour + Duration::from_secs(10))],
            "b was refused: not a use"
        );
        let empty = usage.drain();
        assert!(empty.rows.is_empty() && empty.last_used.is_empty());
    }

    /// What a failed flush gives back is drained again, merged with what came after.
    #[test]
    fn restored_counts_merge_with_new_ones() {
        let usage = Usage::default();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        let a = id(b'a');
        usage.record(a, Outcome::Allowed, at);
        let first = usage.drain();
        usage.restore(&first.rows, &first.last_used);
        usage.record(a, Outcome::Allowed, at + Duration::from_secs(1));
        let again = usage.drain();
        assert_eq!(again.rows.len(), 1);
        assert_eq!(again.rows[0].counts.allowed(), 2);
        assert_eq!(again.last_used, vec![(a, at + Duration::from_secs(1))]);
    }
}
