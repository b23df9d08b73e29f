//! The login token: how the product tells Stanna who is signed in (README "Dashboard").
//!
//! A JWT the product mints for one hand-off: `sub` (user id), `workspace_id`, `jti`, `iat`,
//! `exp` (at most [`MAX_LIFETIME`] after `iat`), `aud`, optionally `iss`, `name`, `email` and
//! `role`. Verified with a shared HS256 secret or a set of public keys (Ed25519, ES256, RS256)
//! chosen by `kid`. The algorithm is never taken from the token on its own word: with a secret
//! only HS256 is accepted, and with a key set only the algorithm that key's type implies, so
//! `alg: none` and algorithm confusion (an HS256 token "signed" with a public key) are refused.
//! Time is checked here against the injected [`Clock`], not by the JWT crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::{Clock, Role, UserId, WorkspaceId};

/// The longest a login token may live (`exp − iat`): it is a hand-off, not a session.
pub const MAX_LIFETIME: Duration = Duration::from_secs(300);
/// Clock difference tolerated between the product and Stanna.
pub const LEEWAY: Duration = Duration::from_secs(30);
/// The shortest HS256 secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;
/// The audience when `STANNA_SESSION_AUDIENCE` is not set.
pub const DEFAULT_AUDIENCE: &str = "stanna-dashboard";
/// The longest `jti` accepted.
pub const MAX_JTI_LEN: usize = 128;

/// Why a login token was refused: each says what to fix, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// Not three base64url parts with a JSON header and body.
    #[error("the sign-in link is damaged: its token is not a JWT")]
    NotAJwt,
    /// `alg` is `none`, unknown, or not the one the configured key allows.
    #[error("the sign-in token's algorithm ({0}) is not accepted")]
    Algorithm(String),
    /// The key set has no key with the token's `kid` (or the token names none).
    #[error("the sign-in token names no key this server knows (kid {0:?})")]
    UnknownKey(String),
    /// The signature does not match.
    #[error("the sign-in token's signature is wrong")]
    Signature,
    /// Past `exp` (plus the leeway).
    #[error("the sign-in link has expired: sign in again from the product")]
    Expired,
    /// `iat` in the future, or `exp − iat` over the limit.
    #[error("the sign-in token's lifetime is not accepted: {0}")]
    Lifetime(&'static str),
    /// `aud` is missing or another audience.
    #[error("the sign-in token is meant for another audience")]
    Audience,
    /// `iss` is missing or another issuer.
    #[error("the sign-in token comes from another issuer")]
    Issuer,
    /// A required claim is missing.
    #[error("the sign-in token lacks the {0} claim")]
    MissingClaim(&'static str),
    /// A claim does not satisfy its rule.
    #[error("the sign-in token's {claim} claim {reason}")]
    BadClaim {
        /// The claim.
        claim: &'static str,
        /// Its rule.
        reason: String,
    },
}

impl LoginError {
    /// A short, stable reason for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotAJwt => "not_a_jwt",
            Self::Algorithm(_) => "algorithm",
            Self::UnknownKey(_) => "unknown_kid",
            Self::Signature => "signature",
            Self::Expired => "expired",
            Self::Lifetime(_) => "lifetime",
            Self::Audience => "audience",
            Self::Issuer => "issuer",
            Self::MissingClaim(_) => "missing_claim",
            Self::BadClaim { .. } => "bad_claim",
        }
    }
}

/// Who a verified login token says is signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// `sub`.
    pub user: UserId,
    /// `workspace_id`.
    pub workspace: WorkspaceId,
    /// `jti`: works once.
    pub jti: String,
    /// `exp`: the `jti` must be remembered until then (plus the leeway).
    pub expires_at: SystemTime,
    /// `name`, for the page header.
    pub name: Option<String>,
    /// `email`, for the page header.
    pub email: Option<String>,
    /// `role` (default member).
    pub role: Role,
}

