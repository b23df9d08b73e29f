//! Dashboard sign-in, in the registry's core: CreateSession verifies the product's login token,
//! spends its `jti` and stores a new session (only the token's digest); DeleteSession signs one
//! out; RevokeSessions ends a user's or a workspace's. auth-check sees each within a second
//! through the session change feed (`stanna_store::sessions`).

use std::sync::Arc;
use std::time::Duration;

use stanna_keys::login::LoginVerifier;
use stanna_keys::{NewSession, PresentedSession};
use stanna_store::{NewSessionRow, SessionRecord, SessionScope, StoreError};

use crate::Registry;
use crate::error::RegistryError;

/// What signing in needs: the login-token verifier and how long a session lasts.
#[derive(Debug, Clone)]
pub struct SessionIssuer {
    /// Checks login tokens (`STANNA_SESSION_SECRET` or `STANNA_SESSION_JWKS_FILE`).
    pub verifier: Arc<LoginVerifier>,
    /// `STANNA_SESSION_TTL`.
    pub ttl: Duration,
}

/// A session just made, with its token: the one moment the token exists.
pub struct CreatedSession {
    /// The stored session.
    pub session: SessionRecord,
    /// The token, for the cookie only.
    pub token: String,
}

impl std::fmt::Debug for CreatedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedSession")
            .field("session", &self.session.id)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Signs in with `login_token`.
    ///
    /// # Errors
    /// [`RegistryError::LoginRefused`] naming what is wrong with the token,
    /// [`RegistryError::LoginTokenUsed`] for a token spent before,
    /// [`RegistryError::SessionsNotConfigured`], or a store failure.
    pub async fn create_session(
        &self,
        login_token: &str,
        request_id: &str,
    ) -> Result<CreatedSession, RegistryError> {
        let issuer = self.sessions()?;
        let login = issuer.verifier.verify(login_token).map_err(|error| {
            tracing::info!(reason = error.reason(), %error, "login token refused");
            RegistryError::LoginRefused(error)
        })?;
        let now = self.now();
        let new = NewSession::generate().map_err(|e| RegistryError::Internal(Box::new(e)))?;
        let row = NewSessionRow {
            id: new.id,
            digest: new.digest,
            workspace: login.workspace,
            user: login.user,
            role: login.role,
            name: login.name,
            email: login.email,
            expires_at: now + issuer.ttl,
        };
        let session = self
            .store()
            .create_session(&row, &login.jti, login.expires_at, now, request_id)
            .await
            .map_err(|err| match err {
                StoreError::LoginTokenUsed => {
                    tracing::info!(
                        reason = "replayed",
                        "login token refused: its jti was used already"
                    );
                    RegistryError::LoginTokenUsed
                }
                other => other.into(),
            })?;
        tracing::info!(session_id = %session.id, workspace_id = %session.workspace, role = session.role.as_str(), "session created");
        Ok(CreatedSession {
            session,
            token: new.token,
        })
    }

    /// Signs out the session whose token is `token`.
    ///
    /// # Errors
    /// [`RegistryError::InvalidArgument`] for a value that is not a session token,
    /// [`RegistryError::NotFound`] for one that is unknown or already over.
    pub async fn delete_session(&self, token: &str, request_id: &str) -> Result<(), RegistryError> {
        let presented = PresentedSession::parse(token)
            .map_err(|e| RegistryError::invalid("session_token", e))?;
        let ended = self
            .store()
            .revoke_session(&presented.id(), &presented.digest(), self.now(), request_id)
            .await?;
        if !ended {
            return Err(RegistryError::NotFound);
        }
        tracing::info!(session_id = %presented.id(), "session signed out");
        Ok(())
    }

    /// Ends every live session in `scope`; returns how many.
    ///
    /// # Errors
    /// A store failure.
    pub async fn revoke_sessions(
        &self,
        scope: &SessionScope,
        audit: &stanna_store::AuditContext,
    ) -> Result<u64, RegistryError> {
        let revoked = self
            .store()
            .revoke_sessions(scope, self.now(), audit)
            .await?;
        tracing::info!(workspace_id = %scope.workspace, user = scope.user.is_some(), revoked, "sessions revoked");
        Ok(revoked)
    }

    fn sessions(&self) -> Result<&SessionIssuer, RegistryError> {
        self.session_issuer()
            .ok_or(RegistryError::SessionsNotConfigured)
    }
}
