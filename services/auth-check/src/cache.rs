//! The verified-key cache: key id → (digest of the verified key, key state), bounded.
//!
//! A hit needs the presented key's digest to match the digest stored when argon2 verified it
//! (compared in constant time), so a guessed secret for a cached key id is a miss, never a hit.
//! Sharded `RwLock`s keep the warm path to one short read lock. When a shard is full, an arbitrary
//! entry makes room: cheap, and a busy key evicted by chance costs one store lookup and argon2 run.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use stanna_keys::KeyId;
use stanna_keys::time::{from_micros_since_epoch, micros_since_epoch};
use subtle::ConstantTimeEq;

use crate::state::KeyState;

const SHARDS: usize = 16;

/// A cached verification: 48 bytes, 64 with its key id in the map's slot.
#[derive(Clone)]
pub(crate) struct CacheEntry {
    /// BLAKE2b-256 of the whole verified key.
    pub digest: [u8; 32],
    /// The key's state, replaced when the change poll reports a change.
    pub state: Arc<KeyState>,
    /// When the state was read from the store (or last confirmed by a change poll), µs since
    /// the epoch: 8 bytes where a `SystemTime` takes 16, which rounds the slot up to 72.
    fetched_at_us: u64,
}

impl CacheEntry {
    /// A verification of the key whose digest is `digest`, its state read at `fetched_at`.
    pub fn new(digest: [u8; 32], state: Arc<KeyState>, fetched_at: SystemTime) -> Self {
        Self {
            digest,
            state,
            fetched_at_us: micros_since_epoch(fetched_at),
        }
    }

    /// When the state was read from the store.
    pub fn fetched_at(&self) -> SystemTime {
        from_micros_since_epoch(self.fetched_at_us)
    }
}

/// Bounded, sharded map from key id to [`CacheEntry`].
pub(crate) struct KeyCache {
    shards: Vec<RwLock<HashMap<KeyId, CacheEntry>>>,
    per_shard: usize,
    hasher: RandomState,
}

impl KeyCache {
    /// A cache holding about `capacity` keys.
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, id: &KeyId) -> &RwLock<HashMap<KeyId, CacheEntry>> {
        &self.shards[self.hasher.hash_one(id) as usize % SHARDS]
    }

    /// The entry for `id` if it was verified with this exact key.
    pub fn get(&self, id: &KeyId, digest: &[u8; 32]) -> Option<CacheEntry> {
        let shard = self.shard(id).read().unwrap_or_else(|p| p.into_inner());
        let entry = shard.get(id)?;
        bool::from(entry.digest.ct_eq(digest)).then(|| entry.clone())
    }

    /// Stores a verification.
    pub fn insert(&self, id: KeyId, entry: CacheEntry) {
        let mut shard = self.shard(&id).write().unwrap_or_else(|p| p.into_inner());
        if shard.len() >= self.per_shard
            && !shard.contains_key(&id)
            && let Some(victim) = shard.keys().next().copied()
        {
            shard.remove(&victim);
        }
        shard.insert(id, entry);
    }

    /// Replaces the state of `id` if cached (the digest stays: a key's hash never changes).
    pub fn update_state(&self, id: &KeyId, state: Arc<KeyState>, at: SystemTime) {
        let mut shard = self.shard(id).write().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = shard.get_mut(id) {
            entry.state = state;
            entry.fetched_at_us = micros_since_epoch(at);
        }
    }

    /// Forgets `id` (deleted key).
    pub fn remove(&self, id: &KeyId) {
        self.shard(id)
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}