/// The claims as the product writes them (also what [`mint_hs256`] writes).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    /// Unique per token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Issued at, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Expires at, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// The audience: one, or several (RFC 7519 allows an array; Auth0 sends one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// The issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// `member` or `admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// `aud`: a string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// One audience.
    One(String),
    /// Several; the token is for each.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `audience` is among them.
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Self::One(one) => one == audience,
            Self::Many(many) => many.iter().any(|a| a == audience),
        }
    }
}

impl From<&str> for Audience {
    fn from(audience: &str) -> Self {
        Self::One(audience.to_owned())
    }
}

/// How signatures are checked.
enum Keys {
    /// One shared secret, HS256 only.
    Secret(DecodingKey),
    /// Public keys by `kid`, each with the one algorithm its type implies.
    Set(Vec<(String, DecodingKey, Algorithm)>),
}

/// Why the verification keys could not be loaded (said at start, naming the setting).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    /// The secret is shorter than [`MIN_SECRET_LEN`].
    #[error("must be at least {MIN_SECRET_LEN} bytes")]
    ShortSecret,
    /// The JWKS document does not parse or has no usable key.
    #[error("{0}")]
    Jwks(String),
}

/// Verifies login tokens. Cheap to share (read-only).
pub struct LoginVerifier {
    keys: Keys,
    audience: String,
    issuer: Option<String>,
    clock: Clock,
}

