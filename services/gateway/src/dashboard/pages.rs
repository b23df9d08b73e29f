//! The sign-in hand-off's two server-rendered pages: the interstitial a sign-in link opens, and
//! the answer to its button. Plain HTML with the dashboard's stylesheet and no script, every
//! value escaped.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use stanna_keys::login::Login;
use stanna_proto::keys::v1 as pb;

use super::{BASE, Dashboard, MAX_FORM_BYTES};
use crate::Gateway;

/// `GET /settings/api-keys/session?token=…`: who the link signs in, and a button that does it.
/// The token is checked but not spent. A browser signed in as someone else is asked first.
pub async fn hand_off(State(gateway): State<Gateway>, mut request: Request) -> Response {
    let Some(dashboard) = gateway.dashboard_for(&request) else {
        return super::not_here();
    };
    let token = request.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return page(
            dashboard,
            StatusCode::BAD_REQUEST,
            "Sign-in link incomplete",
            "<p>This sign-in link has no token. Open the dashboard again from the product.</p>",
        );
    };
    let login = match dashboard.sign_in.verifier.verify(&token) {
        Ok(login) => login,
        Err(error) => {
            tracing::info!(
                reason = error.reason(),
                "sign-in link refused before the interstitial"
            );
            return refused(dashboard, StatusCode::BAD_REQUEST, &error.to_string());
        }
    };
    // Someone else signed in in this browser? Ask before replacing them (login CSRF: a link
    // from an attacker must not silently swap the victim into the attacker's workspace).
    // A cookie that cannot be checked now (auth-check away, rate limited) still gets a notice:
    // the POST will replace whatever session it is.
    let current = match dashboard.take_session_cookie(request.headers_mut()) {
        Some(session) => match crate::auth::verify_session(&gateway, session).await {
            Ok(v) if v.valid || v.code() == pb::VerifyCode::RateLimited => Some(Some(v)),
            // Ended, revoked, unknown: nothing to replace.
            Ok(_) => None,
            Err(_) => Some(None),
        },
        None => None,
    };
    let who = who(&login);
    let mut body = String::new();
    match current {
        Some(None) => body.push_str(
            "<p class=\"warning\">This browser may be signed in to another session; continuing signs it out first.</p>",
        ),
        Some(Some(current))
            if current.user_id != login.user.as_str()
                || current.workspace_id != login.workspace.as_str() =>
        {
            body.push_str(&format!(
                "<p class=\"warning\">This browser is signed in as <strong>{}</strong> in <strong>{}</strong>. Continuing signs that session out first.</p>",
                escape(display(
                    current.session.as_ref().map_or("", |s| s.display_name.as_str()),
                    &current.user_id
                )),
                escape(&current.workspace_id),
            ));
        }
        _ => {}
    }
    body.push_str(&format!(
        "<p>You are about to open <strong>Settings → API Keys</strong> as {who}.</p>\
         <form method=\"post\" action=\"{BASE}/session\">\
         <input type=\"hidden\" name=\"token\" value=\"{}\">\
         <button type=\"submit\" class=\"primary\" autofocus>Continue as {}</button>\
         </form>\
         <p class=\"hint\">Not you? Close this page; nothing happens until you continue.</p>",
        escape(&token),
        escape(&format!(
            "{} in {}",
            display(
                login.name.as_deref().unwrap_or_default(),
                login.user.as_str()
            ),
            login.workspace
        )),
    ));
    page(dashboard, StatusCode::OK, "Continue to API Keys", &body)
}

