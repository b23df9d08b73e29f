//! Sessions verify as keys do: parse (no I/O) → cache (digest compared in constant time) → store
//! on a miss → revoked / expired / workspace → the quota, charged per user on the session
//! windows (`STANNA_SESSION_RATE_LIMIT_*`). The change poll applies sign-outs and revocations to
//! the cache within a second, as it does for keys (`poll_session_changes`).
//!
//! No argon2: a session token is 256 random bits, so its BLAKE2b digest is all the store holds
//! and a miss costs one primary-key read. The warm path is one digest and one read-locked map
//! lookup, like a key's.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use blake2::{Blake2b, Digest, digest::consts::U16};
use stanna_keys::{PresentedSession, RateLimits, Role, SessionId, UserId, WorkspaceId};
use stanna_quota::NamedWindow;
use stanna_store::{SessionRecord, StoreError};

use crate::change_poll::CHANGE_OVERLAP;
use crate::state::{Verdict, VerifyCode, VerifyError};
use crate::verifier::{MAX_STATE_AGE, Verifier};

/// Sessions kept in the cache; past it an arbitrary one makes room (it costs one store read).
const SESSION_CACHE_SIZE: usize = 100_000;
/// Session changes fetched per query; the poll pages through more.
const PAGE: u64 = 1000;

/// A session as verification needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    /// The public id.
    pub id: SessionId,
    /// The user's workspace.
    pub workspace: WorkspaceId,
    /// The user.
    pub user: UserId,
    /// Member or admin.
    pub role: Role,
    /// Display name.
    pub name: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// When it ends.
    pub expires_at: SystemTime,
    /// Signed out or revoked.
    pub revoked: bool,
    /// The row's last change: of two states of one session, the later one wins in the cache.
    pub updated_at: SystemTime,
    /// What the quota counts: one subject per user, whatever their sessions.
    pub subject: String,
    /// The session windows.
    pub windows: [NamedWindow; 2],
}

impl SessionState {
    fn of(record: &SessionRecord, limits: RateLimits) -> Self {
        // A user id may hold any printable character (`{`, `:`); the quota's subject is a digest
        // of (workspace, user), so it is short and safe in a Redis hash tag.
        let mut hasher = Blake2b::<U16>::new();
        hasher.update(record.workspace.as_str().as_bytes());
        hasher.update([0]);
        hasher.update(record.user.as_str().as_bytes());
        let digest: [u8; 16] = hasher.finalize().into();
        let subject = format!("u.{}", stanna_keys::to_hex(&digest));
        Self {
            id: record.id,
            workspace: record.workspace.clone(),
            user: record.user.clone(),
            role: record.role,
            name: record.name.clone(),
            email: record.email.clone(),
            expires_at: record.expires_at,
            revoked: record.revoked,
            updated_at: record.updated_at,
            subject,
            windows: limits.named().map(|(name, limit)| NamedWindow {
                name: Cow::Borrowed(name),
                limit,
            }),
        }
    }
}

#[derive(Clone)]
struct Entry {
    digest: [u8; 32],
    state: Arc<SessionState>,
    fetched_at: SystemTime,
}

/// The session cache and the session feed's watermark.
pub(crate) struct Sessions {
    cache: RwLock<HashMap<SessionId, Entry>>,
    watermark: Mutex<(SystemTime, Option<SessionId>)>,
}

impl Sessions {
    pub(crate) fn new(now: SystemTime) -> Self {
        Self {
            cache: RwLock::new(HashMap::new()),
            watermark: Mutex::new((now, None)),
        }
    }

    fn get(&self, presented: &PresentedSession) -> Option<Entry> {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        let entry = cache.get(&presented.id())?;
        presented.matches(&entry.digest).then(|| entry.clone())
    }

    /// Caches `state` unless a later state of the session is there already (a read that began
    /// before a revocation must not overwrite the revocation the poll applied meanwhile). Absent,
    /// it is added only when `add` says so.
    fn put(&self, state: Arc<SessionState>, digest: [u8; 32], at: SystemTime, add: bool) {
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = cache.get_mut(&state.id) {
            if entry.state.updated_at <= state.updated_at {
                entry.state = state;
                entry.digest = digest;
                entry.fetched_at = at;
            }
            return;
        }
        if !add {
            return;
        }
        if cache.len() >= SESSION_CACHE_SIZE
            && let Some(victim) = cache.keys().next().copied()
        {
            cache.remove(&victim);
        }
        cache.insert(
            state.id,
            Entry {
                digest,
                state,
                fetched_at: at,
            },
        );
    }
}

