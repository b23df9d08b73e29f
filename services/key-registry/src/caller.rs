//! Who calls the registry, and in which request.
//!
//! - [`Credentials`]: the named admin tokens and the gateway's own credential, as digests.
//! - [`CallerAuth`]: the interceptor that tells them apart (in constant time: every digest is
//!   compared, equal lengths, whatever matches) and gives every call a request id.
//! - [`Call`]: what a handler reads back — the [`Principal`], the request id, and, for the
//!   gateway, the API key or session it acts for.
//!
//! An admin acts as an admin. The gateway acts only for the key or session it names; the
//! registry checks that key or session ([`crate::Registry::authorize`]) before anything else.

use std::sync::Arc;

use stanna_keys::{KeyId, SessionId};
use subtle::ConstantTimeEq;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::config::AdminToken;
use crate::error::RegistryError;

/// The metadata naming the API key a gateway call acts for.
pub const ACTING_KEY: &str = "x-stanna-acting-key";
/// The metadata naming the dashboard session a gateway call acts for.
pub const ACTING_SESSION: &str = "x-stanna-acting-session";
/// The request id, read from a call and always returned with its answer.
pub const REQUEST_ID: &str = "x-request-id";

/// Who presented which credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An admin, by the name of their token.
    Admin(Arc<str>),
    /// The gateway's credential.
    Gateway,
}

/// The accepted credentials, as BLAKE2b-256 digests (so each comparison takes the same time
/// whatever the presented token's length).
#[derive(Clone)]
pub struct Credentials {
    admins: Arc<[(Arc<str>, [u8; 32])]>,
    gateway: Option<[u8; 32]>,
}

impl Credentials {
    /// Named admin tokens and, optionally, the gateway's.
    pub fn new(admins: &[(String, AdminToken)], gateway: Option<&AdminToken>) -> Self {
        Self {
            admins: admins
                .iter()
                .map(|(name, token)| (Arc::from(name.as_str()), digest(token.expose())))
                .collect(),
            gateway: gateway.map(|t| digest(t.expose())),
        }
    }

    /// One admin token named `admin` (tests, and the all-in-one's single token).
    pub fn admin(token: &AdminToken) -> Self {
        Self::new(&[("admin".to_owned(), token.clone())], None)
    }

    /// The principal whose token this is. Every digest is compared, so the time taken does not
    /// tell which one matched or whether any did.
    fn principal(&self, token: &str) -> Option<Principal> {
        let presented = digest(token);
        let mut found = None;
        for (name, expected) in self.admins.iter() {
            if bool::from(presented.ct_eq(expected)) {
                found = Some(Principal::Admin(name.clone()));
            }
        }
        if let Some(gateway) = &self.gateway
            && bool::from(presented.ct_eq(gateway))
        {
            found = Some(Principal::Gateway);
        }
        found
    }
}

/// BLAKE2b-256 of a token.
fn digest(token: &str) -> [u8; 32] {
    use blake2::Digest as _;
    blake2::Blake2b256::digest(token.as_bytes()).into()
}

/// Refuses calls without `authorization: Bearer <token>` of an admin or the gateway (scheme
/// case-insensitive), records who called, and makes sure the call has a usable `x-request-id`
/// (one is made up when it has none or an unusable one).
#[derive(Clone)]
pub struct CallerAuth {
    credentials: Credentials,
}

impl CallerAuth {
    /// The interceptor over `credentials`.
    pub fn new(credentials: Credentials) -> Self {
        Self { credentials }
    }
}

impl Interceptor for CallerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| {
                Status::unauthenticated("missing \"authorization: Bearer <token>\" metadata")
            })?
            .to_str()
            .map_err(|_| Status::unauthenticated("the authorization metadata is not text"))?;
        let token = match presented.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => {
                return Err(Status::unauthenticated(
                    "the authorization metadata must be \"Bearer <token>\"",
                ));
            }
        };
        let Some(principal) = self.credentials.principal(token) else {
            tracing::warn!("KeyRegistry call with an unknown token refused");
            return Err(Status::unauthenticated("invalid token"));
        };
        let usable = request
            .metadata()
            .get(REQUEST_ID)
            .is_some_and(|v| usable_request_id(v.as_bytes()));
        if !usable {
            let id: AsciiMetadataValue = new_request_id()
                .parse()
                .map_err(|_| Status::internal("request id"))?;
            request.metadata_mut().insert(REQUEST_ID, id);
        }
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

/// 1 to 128 of `A-Za-z0-9-_.:`, and no `sk-` or `ss-` (a key or session token pasted into the
/// wrong header must not be recorded): the gateway's own rule for `X-Request-Id`.
pub fn usable_request_id(b: &[u8]) -> bool {
    !b.is_empty()
        && b.len() <= 128
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
        && !b
            .windows(3)
            .any(|w| w.eq_ignore_ascii_case(b"sk-") || w.eq_ignore_ascii_case(b"ss-"))
}

