//! The HTTP client the end-to-end tests call the gateway with (hyper-util's pooled client, the
//! same stack a Rust customer would use).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A plain-HTTP client with empty request bodies.
pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// A new client (its own connection pool).
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `GET url` with `key` as a bearer token: status, headers and body.
pub async fn get(client: &HttpClient, url: &str, key: &str) -> (u16, http::HeaderMap, Bytes) {
    let request = http::Request::get(url)
        .header("authorization", format!("Bearer {key}"))
        .body(Empty::new())
        .unwrap();
    let response = client.request(request).await.expect("HTTP request");
    let status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    (
        status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

/// `METHOD url` with `headers` and a body: status, headers and body (a client of its own).
pub async fn request(
    method: http::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, http::HeaderMap, Bytes) {
    let client: Client<HttpConnector, http_body_util::Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut builder = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder
        .body(http_body_util::Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = client.request(request).await.expect("HTTP request");
    let status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    (
        status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}