/// `POST /settings/api-keys/session` (form field `token`, same-origin only): the registry spends
/// the token and creates the session; the cookie is set and the browser goes to the page (303).
/// A session this browser held before is signed out.
pub async fn sign_in(State(gateway): State<Gateway>, mut request: Request) -> Response {
    let Some(dashboard) = gateway.dashboard_for(&request) else {
        return super::not_here();
    };
    if let Err(why) = dashboard.check_same_origin(request.headers()) {
        tracing::info!(reason = "origin", "sign-in refused: {why}");
        return page(
            dashboard,
            StatusCode::FORBIDDEN,
            "Sign-in refused",
            &format!(
                "<p class=\"error\" role=\"alert\">This sign-in was not sent from this dashboard's own page ({}).</p><p>Nothing was used up: open the sign-in link again and press Continue.</p>",
                escape(&dashboard.sign_in.public_url.origin)
            ),
        );
    }
    let previous = dashboard.take_session_cookie(request.headers_mut());
    let request_id = request.headers().get(&crate::REQUEST_ID).cloned();
    let body = match axum::body::to_bytes(request.into_body(), MAX_FORM_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            return refused(
                dashboard,
                StatusCode::PAYLOAD_TOO_LARGE,
                "The sign-in form is larger than a sign-in token can be.",
            );
        }
    };
    let token = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if token.is_empty() {
        return refused(
            dashboard,
            StatusCode::BAD_REQUEST,
            "The sign-in form carried no token. Open the sign-in link again.",
        );
    }
    let created = match crate::rest::registry(&gateway)
        .create_session(crate::rest::with_request_id(
            pb::CreateSessionRequest { login_token: token },
            request_id.as_ref(),
        ))
        .await
    {
        Ok(created) => created.into_inner(),
        Err(status) => return session_refused(dashboard, &status),
    };
    if let Some(previous) = previous {
        // Replaced: the old session ends now rather than lingering until its expiry.
        let _ = crate::rest::registry(&gateway)
            .delete_session(crate::rest::with_request_id(
                pb::DeleteSessionRequest {
                    session_token: previous,
                },
                request_id.as_ref(),
            ))
            .await;
    }
    // Rounded to the nearest second: the session was created a moment ago, so its cookie lasts
    // the whole STANNA_SESSION_TTL rather than one second less.
    let max_age = created
        .session
        .as_ref()
        .and_then(|s| s.expires_at)
        .and_then(|t| {
            let end = std::time::UNIX_EPOCH
                + std::time::Duration::new(
                    u64::try_from(t.seconds).ok()?,
                    u32::try_from(t.nanos).ok()?,
                );
            Some(
                end.duration_since(std::time::SystemTime::now())
                    .unwrap_or_default()
                    .as_secs_f64()
                    .round() as u64,
            )
        })
        .unwrap_or(0);
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SEE_OTHER;
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, HeaderValue::from_static(BASE));
    headers.insert(
        header::SET_COOKIE,
        dashboard.cookie(&created.session_token, max_age),
    );
    dashboard.protect(&mut response);
    response
}

/// A registry refusal of CreateSession as a page that says what to do.
fn session_refused(dashboard: &Dashboard, status: &tonic::Status) -> Response {
    match status.code() {
        tonic::Code::InvalidArgument => {
            let reason = stanna_grpc::status::field_violation(status)
                .map_or_else(|| status.message().to_owned(), |(_, reason)| reason);
            refused(dashboard, StatusCode::BAD_REQUEST, &reason)
        }
        tonic::Code::FailedPrecondition
            if stanna_grpc::status::precondition_violation(status)
                .is_some_and(|(kind, _, _)| kind == "LOGIN_TOKEN_USED") =>
        {
            refused(
                dashboard,
                StatusCode::CONFLICT,
                "this sign-in link was used already (a sign-in link works once)",
            )
        }
        _ => {
            let error = crate::rest::from_registry(status.clone());
            let (code, _, _) = error.parts();
            let mut response = refused(
                dashboard,
                if code.is_server_error() {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    code
                },
                "Signing in is not possible right now. Try again in a moment.",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
    }
}

/// A refused sign-in: the reason as a sentence, and the way to a new link.
fn refused(dashboard: &Dashboard, status: StatusCode, reason: &str) -> Response {
    let reason = capitalise(reason);
    let reason = reason
        .split(": sign in again from the product")
        .next()
        .unwrap_or_default()
        .trim_end_matches('.');
    let body = format!(
        "<p class=\"error\" role=\"alert\">{}.</p><p>Open Settings → API Keys again from the product to get a new sign-in link.</p>",
        escape(reason)
    );
    page(dashboard, status, "Sign-in refused", &body)
}

/// A whole page around `body` (already escaped HTML).
fn page(dashboard: &Dashboard, status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Stanna</title><link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"{BASE}/app.css\"></head>\
         <body><main class=\"interstitial\"><h1>{title}</h1>{body}</main></body></html>",
        title = escape(title),
    );
    let mut response = Response::new(Body::from(html));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    dashboard.protect(&mut response);
    response
}

/// "Alice (auth0|123) in ws_demo", escaped.
fn who(login: &Login) -> String {
    let name = match &login.name {
        Some(name) => format!(
            "<strong>{}</strong> ({})",
            escape(name),
            escape(login.user.as_str())
        ),
        None => format!("<strong>{}</strong>", escape(login.user.as_str())),
    };
    format!(
        "{name} in workspace <strong>{}</strong>",
        escape(login.workspace.as_str())
    )
}

fn display<'a>(name: &'a str, user: &'a str) -> &'a str {
    if name.is_empty() { user } else { name }
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// HTML-escapes text for element content and double-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            super::escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
