//! The reverse proxy to `STANNA_UPSTREAM_URL`: every path that is not the key API.
//!
//! Bodies stream both ways (the request body is handed to the upstream connection as it arrives,
//! the upstream's body to the client likewise); nothing is buffered whole. The upstream client is
//! hyper-util's pooled client behind tower's timeout, which bounds the time until the upstream's
//! response head (a long download is not cut off).

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;
use tracing::Instrument as _;

use crate::Gateway;
use crate::auth::Caller;
use crate::config::UpstreamUrl;
use crate::error::ApiError;

const WORKSPACE_ID: HeaderName = HeaderName::from_static("x-stanna-workspace-id");
const USER_ID: HeaderName = HeaderName::from_static("x-stanna-user-id");
const KEY_ID: HeaderName = HeaderName::from_static("x-stanna-key-id");
const SCOPES: HeaderName = HeaderName::from_static("x-stanna-scopes");
const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// The pooled upstream client with its deadline: plain HTTP or TLS, as the URL says.
type UpstreamClient =
    tower::timeout::Timeout<Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>>;

/// Where allowed public traffic goes, and the pooled client that takes it there.
#[derive(Clone)]
pub struct Upstream {
    /// Base URL.
    url: UpstreamUrl,
    /// Keep-alive connections are reused across requests (one pool per gateway).
    client: UpstreamClient,
    /// `x-forwarded-proto` and `Forwarded: proto=`: how the client reached us.
    client_proto: &'static str,
}

/// What an `https://` upstream is trusted by: Mozilla's roots (webpki-roots), or only the CA
/// certificates of `STANNA_UPSTREAM_CA_FILE` (PEM).
#[derive(Debug, Clone, Default)]
pub enum UpstreamTrust {
    /// Mozilla's root program, compiled in.
    #[default]
    WebPki,
    /// These CA certificates (DER) only.
    Ca(Vec<rustls_pki_types::CertificateDer<'static>>),
}

impl UpstreamTrust {
    /// The CA certificates of `path` (PEM).
    ///
    /// # Errors
    /// A message naming `STANNA_UPSTREAM_CA_FILE` and the file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, String> {
        use rustls_pki_types::pem::PemObject as _;
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                format!(
                    "STANNA_UPSTREAM_CA_FILE: {} holds no usable PEM certificate: {e}",
                    path.display()
                )
            })?;
        if certs.is_empty() {
            return Err(format!(
                "STANNA_UPSTREAM_CA_FILE: {} holds no PEM certificate",
                path.display()
            ));
        }
        Ok(Self::Ca(certs))
    }

    fn roots(&self) -> Result<rustls::RootCertStore, String> {
        let mut roots = rustls::RootCertStore::empty();
        match self {
            Self::WebPki => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Self::Ca(certs) => {
                for cert in certs {
                    roots.add(cert.clone()).map_err(|e| {
                        format!("STANNA_UPSTREAM_CA_FILE: a certificate is not a usable CA: {e}")
                    })?;
                }
            }
        }
        Ok(roots)
    }
}

impl Upstream {
    /// A client for `url` whose responses must start within `timeout`; an `https://` URL is
    /// reached over TLS trusting `trust`. `client_tls` says whether clients reach the gateway
    /// over TLS (for `X-Forwarded-Proto`).
    ///
    /// # Errors
    /// A message naming `STANNA_UPSTREAM_CA_FILE` when its certificates are unusable.
    pub fn new(
        url: UpstreamUrl,
        timeout: Duration,
        trust: &UpstreamTrust,
        client_tls: bool,
    ) -> Result<Self, String> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout.min(Duration::from_secs(5))));
        // The https connector passes http:// through untouched; hyper-util's connector must be
        // told to hand https:// on rather than refuse it.
        connector.enforce_http(false);
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_root_certificates(trust.roots()?)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Self {
            url,
            client: tower::timeout::Timeout::new(client, timeout),
            client_proto: if client_tls { "https" } else { "http" },
        })
    }
}

