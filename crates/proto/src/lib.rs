//! The `stanna.keys.v1` gRPC contract, generated from `proto/` at build time.
//!
//! Every service reaches the generated code as `stanna_proto::keys::v1::…` and never compiles protos
//! itself. [`FILE_DESCRIPTOR_SET`] feeds server reflection so grpcurl needs no `.proto` files.

/// The `stanna` protobuf namespace.
pub mod keys {
    /// Version 1 of the key API: KeyRegistry, AuthCheck and Quota with their messages.
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("stanna.keys.v1");
    }
}

/// The encoded `FileDescriptorSet` of every `stanna.keys.v1` file (and the well-known types they
/// import), for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/stanna_descriptor.bin"));

pub use prost_types;

/// Conversions from the domain types of `stanna-keys` to their messages, written once.
pub mod convert {
    use stanna_keys::RateLimits;

    use crate::keys::v1 as pb;

    /// A key's two windows as `RateLimit` messages, `burst` then `hourly`.
    pub fn rate_limits(limits: RateLimits) -> Vec<pb::RateLimit> {
        limits
            .named()
            .into_iter()
            .map(|(name, w)| pb::RateLimit {
                name: name.to_owned(),
                limit: w.limit(),
                period: prost_types::Duration::try_from(w.period()).ok(),
            })
            .collect()
    }

    /// A protobuf `Duration` as a `std` one; `None` when negative. Never panics, unlike
    /// prost-types' `TryFrom`, whose error path negates the seconds and overflows on `i64::MIN`
    /// in builds with overflow checks (found by the `rate_limit_headers` fuzz target).
    pub fn std_duration(d: prost_types::Duration) -> Option<std::time::Duration> {
        let d = d.normalized();
        // Normalised, `nanos` is below one second and has the sign of `seconds`.
        let seconds = u64::try_from(d.seconds).ok()?;
        let nanos = u32::try_from(d.nanos).ok()?;
        Some(std::time::Duration::new(seconds, nanos))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn std_duration_takes_what_is_positive_and_never_panics() {
            let d = |seconds, nanos| prost_types::Duration { seconds, nanos };
            assert_eq!(
                std_duration(d(3, 500)),
                Some(std::time::Duration::new(3, 500))
            );
            assert_eq!(
                std_duration(d(1, 1_500_000_000)),
                Some(std::time::Duration::new(2, 500_000_000))
            );
            for (seconds, nanos) in [
                (-1, 0),
                (0, -1),
                (i64::MIN, 0),
                (i64::MIN, -999_999_999),
                (i64::MIN, i32::MIN),
                (i64::MIN, i32::MAX),
            ] {
                assert_eq!(std_duration(d(seconds, nanos)), None, "{seconds} {nanos}");
            }
            assert!(std_duration(d(i64::MAX, i32::MAX)).is_some());
        }
    }
}
