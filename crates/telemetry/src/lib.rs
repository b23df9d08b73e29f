//! Telemetry for every Stanna process, set up once: logs, traces, metrics.
//!
//! - [`init`]: tracing-subscriber (text by default, JSON with `--log-format json` /
//!   `STANNA_LOG_FORMAT=json`, level from `RUST_LOG`) and, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) is set, a
//!   tracing-opentelemetry layer exporting OTLP over gRPC. Service name from `OTEL_SERVICE_NAME`
//!   or the process's own; sampler from `OTEL_TRACES_SAMPLER[_ARG]`; batch delay from
//!   `OTEL_BSP_SCHEDULE_DELAY`. [`Telemetry::shutdown`] flushes what is buffered.
//! - [`propagation`]: W3C `traceparent`/`tracestate` in and out of HTTP headers and gRPC
//!   metadata, and the tower layers that do it for every gRPC server and client.
//! - [`metrics`]: the Prometheus registry every service registers its own series in, and the
//!   `/metrics` listener.
//! - [`ErrorChain`]: how every error is logged, with its whole source chain.
//!
//! Cost when tracing is off: the request-path spans use the target [`SPAN_TARGET`], which the log
//! filter turns off, so with no exporter no subscriber is interested in them and `tracing`'s
//! callsite cache skips them without building anything. When tracing is on, the sampling decision
//! is made before the first span of a request exists ([`sampling`]), and the spans below it are
//! made with [`request_span!`], which builds nothing outside a span: an unsampled request on the
//! hot path builds no span at all.

mod error_chain;
mod log_limit;
pub mod metrics;
pub mod propagation;
pub mod sampling;

pub use error_chain::ErrorChain;
pub use log_limit::LogLimiter;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::FilterExt as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The target of the spans on the request path (gateway request, Verify, argon2, store queries,
/// quota decisions, Redis calls): exported as traces, never printed as logs.
pub const SPAN_TARGET: &str = "stanna_span";

/// A request-path span below a request's root: `tracing::info_span!` with [`SPAN_TARGET`], built
/// only when it could be recorded ([`sampling::in_request_span`]), else [`tracing::Span::none`].
///
/// ```
/// let span = stanna_telemetry::request_span!("quota.decide", allowed = tracing::field::Empty);
/// assert!(span.is_none(), "no request span is current here");
/// ```
#[macro_export]
macro_rules! request_span {
    ($name:expr $(, $($fields:tt)*)?) => {
        if $crate::sampling::in_request_span() {
            ::tracing::info_span!(target: $crate::SPAN_TARGET, $name $(, $($fields)*)?)
        } else {
            ::tracing::Span::none()
        }
    };
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// An `OTEL_*` variable holds something unusable; the message names it.
    #[error("{0}")]
    Setting(String),
    /// The OTLP exporter could not be built (a bad endpoint URL).
    #[error("OTLP exporter: {0}")]
    Exporter(String),
    /// A global subscriber was already installed.
    #[error("a tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Installed telemetry; call [`Telemetry::shutdown`] before exiting to flush buffered spans.
#[must_use = "call shutdown() before exiting, or buffered spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is buffered and stops the exporter (waits at most the exporter's timeout).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(err) = provider.shutdown()
        {
            eprintln!("flushing traces failed: {err}");
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Readable text (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Whether the environment asks for OTLP export, with the endpoint checked: an `http://` or
/// `https://` URL with a host.
fn otlp_requested() -> Result<bool, TelemetryError> {
    let mut requested = false;
    for name in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ] {
        let Ok(value) = std::env::var(name) else {
            continue;
        };
        if value.trim().is_empty() {
            continue;
        }
        let usable = url::Url::parse(value.trim()).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
        });
        if !usable {
            return Err(TelemetryError::Setting(format!(
                "{name} must be an http:// or https:// URL such as http://127.0.0.1:4317, got {value:?}"
            )));
        }
        requested = true;
    }
    Ok(requested)
}

/// Installs the global subscriber for the process named `service` (e.g. `stanna-gateway`).
/// Must run inside a Tokio runtime (the OTLP exporter's gRPC channel lives on it).
///
/// # Errors
/// [`TelemetryError`] for an unusable OTLP endpoint or sampler, or a second call.
pub fn init(service: &'static str, format: LogFormat) -> Result<Telemetry, TelemetryError> {
    let json = format == LogFormat::Json;
    // Logs: RUST_LOG (default info), never the request-path spans, and nothing of the redis
    // crate's own unless RUST_LOG names it: while a Redis Cluster is unreachable its client logs
    // every reconnect attempt (≈ 16 lines a second were seen), where the quota's health monitor
    // already reports the outage, rate-limited. `RUST_LOG=info,redis=warn` brings them back.
    let names_redis = std::env::var("RUST_LOG").is_ok_and(|filter| {
        filter.split(',').any(|directive| {
            let target = directive.trim().split(['=', '[']).next().unwrap_or("");
            target == "redis" || target.starts_with("redis::")
        })
    });
    let log_filter = || {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let filter = if names_redis {
            filter
        } else {
            filter.add_directive("redis=off".parse().expect("static directive"))
        };
        filter.add_directive(
            format!("{SPAN_TARGET}=off")
                .parse()
                .expect("static directive"),
        )
    };
    let logs = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_target(false)
            .with_filter(log_filter())
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_filter(log_filter())
            .boxed()
    };
    propagation::install_propagator();
    let export = otlp_requested()?;
    sampling::configure_from_env(export).map_err(TelemetryError::Setting)?;
    let (traces, provider) = if export {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        // The detectors read OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; without a name
        // there, the process's own.
        let mut resource = opentelemetry_sdk::Resource::builder();
        if std::env::var("OTEL_SERVICE_NAME").is_err() {
            resource = resource.with_service_name(service);
        }
        let resource = resource.build();
        // The ratio is applied by `sampling` before any span exists; whatever reaches the SDK is
        // meant to be exported.
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .with_sampler(sampling::sdk_sampler())
            .build();
        let tracer = provider.tracer("stanna");
        // Exported: the request-path spans, and warnings and errors from anywhere (as events on
        // the span they happen in). A static target filter: cheap to ask on every span.
        let filter = tracing_subscriber::filter::Targets::new()
            .with_target(SPAN_TARGET, tracing::Level::INFO)
            .with_default(tracing::Level::WARN);
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_error_records_to_exceptions(true)
            // Each of these allocates per span; the span names and attributes say enough.
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(filter.and(sampling::only_inside_sampled_requests()))
            .boxed();
        (Some(layer), Some(provider))
    } else {
        (None, None)
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(Telemetry { provider })
}