impl std::fmt::Debug for LoginVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginVerifier")
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl LoginVerifier {
    /// A verifier of HS256 tokens signed with `secret`.
    ///
    /// # Errors
    /// [`KeysError::ShortSecret`].
    pub fn with_secret(
        secret: &[u8],
        audience: &str,
        issuer: Option<&str>,
        clock: Clock,
    ) -> Result<Self, KeysError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeysError::ShortSecret);
        }
        let key = DecodingKey::from_secret(secret).map_err(|_| KeysError::ShortSecret)?;
        Ok(Self::new(Keys::Secret(key), audience, issuer, clock))
    }

    /// A verifier of tokens signed by the keys of a JWK set (JSON text), chosen by `kid`.
    ///
    /// # Errors
    /// [`KeysError::Jwks`] for a document that does not parse, a key without `kid`, a key of
    /// another type than Ed25519, P-256 or RSA, or a set with no key.
    pub fn with_jwks(
        jwks: &str,
        audience: &str,
        issuer: Option<&str>,
        clock: Clock,
    ) -> Result<Self, KeysError> {
        let set: JwkSet = serde_json::from_str(jwks)
            .map_err(|e| KeysError::Jwks(format!("is not a JWK set: {e}")))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let kid = jwk
                .common
                .key_id
                .clone()
                .ok_or_else(|| KeysError::Jwks("every key must have a \"kid\"".into()))?;
            let algorithm = match &jwk.algorithm {
                AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                _ => {
                    return Err(KeysError::Jwks(format!(
                        "key {kid:?}: only Ed25519 (OKP), P-256 (EC) and RSA public keys are accepted"
                    )));
                }
            };
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|e| KeysError::Jwks(format!("key {kid:?}: {e}")))?;
            keys.push((kid, key, algorithm));
        }
        if keys.is_empty() {
            return Err(KeysError::Jwks("holds no key".into()));
        }
        Ok(Self::new(Keys::Set(keys), audience, issuer, clock))
    }

    fn new(keys: Keys, audience: &str, issuer: Option<&str>, clock: Clock) -> Self {
        Self {
            keys,
            audience: audience.to_owned(),
            issuer: issuer.map(str::to_owned),
            clock,
        }
    }

    /// Verifies `token`: signature, audience, issuer, lifetime, then each claim's rule.
    ///
    /// # Errors
    /// [`LoginError`] naming what is wrong.
    pub fn verify(&self, token: &str) -> Result<Login, LoginError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| header_error(token, &e))?;
        let (key, algorithm) = match &self.keys {
            Keys::Secret(key) => (key, Algorithm::HS256),
            Keys::Set(keys) => {
                let kid = header.kid.clone().unwrap_or_default();
                let (_, key, algorithm) = keys
                    .iter()
                    .find(|(k, _, _)| *k == kid)
                    .ok_or(LoginError::UnknownKey(kid))?;
                (key, *algorithm)
            }
        };
        if header.alg != algorithm {
            return Err(LoginError::Algorithm(format!("{:?}", header.alg)));
        }
        let mut validation = Validation::new(algorithm);
        // Time is ours to check (the injected clock); the crate checks signature and audience.
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        validation.set_audience(&[&self.audience]);
        validation.leeway = 0;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|e| claims_error(&e))?
            .claims;
        if !claims
            .aud
            .as_ref()
            .is_some_and(|a| a.contains(&self.audience))
        {
            return Err(LoginError::Audience);
        }
        if let Some(issuer) = &self.issuer
            && claims.iss.as_deref() != Some(issuer.as_str())
        {
            return Err(LoginError::Issuer);
        }
        let now = (self.clock)()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let exp = claims.exp.ok_or(LoginError::MissingClaim("exp"))?;
        let iat = claims.iat.ok_or(LoginError::MissingClaim("iat"))?;
        if now > exp.saturating_add(LEEWAY.as_secs()) {
            return Err(LoginError::Expired);
        }
        if iat > now.saturating_add(LEEWAY.as_secs()) {
            return Err(LoginError::Lifetime("it is issued in the future"));
        }
        if exp <= iat {
            return Err(LoginError::Lifetime("it expires before it is issued"));
        }
        if exp - iat > MAX_LIFETIME.as_secs() {
            return Err(LoginError::Lifetime(
                "exp − iat must be at most 300 seconds (a sign-in link is used at once)",
            ));
        }
        let sub = claims.sub.ok_or(LoginError::MissingClaim("sub"))?;
        let user = UserId::parse(&sub).map_err(|e| bad("sub", e.to_string()))?;
        let workspace = claims
            .workspace_id
            .ok_or(LoginError::MissingClaim("workspace_id"))?;
        let workspace =
            WorkspaceId::parse(&workspace).map_err(|e| bad("workspace_id", e.to_string()))?;
        let jti = claims.jti.ok_or(LoginError::MissingClaim("jti"))?;
        if jti.is_empty() || jti.len() > MAX_JTI_LEN || !jti.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad(
                "jti",
                format!("must be 1 to {MAX_JTI_LEN} printable ASCII characters without spaces"),
            ));
        }
        let role = match claims.role.as_deref() {
            None => Role::Member,
            Some(role) => Role::parse(role)
                .ok_or_else(|| bad("role", "must be \"member\" or \"admin\"".into()))?,
        };
        Ok(Login {
            user,
            workspace,
            jti,
            expires_at: UNIX_EPOCH + Duration::from_secs(exp) + LEEWAY,
            name: display_claim("name", claims.name, 100)?,
            email: display_claim("email", claims.email, 254)?,
            role,
        })
    }
}

fn bad(claim: &'static str, reason: String) -> LoginError {
    LoginError::BadClaim { claim, reason }
}

/// `name` or `email`: optional, shown in the page header, so short and free of control
/// characters.
fn display_claim(
    claim: &'static str,
    value: Option<String>,
    max: usize,
) -> Result<Option<String>, LoginError> {
    let Some(value) = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(bad(
            claim,
            format!("must be at most {max} characters without control characters"),
        ));
    }
    Ok(Some(value))
}

/// What a header that does not decode means: `alg: none` and unknown algorithms are named.
fn header_error(token: &str, error: &jsonwebtoken::errors::Error) -> LoginError {
    use base64::Engine as _;
    use jsonwebtoken::errors::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::Json(_) | ErrorKind::InvalidAlgorithmName
    ) {
        // An algorithm the crate does not know (`none`, `HS1`): say which.
        let alg = token
            .split('.')
            .next()
            .and_then(|h| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(h)
                    .ok()
            })
            .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
            .and_then(|h| h.get("alg").and_then(|a| a.as_str()).map(str::to_owned));
        if let Some(alg) = alg {
            return LoginError::Algorithm(alg.chars().take(16).collect());
        }
    }
    LoginError::NotAJwt
}

