//! Typed error details across gRPC. A field-level refusal is `INVALID_ARGUMENT` with a
//! `google.rpc.BadRequest` field violation, and a refused state change `FAILED_PRECONDITION` with a
//! `google.rpc.PreconditionFailure` violation; the message still names the field first
//! (`name: must not be empty`) for people reading grpcurl's output, but programs read the details
//! (the gateway maps the field to its REST name) and never parse the message.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `INVALID_ARGUMENT` naming `field` (as the request's proto names it, e.g. `rate_limits[1].period`)
/// with `reason`: message `"{field}: {reason}"` and a BadRequest field violation.
pub fn invalid_argument(field: &str, reason: &str) -> Status {
    Status::with_error_details(
        Code::InvalidArgument,
        format!("{field}: {reason}"),
        ErrorDetails::with_bad_request_violation(field, reason),
    )
}

/// The field and reason of an `INVALID_ARGUMENT` made by [`invalid_argument`] (the first
/// violation). A status without the BadRequest detail — from a service of the release before
/// typed details, during a rolling upgrade — is read from its message's leading field path
/// (`expires_at: …`), which that release always wrote; `None` if it has none either.
pub fn field_violation(status: &Status) -> Option<(String, String)> {
    if let Some(violation) = status
        .get_details_bad_request()
        .and_then(|details| details.field_violations.into_iter().next())
    {
        return Some((violation.field, violation.description));
    }
    if status.code() != Code::InvalidArgument {
        return None;
    }
    let (field, reason) = status.message().split_once(": ")?;
    let path = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']');
    let starts_well = field.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
    (starts_well && field.chars().all(path)).then(|| (field.to_owned(), reason.to_owned()))
}

/// `FAILED_PRECONDITION`: the request is valid but `subject`'s state forbids it; `kind` is a
/// SCREAMING_SNAKE_CASE reason (e.g. `ALREADY_ROTATED`) and the message is `"{subject}: {reason}"`.
pub fn failed_precondition(kind: &str, subject: &str, reason: &str) -> Status {
    Status::with_error_details(
        Code::FailedPrecondition,
        format!("{subject}: {reason}"),
        ErrorDetails::with_precondition_failure_violation(kind, subject, reason),
    )
}

/// The `(kind, subject, reason)` of a status made by [`failed_precondition`].
pub fn precondition_violation(status: &Status) -> Option<(String, String, String)> {
    let violation = status
        .get_details_precondition_failure()?
        .violations
        .into_iter()
        .next()?;
    Some((violation.r#type, violation.subject, violation.description))
}

/// The `google.rpc.ErrorInfo` reason of a refused scope escalation.
pub const SCOPE_ESCALATION: &str = "SCOPE_ESCALATION";
/// The `google.rpc.ErrorInfo` domain of Stanna's own reasons.
pub const DOMAIN: &str = "stanna.keys.v1";

/// `PERMISSION_DENIED` for a scoped caller that would manage a key beyond its scopes: an
/// `ErrorInfo` with reason [`SCOPE_ESCALATION`] and the scope at fault in its `scope` metadata
/// (`*` for "every permission").
pub fn scope_escalation(scope: &str, reason: &str) -> Status {
    let metadata = std::collections::HashMap::from([("scope".to_owned(), scope.to_owned())]);
    Status::with_error_details(
        Code::PermissionDenied,
        reason.to_owned(),
        ErrorDetails::with_error_info(SCOPE_ESCALATION, DOMAIN, metadata),
    )
}

/// The scope of a status made by [`scope_escalation`].
pub fn escalated_scope(status: &Status) -> Option<String> {
    let info = status.get_details_error_info()?;
    (info.reason == SCOPE_ESCALATION)
        .then(|| info.metadata.get("scope").cloned())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_travels_as_a_detail_and_leads_the_message() {
        let status = invalid_argument("rate_limits[1].period", "is required");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "rate_limits[1].period: is required");
        assert_eq!(
            field_violation(&status),
            Some(("rate_limits[1].period".into(), "is required".into()))
        );
        assert_eq!(
            field_violation(&Status::invalid_argument(
                "rate_limits[0].limit: must be positive"
            )),
            Some(("rate_limits[0].limit".into(), "must be positive".into())),
            "a detail-less status of the previous release is read from its message"
        );
        assert_eq!(
            field_violation(&Status::invalid_argument("the request is odd: really")),
            None
        );
        assert_eq!(field_violation(&Status::not_found("key_id: gone")), None);
    }

    #[test]
    fn a_precondition_names_its_kind_and_subject() {
        let status = failed_precondition("ALREADY_ROTATED", "key_id", "rotate AbC instead");
        assert_eq!(status.message(), "key_id: rotate AbC instead");
        assert_eq!(
            precondition_violation(&status),
            Some((
                "ALREADY_ROTATED".into(),
                "key_id".into(),
                "rotate AbC instead".into()
            ))
        );
    }
}
