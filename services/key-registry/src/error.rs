//! The registry's errors and their one mapping to gRPC status codes.

use stanna_store::StoreError;
use tonic::{Code, Status};

/// Why a KeyRegistry call failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A request field is invalid; the message names the field.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The field as the protocol names it (`workspace_id`, `rate_limits[1].period`, …).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No such key visible to the request (also for another workspace's or user's key).
    #[error("key not found")]
    NotFound,
    /// The request is valid but the key's state forbids it (e.g. rotating a key rotated already).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The user holds `STANNA_MAX_KEYS_PER_USER` keys already.
    #[error(
        "the user already has {max} keys, the most allowed (STANNA_MAX_KEYS_PER_USER); delete one first"
    )]
    TooManyKeys {
        /// The configured maximum.
        max: u32,
    },
    /// The key store is unreachable.
    #[error("the key store is unavailable")]
    Unavailable(#[source] StoreError),
    /// A bug or an unexpected failure; details are logged, not returned.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl RegistryError {
    /// An invalid field with a reason.
    pub fn invalid(field: impl Into<String>, reason: impl ToString) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.to_string(),
        }
    }
}

impl From<StoreError> for RegistryError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => Self::NotFound,
            StoreError::TooManyKeys { max } => Self::TooManyKeys { max },
            StoreError::AlreadyRotated { replaced_by } => Self::FailedPrecondition(format!(
                "key_id: the key was already rotated; rotate its replacement {replaced_by} instead"
            )),
            StoreError::Unavailable(_) => Self::Unavailable(err),
            StoreError::DuplicateKeyId | StoreError::Database(_) | StoreError::Corrupt { .. } => {
                Self::Internal(Box::new(err))
            }
        }
    }
}

impl From<RegistryError> for Status {
    fn from(err: RegistryError) -> Self {
        match &err {
            RegistryError::InvalidArgument { .. } => {
                Status::new(Code::InvalidArgument, err.to_string())
            }
            RegistryError::NotFound => Status::new(Code::NotFound, err.to_string()),
            RegistryError::FailedPrecondition(_) => {
                Status::new(Code::FailedPrecondition, err.to_string())
            }
            RegistryError::TooManyKeys { .. } => {
                Status::new(Code::ResourceExhausted, err.to_string())
            }
            RegistryError::Unavailable(source) => {
                tracing::warn!(error = %error_chain(source), "key store unavailable");
                Status::new(
                    Code::Unavailable,
                    "the key store is unavailable; retry shortly",
                )
            }
            RegistryError::Internal(source) => {
                tracing::error!(error = %error_chain(source.as_ref()), "internal error");
                Status::new(Code::Internal, "internal error")
            }
        }
    }
}

/// An error and its sources on one line, for logs.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
