//! `GET /readyz`: whether this gateway can verify keys and serve the key API now — auth-check
//! reachable and SERVING, the registry reachable, SERVING and accepting this gateway's admin
//! token. 200 `{"status":"ready"}`, or 503 with each reason. `/healthz` stays liveness (the
//! process answers). Checked at most once a second, whatever the probe rate.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use stanna_proto::keys::v1 as pb;

use crate::Gateway;

/// How long one answer is reused.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// The checks `/readyz` runs, named, and the last answer.
pub struct Readiness {
    checks: Vec<(&'static str, stanna_grpc::Check)>,
    last: Mutex<Option<(Instant, Vec<String>)>>,
}

impl Readiness {
    /// Readiness made of `checks` (the composition root chooses them) and the admin-token probe.
    pub fn new(checks: Vec<(&'static str, stanna_grpc::Check)>) -> Self {
        Self {
            checks,
            last: Mutex::new(None),
        }
    }
}

impl Gateway {
    /// Whether the registry accepts this gateway's credential, asked without touching any key:
    /// a `GetKey` naming no workspace is refused as `INVALID_ARGUMENT` after the token check, or
    /// `UNAUTHENTICATED` by it.
    ///
    /// # Errors
    /// Why not, in words.
    pub async fn registry_accepts_token(&self) -> Result<(), String> {
        let answer = crate::rest::registry(self)
            .get_key(pb::GetKeyRequest::default())
            .await;
        match answer {
            // Past the token check: the request (naming no workspace, and nobody to act for) is
            // refused on its merits.
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::InvalidArgument | tonic::Code::PermissionDenied
                ) =>
            {
                Ok(())
            }
            Err(status) if status.code() == tonic::Code::Unauthenticated => Err(
                "the registry refuses this gateway's credential: give both the same STANNA_GATEWAY_TOKEN"
                    .to_owned(),
            ),
            Err(status) => Err(format!("the registry is unreachable: {}", status.message())),
            Ok(_) => Ok(()),
        }
    }

    /// What keeps this gateway from serving, empty when ready.
    async fn not_ready(&self) -> Vec<String> {
        let readiness = &self.inner.readiness;
        if let Some((at, reasons)) = readiness
            .last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            && at.elapsed() < FRESH_FOR
        {
            return reasons.clone();
        }
        // All at once under one deadline, so a probe with a 3 s timeout always gets the reasons.
        let mut checks = tokio::task::JoinSet::new();
        for (index, (name, check)) in readiness.checks.iter().enumerate() {
            let (name, checked) = (*name, check());
            checks.spawn(async move {
                let why = match tokio::time::timeout(FRESH_FOR, checked).await {
                    Ok(Ok(())) => return (index, None),
                    Ok(Err(why)) => why,
                    Err(_) => "did not answer within 1 s".to_owned(),
                };
                (index, Some(format!("{name}: {why}")))
            });
        }
        let gateway = self.clone();
        let last = readiness.checks.len();
        checks.spawn(async move {
            let why = match tokio::time::timeout(FRESH_FOR, gateway.registry_accepts_token()).await
            {
                Ok(Ok(())) => return (last, None),
                Ok(Err(why)) => why,
                Err(_) => "did not answer within 1 s".to_owned(),
            };
            (last, Some(format!("key-registry: {why}")))
        });
        let mut found = Vec::new();
        while let Some(done) = checks.join_next().await {
            match done {
                Ok((index, Some(why))) => found.push((index, why)),
                Ok((_, None)) => {}
                Err(err) => found.push((usize::MAX, format!("a readiness check failed: {err}"))),
            }
        }
        found.sort_by_key(|(index, _)| *index);
        let reasons: Vec<String> = found.into_iter().map(|(_, why)| why).collect();
        *readiness.last.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), reasons.clone()));
        reasons
    }
}

/// Whether this gateway can verify keys now.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready: keys can be verified and managed", content_type = "application/json", body = inline(Object), example = json!({"status": "ready"})),
        (status = 503, description = "Not ready, with why", content_type = "application/json", body = inline(Object),
            example = json!({"status": "not_ready", "reasons": ["auth-check: the key store does not answer"]}))))]
pub async fn readyz(State(gateway): State<Gateway>) -> Response {
    let reasons = gateway.not_ready().await;
    let (status, body) = if reasons.is_empty() {
        (StatusCode::OK, serde_json::json!({"status": "ready"}))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "not_ready", "reasons": reasons}),
        )
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
