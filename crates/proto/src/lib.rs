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
}