fn claims_error(error: &jsonwebtoken::errors::Error) -> LoginError {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::InvalidSignature => LoginError::Signature,
        ErrorKind::InvalidAudience => LoginError::Audience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => LoginError::Audience,
        ErrorKind::InvalidAlgorithm => LoginError::Algorithm("mismatched".into()),
        ErrorKind::Json(e) => bad("body", format!("does not decode: {e}")),
        _ => LoginError::NotAJwt,
    }
}

/// Mints an HS256 login token (what `stanna session-link` and tests do; a product does the same
/// with its own JWT library).
///
/// # Errors
/// [`KeysError::ShortSecret`].
pub fn mint_hs256(secret: &[u8], claims: &Claims) -> Result<String, KeysError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(KeysError::ShortSecret);
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret).map_err(|_| KeysError::ShortSecret)?,
    )
    .map_err(|_| KeysError::ShortSecret)
}

/// Claims for a login of `user` in `workspace` now, for [`MAX_LIFETIME`], with a random `jti`.
pub fn claims_now(workspace: &str, user: &str, audience: &str, now: SystemTime) -> Claims {
    let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let mut jti = [0u8; 22];
    let _ = crate::base62::fill_random(&mut jti);
    Claims {
        sub: Some(user.to_owned()),
        workspace_id: Some(workspace.to_owned()),
        jti: Some(String::from_utf8_lossy(&jti).into_owned()),
        iat: Some(iat),
        exp: Some(iat + MAX_LIFETIME.as_secs()),
        aud: Some(audience.into()),
        ..Claims::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn at(secs: u64) -> Clock {
        std::sync::Arc::new(move || UNIX_EPOCH + Duration::from_secs(secs))
    }

    fn verifier(now: u64) -> LoginVerifier {
        LoginVerifier::with_secret(SECRET, DEFAULT_AUDIENCE, Some("product"), at(now)).unwrap()
    }

    fn good(now: u64) -> Claims {
        Claims {
            iss: Some("product".into()),
            name: Some("Alice".into()),
            ..claims_now("ws_demo", "auth0|123", DEFAULT_AUDIENCE, at(now)())
        }
    }

    fn b64(json: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn a_good_token_names_the_user_and_workspace() {
        let token = mint_hs256(SECRET, &good(1000)).unwrap();
        let login = verifier(1010).verify(&token).unwrap();
        assert_eq!(login.user.as_str(), "auth0|123");
        assert_eq!(login.workspace.as_str(), "ws_demo");
        assert_eq!(login.role, Role::Member);
        assert_eq!(login.name.as_deref(), Some("Alice"));
        let several = Claims {
            aud: Some(Audience::Many(vec!["api".into(), DEFAULT_AUDIENCE.into()])),
            ..good(1000)
        };
        assert!(
            verifier(1010)
                .verify(&mint_hs256(SECRET, &several).unwrap())
                .is_ok()
        );
    }

    #[test]
    fn every_bad_kind_is_refused_with_its_reason() {
        let v = verifier(1000);
        let mint = |c: Claims| mint_hs256(SECRET, &c).unwrap();
        let cases: Vec<(String, &str)> = vec![
            ("nonsense".into(), "not_a_jwt"),
            (
                format!(
                    "{}.{}.",
                    b64(r#"{"alg":"none","typ":"JWT"}"#),
                    b64(r#"{"sub":"u"}"#)
                ),
                "algorithm",
            ),
            (
                mint_hs256(b"another secret of thirty-two bytes!", &good(1000)).unwrap(),
                "signature",
            ),
            (mint(good(600)), "expired"),
            (mint(good(1100)), "lifetime"),
            (
                mint(Claims {
                    exp: Some(1000 + 3600),
                    ..good(1000)
                }),
                "lifetime",
            ),
            (
                mint(Claims {
                    aud: Some("other".into()),
                    ..good(1000)
                }),
                "audience",
            ),
            (
                mint(Claims {
                    aud: Some(Audience::Many(vec!["other".into(), "more".into()])),
                    ..good(1000)
                }),
                "audience",
            ),
            (
                mint(Claims {
                    aud: None,
                    ..good(1000)
                }),
                "audience",
            ),
            (
                mint(Claims {
                    iss: Some("evil".into()),
                    ..good(1000)
                }),
                "issuer",
            ),
            (
                mint(Claims {
                    jti: None,
                    ..good(1000)
                }),
                "missing_claim",
            ),
            (
                mint(Claims {
                    sub: Some("a b".into()),
                    ..good(1000)
                }),
                "bad_claim",
            ),
            (
                mint(Claims {
                    workspace_id: Some("ws/1".into()),
                    ..good(1000)
                }),
                "bad_claim",
            ),
            (
                mint(Claims {
                    role: Some("owner".into()),
                    ..good(1000)
                }),
                "bad_claim",
            ),
        ];
        for (token, reason) in cases {
            let error = v.verify(&token).unwrap_err();
            assert_eq!(error.reason(), reason, "{error}");
            assert!(!error.to_string().contains(&token), "echoes the token");
        }
    }

    #[test]
    fn a_token_signed_with_the_public_key_as_hmac_secret_is_refused() {
        // Algorithm confusion: an Ed25519 key set must not accept HS256 "signed" with its x.
        let jwks = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
        let v = LoginVerifier::with_jwks(jwks, DEFAULT_AUDIENCE, None, at(1000)).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let token = jsonwebtoken::encode(
            &header,
            &good(1000),
            &EncodingKey::from_secret(b"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").unwrap(),
        )
        .unwrap();
        assert_eq!(v.verify(&token).unwrap_err().reason(), "algorithm");
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("k9".into());
        let unknown = format!(
            "{}.{}.c2ln",
            b64(&serde_json::to_string(&header).unwrap()),
            b64("{}")
        );
        assert_eq!(v.verify(&unknown).unwrap_err().reason(), "unknown_kid");
    }

    #[test]
    fn a_key_set_verifies_tokens_of_its_keys_by_kid() {
        use base64::Engine as _;
        // A test-only Ed25519 key pair (PKCS#8 DER, and its public x).
        let private = base64::engine::general_purpose::STANDARD
            .decode("MC4CAQAwBQYDK2VwBCIEIDLH+vsdMaNsFiNKcOlL4hjZfRaOQUoh3cOmYqdqdphJ")
            .unwrap();
        let jwks = r#"{"keys":[
            {"kty":"OKP","crv":"Ed25519","kid":"old","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty":"OKP","crv":"Ed25519","kid":"new","x":"7G5y5Vy7WFZW8Ga3Z1QVRPDo0QZSrxsSlitdkMm-Tsc"}]}"#;
        let v = LoginVerifier::with_jwks(jwks, DEFAULT_AUDIENCE, None, at(1000)).unwrap();
        let sign = |kid: &str| {
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = Some(kid.into());
            jsonwebtoken::encode(&header, &good(1000), &EncodingKey::from_ed_der(&private)).unwrap()
        };
        let login = v.verify(&sign("new")).unwrap();
        assert_eq!(login.user.as_str(), "auth0|123");
        // The same signature checked against another key of the set does not verify.
        assert_eq!(v.verify(&sign("old")).unwrap_err().reason(), "signature");
    }

    #[test]
    fn short_secrets_and_empty_key_sets_are_refused() {
        assert_eq!(
            LoginVerifier::with_secret(b"short", DEFAULT_AUDIENCE, None, at(0)).unwrap_err(),
            KeysError::ShortSecret
        );
        assert!(LoginVerifier::with_jwks(r#"{"keys":[]}"#, DEFAULT_AUDIENCE, None, at(0)).is_err());
        assert!(LoginVerifier::with_jwks("nope", DEFAULT_AUDIENCE, None, at(0)).is_err());
    }
}