impl Verifier {
    /// Verifies a session token (for `workspace`, when given) and charges `cost` to its user's
    /// session windows.
    ///
    /// # Errors
    /// [`VerifyError::InvalidArgument`] for a bad `workspace_id`; [`VerifyError::Unavailable`]
    /// when the store (for an uncached session) or, fail-closed, the quota cannot answer.
    pub async fn verify_session(
        &self,
        token: &str,
        workspace: &str,
        cost: u32,
    ) -> Result<Verdict, VerifyError> {
        let Ok(presented) = PresentedSession::parse(token) else {
            return Ok(Verdict::denied(
                VerifyCode::Malformed,
                "the session is not one of ours; sign in again",
            ));
        };
        let workspace = crate::verifier::asked_workspace(workspace)?;
        let now = self.now();
        let state = match self.inner.sessions.get(&presented) {
            Some(entry)
                if now.duration_since(entry.fetched_at).unwrap_or_default() <= MAX_STATE_AGE =>
            {
                entry.state
            }
            _ if !self.known_session(&presented).await? => {
                self.unknown_id();
                return Ok(session_not_found());
            }
            _ => match self.read_session(&presented, now).await? {
                Some(state) => state,
                None => return Ok(session_not_found()),
            },
        };
        let denied = |code, message: &'static str| {
            let mut verdict = Verdict::denied(code, message);
            verdict.session = Some(state.clone());
            verdict
        };
        if state.revoked {
            return Ok(session_not_found());
        }
        if state.expires_at <= now {
            return Ok(denied(
                VerifyCode::Expired,
                "the session has ended; sign in again",
            ));
        }
        if workspace.is_some_and(|w| w != state.workspace) {
            return Ok(denied(
                VerifyCode::WorkspaceMismatch,
                "the session belongs to another workspace",
            ));
        }
        let cost = cost.max(1);
        let outcome = self
            .decide(&state.subject, &state.windows, cost, state.id.as_str())
            .await?;
        let mut verdict = match outcome {
            Some(decision) => {
                let mut verdict = if decision.allowed {
                    Verdict::denied(VerifyCode::Valid, "ok")
                } else {
                    Verdict::denied(
                        VerifyCode::RateLimited,
                        "the session's rate limit is exhausted",
                    )
                };
                verdict.windows = decision.windows;
                verdict.retry_after = decision.retry_after;
                verdict
            }
            None => Verdict::denied(
                VerifyCode::Valid,
                "ok (rate limits not checked: quota unavailable)",
            ),
        };
        verdict.session = Some(state);
        Ok(verdict)
    }

    /// Whether the presented session's id exists, running an early poll when it is not known yet
    /// (a session created a moment ago by another registry), as for keys (`known_ids.rs`).
    async fn known_session(&self, presented: &PresentedSession) -> Result<bool, VerifyError> {
        let id = presented.id();
        if self.inner.known_sessions.contains(&id) {
            return Ok(true);
        }
        // Revoked or signed out: final, no poll.
        if self.inner.known_sessions.is_gone(&id) {
            return Ok(false);
        }
        let authoritative = self.poll_for_miss().await?;
        let known = self.inner.known_sessions.contains(&id);
        if !known && !authoritative {
            return Err(VerifyError::Unavailable(crate::known_ids::NOT_KNOWN_YET));
        }
        Ok(known)
    }

    /// Reads a session from the store and caches it when the digest matches.
    async fn read_session(
        &self,
        presented: &PresentedSession,
        now: SystemTime,
    ) -> Result<Option<Arc<SessionState>>, VerifyError> {
        self.inner
            .stats
            .store_lookups
            .fetch_add(1, Ordering::Relaxed);
        // From the replica when it can answer (`reads.rs`); the session's own row found with
        // another digest or not at all is asked of the primary. A row older than a revocation
        // the poll applied cannot make the session live again: `put` keeps the newer state.
        let id = presented.id();
        let record =
            match self
                .read_by_id(
                    |replica, replayed| async move {
                        replica.find_session_replayed(&id, replayed).await
                    },
                    |primary| async move { primary.find_session(&id).await },
                    |record| presented.matches(&record.digest),
                )
                .await
            {
                Ok(record) => record,
                Err(err) => {
                    self.store_failed(now);
                    static FAILED: stanna_telemetry::LogLimiter =
                        stanna_telemetry::LogLimiter::new(std::time::Duration::from_secs(10));
                    if let Some(held_back) = FAILED.allow() {
                        tracing::warn!(error = %stanna_telemetry::ErrorChain(&err), held_back, "store unreachable reading a session");
                    }
                    return Err(VerifyError::Unavailable("the key store is unavailable"));
                }
            };
        let Some(record) = record.filter(|r| presented.matches(&r.digest)) else {
            return Ok(None);
        };
        let state = Arc::new(SessionState::of(
            &record,
            self.inner.settings.session_limits,
        ));
        self.inner
            .sessions
            .put(state.clone(), record.digest, now, true);
        // The cache may hold a later state (a revocation the poll applied while this read was
        // in flight): that one decides.
        Ok(self
            .inner
            .sessions
            .get(presented)
            .map(|entry| entry.state)
            .or(Some(state)))
    }

    /// Applies sign-outs and revocations since the last poll, read from `source`, to the session
    /// cache.
    pub(crate) async fn poll_session_changes(
        &self,
        source: &stanna_store::KeyStore,
    ) -> Result<usize, StoreError> {
        let now = self.now();
        let (watermark, _) = *self
            .inner
            .sessions
            .watermark
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut position = (watermark - CHANGE_OVERLAP, None);
        let mut newest = (watermark, None);
        let mut seen = 0;
        loop {
            let changes = source
                .session_changes_after(position.0, position.1, PAGE)
                .await?;
            self.inner
                .known_sessions
                .apply(changes.iter().map(|record| (record.id, !record.revoked)));
            for record in &changes {
                if record.updated_at > newest.0 {
                    newest = (record.updated_at, Some(record.id));
                }
                let state = Arc::new(SessionState::of(record, self.inner.settings.session_limits));
                // A revocation is cached even for a session not cached yet, so a lookup that read
                // the row before it cannot cache it as live afterwards.
                let add = state.revoked;
                self.inner.sessions.put(state, record.digest, now, add);
            }
            seen += changes.len();
            match changes.last() {
                Some(last) if changes.len() as u64 == PAGE => {
                    position = (last.updated_at, Some(last.id));
                }
                _ => break,
            }
        }
        *self
            .inner
            .sessions
            .watermark
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = newest;
        Ok(seen)
    }
}

fn session_not_found() -> Verdict {
    Verdict::denied(
        VerifyCode::NotFound,
        "the session is unknown, signed out or revoked; sign in again",
    )
}
