//! Head sampling, decided before a request's first span exists, so an unsampled request costs a
//! random number and no span.
//!
//! The standard variables choose the rule: `OTEL_TRACES_SAMPLER` = `always_on`, `always_off`,
//! `traceidratio`, `parentbased_always_on` (the default), `parentbased_always_off` or
//! `parentbased_traceidratio`, with `OTEL_TRACES_SAMPLER_ARG` the ratio.
//!
//! - The gateway is the public edge: [`sampled_at_edge`] applies the rule's own decision to every
//!   request and ignores the sampled flag a client sends, so nobody on the internet can make us
//!   trace (and export) their requests. A sampled request still continues the caller's trace id.
//! - Internal gRPC servers use [`sampled`]: under a `parentbased_*` rule they follow the caller's
//!   flag. Every remote call carries a `traceparent` — an unsampled request gets one with the flag
//!   off ([`unsampled_traceparent`]) — so one request is traced in every process or in none.
//! - Spans below a root exist only inside a sampled root ([`only_inside_sampled_requests`]); work
//!   outside any request (background loops) is not traced.

use std::sync::OnceLock;

use http::HeaderMap;
use rand::RngExt as _;
use tracing_subscriber::filter::DynFilterFn;

use crate::SPAN_TARGET;

/// The names of the spans that start a request in a process.
pub const ROOT_SPANS: [&str; 2] = ["HTTP request", "grpc.server"];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Rule {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Sampling {
    rule: Rule,
    parent_based: bool,
}

static SAMPLING: OnceLock<Sampling> = OnceLock::new();

/// Reads `OTEL_TRACES_SAMPLER[_ARG]`; when `export` (traces are exported), from now on
/// [`sampled`] decides. Checked also when nothing is exported, so a mistyped sampler is refused
/// at start rather than found when tracing is switched on.
///
/// # Errors
/// A message naming the variable, for an unknown sampler or a ratio outside 0–1.
pub(crate) fn configure_from_env(export: bool) -> Result<(), String> {
    let name = std::env::var("OTEL_TRACES_SAMPLER").unwrap_or_default();
    let arg = std::env::var("OTEL_TRACES_SAMPLER_ARG").ok();
    let sampling = parse(&name, arg.as_deref())?;
    if export {
        let _ = SAMPLING.set(sampling);
    }
    Ok(())
}

/// The samplers this process knows (the specification's names for head sampling).
const SAMPLERS: &str = "always_on, always_off, traceidratio, parentbased_always_on, \
                        parentbased_always_off, parentbased_traceidratio";

fn parse(name: &str, arg: Option<&str>) -> Result<Sampling, String> {
    let ratio = || match arg.map(str::trim) {
        None | Some("") => Ok(Rule::Ratio(1.0)),
        Some(text) => text
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .map(Rule::Ratio)
            .ok_or_else(|| {
                format!(
                    "OTEL_TRACES_SAMPLER_ARG must be a ratio from 0 to 1 such as 0.01, got {text:?}"
                )
            }),
    };
    let (rule, parent_based) = match name.trim() {
        "always_on" => (Rule::AlwaysOn, false),
        "always_off" => (Rule::AlwaysOff, false),
        "traceidratio" => (ratio()?, false),
        "" | "parentbased_always_on" => (Rule::AlwaysOn, true),
        "parentbased_always_off" => (Rule::AlwaysOff, true),
        "parentbased_traceidratio" => (ratio()?, true),
        other => {
            return Err(format!(
                "OTEL_TRACES_SAMPLER {other:?} is not a sampler this process knows: use one of {SAMPLERS}"
            ));
        }
    };
    Ok(Sampling { rule, parent_based })
}

/// Whether a request carrying `headers` is traced by an internal server (parent-based rules follow
/// the caller). Always false when traces are not exported.
pub fn sampled(headers: &HeaderMap) -> bool {
    SAMPLING.get().is_some_and(|s| decide(*s, headers))
}

/// Whether a public request is traced: the rule's own decision, whatever the client's flag says.
/// Always false when traces are not exported.
pub fn sampled_at_edge() -> bool {
    SAMPLING.get().is_some_and(|s| decide_root(s.rule))
}

/// Whether traces are exported at all.
pub fn tracing_on() -> bool {
    SAMPLING.get().is_some()
}

/// The SDK's sampler: what reaches it was chosen here, so it samples everything — following the
/// parent's flag under a `parentbased_*` rule, as [`sampled`] did.
pub(crate) fn sdk_sampler() -> opentelemetry_sdk::trace::Sampler {
    use opentelemetry_sdk::trace::Sampler;
    match SAMPLING.get() {
        Some(s) if !s.parent_based => Sampler::AlwaysOn,
        _ => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
    }
}

/// A `traceparent` for a request that is not traced: fresh ids, sampled flag off, so the next
/// process's parent-based rule does not start a trace of its own.
pub fn unsampled_traceparent() -> String {
    let mut rng = rand::rng();
    let trace: u128 = rng.random::<u128>().max(1);
    let span: u64 = rng.random::<u64>().max(1);
    format!("00-{trace:032x}-{span:016x}-00")
}

fn decide(sampling: Sampling, headers: &HeaderMap) -> bool {
    if sampling.parent_based
        && let Some(flag) = traceparent_sampled(headers)
    {
        return flag;
    }
    decide_root(sampling.rule)
}

fn decide_root(rule: Rule) -> bool {
    match rule {
        Rule::AlwaysOn => true,
        Rule::AlwaysOff => false,
        Rule::Ratio(ratio) => rand::rng().random::<f64>() < ratio,
    }
}

/// The sampled flag of a `traceparent` valid by the W3C rules the propagator applies: lowercase
/// hex, non-zero ids, version `00` with exactly four fields (a later version may add fields).
fn traceparent_sampled(headers: &HeaderMap) -> Option<bool> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    let parts: Vec<&str> = value.trim().split('-').collect();
    let [version, trace, span, flags] =
        [parts.first()?, parts.get(1)?, parts.get(2)?, parts.get(3)?];
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let zero = |s: &str| s.bytes().all(|b| b == b'0');
    let valid = hex(version, 2)
        && *version != "ff"
        && (*version != "00" || parts.len() == 4)
        && hex(trace, 32)
        && !zero(trace)
        && hex(span, 16)
        && !zero(span)
        && hex(flags, 2);
    if !valid {
        return None;
    }
    u8::from_str_radix(flags, 16).ok().map(|f| f & 1 == 1)
}

