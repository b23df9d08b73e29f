//! With export on, a request the sampler leaves out builds no span on the hot path, and other
//! crates' disabled events stay disabled (cached, no filter run per call): what tracing at 1 %
//! costs depends on both. `init` reads the environment and installs the global subscriber, so the
//! test runs itself again as a child process with the environment set.

use std::process::Command;

use stanna_telemetry::{SPAN_TARGET, request_span};

const TEST: &str = "spans_outside_a_sampled_request_are_not_built";

#[test]
fn spans_outside_a_sampled_request_are_not_built() {
    if std::env::var_os("STANNA_TELEMETRY_CHILD").is_none() {
        let output = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env("STANNA_TELEMETRY_CHILD", "1")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
            .env("OTEL_TRACES_SAMPLER", "always_off")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "the child must run this test and pass:\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();
    let telemetry =
        stanna_telemetry::init("stanna-test", stanna_telemetry::LogFormat::Text).unwrap();
    assert!(telemetry.exporting());
    assert!(!stanna_telemetry::sampling::sampled_at_edge());

    // Other crates' events below the log level stay off.
    assert!(!tracing::enabled!(target: "hyper_util::client::legacy::pool", tracing::Level::DEBUG));
    assert!(!tracing::enabled!(tracing::Level::INFO));
    assert!(tracing::enabled!(tracing::Level::WARN));

    // No request span current (an unsampled request): nothing is built.
    let verify = request_span!("verify", code = tracing::field::Empty);
    assert!(verify.is_disabled(), "a span below no root was built");
    assert!(!stanna_telemetry::sampling::in_request_span());

    // A root is built (the sampler decided before creating it), and so are the spans inside it.
    let root = tracing::info_span!(target: SPAN_TARGET, "HTTP request");
    assert!(!root.is_disabled());
    let in_root = root.enter();
    let child = request_span!("verify", code = 1);
    assert!(!child.is_disabled(), "a span inside a root is built");
    assert_eq!(child.metadata().unwrap().target(), SPAN_TARGET);
    let in_child = child.enter();
    assert!(!request_span!("quota.decide").is_disabled());
    drop(in_child);
    drop(in_root);
    drop((child, root));
    telemetry.shutdown();
}