/// 128 random bits in hex, as the gateway makes them.
fn new_request_id() -> String {
    use rand::RngExt as _;
    format!("{:032x}", rand::rng().random::<u128>())
}

/// Whom a gateway call acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acting {
    /// Nobody named (an admin's call).
    Nobody,
    /// An API key.
    Key(KeyId),
    /// A dashboard session.
    Session(SessionId),
}

/// What a handler knows about its caller.
#[derive(Debug, Clone)]
pub struct Call {
    /// Who presented the credential.
    pub principal: Principal,
    /// The request id (checked, or made up by [`CallerAuth`]).
    pub request_id: String,
    /// For the gateway: the key or session named.
    pub acting: Acting,
}

impl Call {
    /// Reads the call's caller from `request` (after [`CallerAuth`]).
    ///
    /// # Errors
    /// `UNAUTHENTICATED` if the interceptor did not run; `INVALID_ARGUMENT` for an acting key
    /// or session that is not an id, or both named at once.
    pub fn of<T>(request: &Request<T>) -> Result<Self, RegistryError> {
        let principal = request
            .extensions()
            .get::<Principal>()
            .cloned()
            .ok_or(RegistryError::Unauthenticated)?;
        let metadata = request.metadata();
        let request_id = metadata
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| usable_request_id(v.as_bytes()))
            .map_or_else(new_request_id, str::to_owned);
        let text = |name: &str| metadata.get(name).map(|v| v.to_str().unwrap_or("\u{0}"));
        let key = text(ACTING_KEY)
            .map(|t| {
                KeyId::parse(t).map_err(|_| {
                    RegistryError::invalid(ACTING_KEY, stanna_keys::DomainError::KeyId)
                })
            })
            .transpose()?;
        let session = text(ACTING_SESSION)
            .map(|t| {
                SessionId::parse(t)
                    .map_err(|_| RegistryError::invalid(ACTING_SESSION, "is not a session id"))
            })
            .transpose()?;
        let acting = match (key, session) {
            (None, None) => Acting::Nobody,
            (Some(key), None) => Acting::Key(key),
            (None, Some(session)) => Acting::Session(session),
            (Some(_), Some(_)) => {
                return Err(RegistryError::invalid(
                    ACTING_SESSION,
                    "a call acts for a key or a session, not both",
                ));
            }
        };
        Ok(Self {
            principal,
            request_id,
            acting,
        })
    }

    /// Whether this is the gateway's call.
    pub fn is_gateway(&self) -> bool {
        self.principal == Principal::Gateway
    }

    /// `response` carrying this call's request id back.
    pub fn answer<T>(&self, message: T) -> tonic::Response<T> {
        let mut response = tonic::Response::new(message);
        if let Ok(id) = self.request_id.parse::<AsciiMetadataValue>() {
            response.metadata_mut().insert(REQUEST_ID, id);
        }
        response
    }

    /// A handler's result as the answer or the refusal, either carrying the request id.
    ///
    /// # Errors
    /// `result`'s error, as a status.
    pub fn finish<T>(
        &self,
        result: Result<T, RegistryError>,
    ) -> Result<tonic::Response<T>, Status> {
        result.map(|m| self.answer(m)).map_err(|e| self.refuse(e))
    }

    /// `status` carrying this call's request id back.
    pub fn refuse(&self, error: RegistryError) -> Status {
        let mut status = Status::from(error);
        if let Ok(id) = self.request_id.parse::<AsciiMetadataValue>() {
            status.metadata_mut().insert(REQUEST_ID, id);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(t: &str) -> AdminToken {
        t.parse().unwrap()
    }

    #[test]
    fn each_token_names_its_principal() {
        let credentials = Credentials::new(
            &[
                ("alice".into(), token("alice-token-0123456789")),
                ("bob".into(), token("bob-token-0123456789abc")),
            ],
            Some(&token("gateway-token-0123456789")),
        );
        assert_eq!(
            credentials.principal("alice-token-0123456789"),
            Some(Principal::Admin("alice".into()))
        );
        assert_eq!(
            credentials.principal("bob-token-0123456789abc"),
            Some(Principal::Admin("bob".into()))
        );
        assert_eq!(
            credentials.principal("gateway-token-0123456789"),
            Some(Principal::Gateway)
        );
        assert_eq!(credentials.principal("alice-token-012345678"), None);
        assert_eq!(credentials.principal(""), None);
    }

    #[test]
    fn request_ids_are_plain_and_never_hold_a_key() {
        assert!(usable_request_id(b"req-1:abc.DEF_2"));
        for bad in [
            &b""[..],
            b"has space",
            b"sk-abc",
            b"x-SK-y",
            b"ss-abc",
            &[b'a'; 129],
        ] {
            assert!(!usable_request_id(bad), "{bad:?}");
        }
        assert!(usable_request_id(new_request_id().as_bytes()));
    }
}