/// Whether a request-path span made here could be recorded: traces are exported and some span is
/// current (in a sampled request, its root or a span inside it). [`request_span!`] asks this
/// before building anything, so an unsampled request costs no span.
///
/// Why not leave it to a filter: with per-layer filters, `tracing-subscriber`'s registry builds
/// (allocates, enters, closes) a span even when every layer's filter refused it, and a global
/// filter beside per-layer ones turns their cached "never" for other callsites into a check on
/// every call. Both were measured: 17.7 % and 7.0 % more instructions per request at 1 %
/// (`services/stanna/bench/telemetry_instructions.sh`).
///
/// [`request_span!`]: crate::request_span
#[inline]
pub fn in_request_span() -> bool {
    tracing_on() && tracing::dispatcher::get_default(|d| d.current_span().id().is_some())
}

/// The exporting layer's filter: a request-path span is recorded only when it is a request's
/// root or sits inside one (the root exists only when the request is sampled). The spans the hot
/// path makes never get here unsampled ([`in_request_span`]); this keeps the rest (the store's
/// `#[instrument]` spans on a cache miss, spans inside another crate's span) out of the export.
pub fn only_inside_sampled_requests<S>() -> DynFilterFn<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    DynFilterFn::new(|metadata, cx| {
        if !metadata.is_span() || metadata.target() != SPAN_TARGET {
            return true;
        }
        ROOT_SPANS.contains(&metadata.name()) || cx.lookup_current().is_some()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_traceparent(flags: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}")
                .parse()
                .unwrap(),
        );
        h
    }

    #[test]
    fn the_standard_sampler_names_parse() {
        assert_eq!(
            parse("", None),
            Ok(Sampling {
                rule: Rule::AlwaysOn,
                parent_based: true
            })
        );
        let rule = |name, arg| parse(name, arg).unwrap().rule;
        assert_eq!(rule("always_off", None), Rule::AlwaysOff);
        assert_eq!(rule("traceidratio", Some("0.01")), Rule::Ratio(0.01));
        assert_eq!(rule("traceidratio", None), Rule::Ratio(1.0));
        assert!(
            parse("parentbased_traceidratio", Some("0.5"))
                .unwrap()
                .parent_based
        );
    }

    #[test]
    fn an_unknown_sampler_or_a_bad_ratio_is_refused_naming_the_variable() {
        let unknown = parse("sometimes", None).unwrap_err();
        assert!(
            unknown.contains("OTEL_TRACES_SAMPLER") && unknown.contains("parentbased_always_on"),
            "{unknown}"
        );
        for bad in ["2", "-0.1", "half"] {
            let refused = parse("traceidratio", Some(bad)).unwrap_err();
            assert!(refused.contains("OTEL_TRACES_SAMPLER_ARG"), "{refused}");
        }
    }

    #[test]
    fn parent_based_rules_follow_the_callers_flag() {
        let never = Sampling {
            rule: Rule::AlwaysOff,
            parent_based: true,
        };
        assert!(decide(never, &with_traceparent("01")));
        let always = Sampling {
            rule: Rule::AlwaysOn,
            parent_based: true,
        };
        assert!(!decide(always, &with_traceparent("00")));
        assert!(
            decide(always, &HeaderMap::new()),
            "no parent: the rule decides"
        );
        let not_parent_based = Sampling {
            rule: Rule::AlwaysOff,
            parent_based: false,
        };
        assert!(!decide(not_parent_based, &with_traceparent("01")));
    }

    #[test]
    fn a_ratio_samples_about_that_share() {
        let tenth = Sampling {
            rule: Rule::Ratio(0.1),
            parent_based: false,
        };
        let n = (0..20_000)
            .filter(|_| decide(tenth, &HeaderMap::new()))
            .count();
        assert!((1_500..2_500).contains(&n), "{n} of 20000 at 10 %");
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "00-xyz-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let mut h = HeaderMap::new();
            h.insert("traceparent", bad.parse().unwrap());
            assert_eq!(traceparent_sampled(&h), None, "{bad}");
        }
    }

    #[test]
    fn an_unsampled_traceparent_is_valid_and_says_not_sampled() {
        let mut h = HeaderMap::new();
        h.insert("traceparent", unsampled_traceparent().parse().unwrap());
        assert_eq!(traceparent_sampled(&h), Some(false));
    }
}