/// The fallback handler: forwards to the upstream, or 404 when there is none.
pub async fn forward(State(gateway): State<Gateway>, request: Request) -> Response {
    let Some(upstream) = gateway.inner.upstream.as_ref() else {
        return ApiError::NotFound(format!(
            "no route for {} {} (and no upstream is configured)",
            request.method(),
            request.uri().path()
        ))
        .into_response();
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > gateway.inner.limits.max_body_bytes) {
        // Streamed bodies without a length are cut at the same size by the serving layer.
        return ApiError::PayloadTooLarge.into_response();
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let (mut parts, body) = request.into_parts();
    let caller = parts.extensions.remove::<Caller>();
    // A dashboard session is never an upstream credential (the authentication layer admits it
    // only on the key API's routes; this holds even if a route there falls through).
    if caller
        .as_ref()
        .is_some_and(|c| !matches!(c.kind, crate::auth::CallerKind::ApiKey))
    {
        return ApiError::NotFound(format!("no route for {}", parts.uri.path())).into_response();
    }
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri: Uri = match upstream.url.join(path_and_query) {
        Ok(uri) => uri,
        Err(err) => {
            tracing::error!(error = %stanna_telemetry::ErrorChain(&err), "cannot build the upstream URI");
            return ApiError::Internal.into_response();
        }
    };
    let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let headers = &mut parts.headers;
    remove_hop_by_hop(headers);
    // The client sets Host from the upstream URI; the original travels as X-Forwarded-Host.
    headers.remove(header::HOST);
    if let Some(ip) = peer {
        append_forwarding(headers, ip, original_host.as_ref(), upstream.client_proto);
    }
    if let Some(host) = original_host {
        headers.insert(FORWARDED_HOST, host);
    }
    headers.insert(
        FORWARDED_PROTO,
        HeaderValue::from_static(upstream.client_proto),
    );
    if let Some(caller) = caller {
        insert_identity(headers, &caller);
    }
    parts.uri = uri;
    // The pooled client speaks HTTP/1.1 to the upstream whatever the client spoke to us.
    parts.version = Version::HTTP_11;
    let outgoing = Request::from_parts(parts, body);

    let span = stanna_telemetry::request_span!(
        "upstream",
        otel.kind = "client",
        http.response.status_code = tracing::field::Empty,
    );
    let mut outgoing = outgoing;
    {
        // The upstream continues this trace; an untraced request's traceparent says so.
        let _entered = span.enter();
        stanna_telemetry::propagation::inject_for_upstream(outgoing.headers_mut());
    }
    let started = std::time::Instant::now();
    let answer = upstream
        .client
        .clone()
        .oneshot(outgoing)
        .instrument(span.clone())
        .await;
    gateway.inner.metrics.upstream(started.elapsed());
    if let Ok(response) = &answer {
        span.record("http.response.status_code", response.status().as_u16());
    }
    match answer {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            remove_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Err(err) if err.is::<tower::timeout::error::Elapsed>() => {
            static SLOW: stanna_telemetry::LogLimiter =
                stanna_telemetry::LogLimiter::new(Duration::from_secs(10));
            if let Some(held_back) = SLOW.allow() {
                tracing::warn!(held_back, "upstream did not answer in time");
            }
            ApiError::GatewayTimeout.into_response()
        }
        Err(err) => {
            static FAILED: stanna_telemetry::LogLimiter =
                stanna_telemetry::LogLimiter::new(Duration::from_secs(10));
            if let Some(held_back) = FAILED.allow() {
                tracing::warn!(error = %stanna_telemetry::ErrorChain(err.as_ref()), held_back, "upstream request failed");
            }
            ApiError::BadGateway.into_response()
        }
    }
}

/// The verified identity, for the upstream to trust (client-sent copies were removed).
fn insert_identity(headers: &mut HeaderMap, caller: &Caller) {
    for (name, value) in [
        (WORKSPACE_ID, &caller.workspace_id),
        (USER_ID, &caller.user_id),
        (KEY_ID, &caller.key_id),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    // `*`: the key has its user's full permissions; else its scopes, space-separated (scope
    // names are plain header text by their syntax). Only scoped keys cost an allocation here.
    let scopes = if caller.scopes.is_empty() {
        HeaderValue::from_static("*")
    } else {
        HeaderValue::from_str(&caller.scopes.join(" ")).unwrap_or(HeaderValue::from_static(""))
    };
    headers.insert(SCOPES, scopes);
}

/// Appends this hop to `X-Forwarded-For` and to RFC 7239 `Forwarded` (the client's own entries,
/// from every line, are kept, never trusted) and sets `X-Real-IP` to the peer (a client-sent one
/// is replaced). Our `Forwarded` element is the last: `for=` the peer, `proto=http`, `host=` the
/// host the client asked for.
///
/// The three values are slices of one buffer and the peer is formatted once: this runs on every
/// proxied request (a `String` per header cost ≈ 2 300 instructions per request under callgrind).
fn append_forwarding(
    headers: &mut HeaderMap,
    ip: std::net::IpAddr,
    host: Option<&HeaderValue>,
    proto: &str,
) {
    // An IPv4 client of a dual-stack listener arrives as `::ffff:a.b.c.d`: name it as IPv4.
    let ip = ip.to_canonical();
    let mut peer = [0u8; 48];
    let peer_len = {
        let mut cursor = std::io::Cursor::new(&mut peer[..]);
        // An IPv6 address is at most 45 characters: this cannot fail.
        let _ = std::io::Write::write_fmt(&mut cursor, format_args!("{ip}"));
        usize::try_from(cursor.position()).unwrap_or(0)
    };
    let peer = &peer[..peer_len];
    let mut buf = BytesMut::with_capacity(160);
    append_lines(&mut buf, headers, &FORWARDED_FOR);
    let real_ip = buf.len();
    buf.extend_from_slice(peer);
    let forwarded_for = buf.len();
    append_lines(&mut buf, headers, &FORWARDED);
    if ip.is_ipv6() {
        // An IPv6 node is quoted and bracketed (RFC 7239 §6).
        buf.extend_from_slice(b"for=\"[");
        buf.extend_from_slice(peer);
        buf.extend_from_slice(b"]\"");
    } else {
        buf.extend_from_slice(b"for=");
        buf.extend_from_slice(peer);
    }
    buf.extend_from_slice(b";proto=");
    buf.extend_from_slice(proto.as_bytes());
    if let Some(host) = host.map(HeaderValue::as_bytes)
        && !host.is_empty()
        && host
            .iter()
            .all(|b| b.is_ascii_graphic() && *b != b'"' && *b != b'\\')
    {
        // A quoted string: a host with a port has a colon, which a token may not.
        buf.extend_from_slice(b";host=\"");
        buf.extend_from_slice(host);
        buf.extend_from_slice(b"\"");
    }
    let buf = buf.freeze();
    for (name, range) in [
        (REAL_IP, real_ip..forwarded_for),
        (FORWARDED_FOR, 0..forwarded_for),
        (FORWARDED, forwarded_for..buf.len()),
    ] {
        if let Ok(value) = HeaderValue::from_maybe_shared(buf.slice(range)) {
            headers.insert(name, value);
        }
    }
}

/// The client's non-empty `name` lines, trimmed, each followed by `, `. A line with an
/// unterminated quoted string is dropped: it would swallow the element we append after it.
fn append_lines(buf: &mut BytesMut, headers: &HeaderMap, name: &HeaderName) {
    for line in headers.get_all(name) {
        if let Ok(text) = line.to_str()
            && !text.trim().is_empty()
            && quotes_balanced(text.as_bytes())
        {
            buf.extend_from_slice(text.trim().as_bytes());
            buf.extend_from_slice(b", ");
        }
    }
}

/// Whether every quoted string in `text` is closed (a backslash escapes the next byte).
fn quotes_balanced(text: &[u8]) -> bool {
    let (mut quoted, mut escaped) = (false, false);
    for &b in text {
        match (escaped, b) {
            (true, _) => escaped = false,
            (false, b'\\') if quoted => escaped = true,
            (false, b'"') => quoted = !quoted,
            _ => {}
        }
    }
    !quoted
}

/// Removes the hop-by-hop headers of RFC 9110 §7.6.1, including any the `Connection` header
/// names.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names (cheap comparisons) instead of nine
    // hashed lookups. A header named by `Connection` needs `Connection` itself, so it is seen.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
}

/// One of the fixed hop-by-hop names (RFC 9110 §7.6.1, plus `keep-alive` and `proxy-connection`).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::TE
        || name == header::TRAILER
        || name == header::UPGRADE
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn each_hop_by_hop_header_alone_is_removed() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "proxy-connection",
        ] {
            let mut h = HeaderMap::new();
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            remove_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name} kept: {h:?}");
        }
    }

    #[test]
    fn this_hop_is_appended_to_forwarded() {
        let mut h = HeaderMap::new();
        let host = HeaderValue::from_static("api.example.com:8080");
        append_forwarding(&mut h, [10, 0, 0, 1].into(), Some(&host), "http");
        assert_eq!(
            h[&FORWARDED],
            "for=10.0.0.1;proto=http;host=\"api.example.com:8080\""
        );
        h.insert(&FORWARDED, HeaderValue::from_static("for=1.2.3.4"));
        h.append(
            &FORWARDED,
            HeaderValue::from_static("for=5.6.7.8;proto=https"),
        );
        append_forwarding(&mut h, "2001:db8::1".parse().unwrap(), None, "http");
        assert_eq!(
            h[&FORWARDED],
            "for=1.2.3.4, for=5.6.7.8;proto=https, for=\"[2001:db8::1]\";proto=http"
        );
        assert_eq!(h.get_all(&FORWARDED).iter().count(), 1);
        assert_eq!(h[&REAL_IP], "2001:db8::1", "X-Real-IP unbracketed");
        // A client's unterminated quote cannot swallow our element; a mapped IPv4 peer is IPv4.
        let mut h = HeaderMap::new();
        h.insert(&FORWARDED, HeaderValue::from_static("for=\"x"));
        h.insert(&FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        append_forwarding(&mut h, "::ffff:10.0.0.1".parse().unwrap(), None, "http");
        assert_eq!(h[&FORWARDED], "for=10.0.0.1;proto=http");
        assert_eq!(h[&FORWARDED_FOR], "1.2.3.4, 10.0.0.1");
        assert!(quotes_balanced(br#"for="[2001:db8::1]";host="a\"b""#));
        // A host that cannot be a quoted string is left out rather than breaking the element.
        let mut h = HeaderMap::new();
        let host = HeaderValue::from_static("evil\"host");
        append_forwarding(&mut h, [10, 0, 0, 1].into(), Some(&host), "http");
        assert_eq!(h[&FORWARDED], "for=10.0.0.1;proto=http");
    }

    #[test]
    fn the_peer_is_appended_to_x_forwarded_for() {
        let mut h = HeaderMap::new();
        append_forwarding(&mut h, [10, 0, 0, 1].into(), None, "http");
        assert_eq!(h[&FORWARDED_FOR], "10.0.0.1");
        h.insert(&FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        h.append(&FORWARDED_FOR, HeaderValue::from_static("5.6.7.8"));
        h.insert(&REAL_IP, HeaderValue::from_static("6.6.6.6"));
        append_forwarding(&mut h, [10, 0, 0, 1].into(), None, "http");
        assert_eq!(h[&FORWARDED_FOR], "1.2.3.4, 5.6.7.8, 10.0.0.1");
        assert_eq!(h.get_all(&FORWARDED_FOR).iter().count(), 1);
        assert_eq!(h[&REAL_IP], "10.0.0.1");
    }
}
