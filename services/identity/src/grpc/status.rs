//! The only conversion from domain errors to gRPC statuses (docs/identity-service.md, "The
//! API"). Handlers use `?`.

use identity_core::{CoreError, SocialError};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// The `google.rpc.ErrorInfo` domain of our errors.
pub const DOMAIN: &str = "identity.v1";

pub fn to_status(error: CoreError) -> Status {
    match error {
        CoreError::NotFound(_) => Status::not_found(error.to_string()),
        // The taken field travels as a field violation too, so that clients need not parse text.
        CoreError::AlreadyExists { field } => Status::with_error_details(
            Code::AlreadyExists,
            error.to_string(),
            ErrorDetails::with_bad_request(vec![FieldViolation::new(field, "is taken")]),
        ),
        CoreError::InvalidCredentials | CoreError::Unauthenticated => Status::unauthenticated(error.to_string()),
        CoreError::SessionDead(reason) => Status::with_error_details(
            Code::Unauthenticated,
            reason.message(),
            ErrorDetails::with_error_info(reason.code(), DOMAIN, std::collections::HashMap::new()),
        ),
        CoreError::Forbidden(message) => Status::permission_denied(message),
        CoreError::Throttled { retry_after, .. } => Status::with_error_details(
            Code::ResourceExhausted,
            error.to_string(),
            ErrorDetails::with_retry_info(Some(retry_after.max(std::time::Duration::from_secs(1)))),
        ),
        CoreError::Invalid(ref violations) => Status::with_error_details(
            Code::InvalidArgument,
            error.to_string(),
            ErrorDetails::with_bad_request(
                violations.iter().map(|v| FieldViolation::new(v.field, v.reason.clone())).collect::<Vec<_>>(),
            ),
        ),
        CoreError::Social(reason) => Status::with_error_details(
            social_code(reason),
            reason.message(),
            ErrorDetails::with_error_info(reason.code(), DOMAIN, std::collections::HashMap::new()),
        ),
        CoreError::Unavailable => Status::unavailable("the database is unavailable; retry later"),
        CoreError::Refused(_) => Status::failed_precondition(error.to_string()),
        CoreError::EmailNotVerified => Status::with_error_details(
            Code::FailedPrecondition,
            error.to_string(),
            ErrorDetails::with_error_info("EMAIL_NOT_VERIFIED", DOMAIN, std::collections::HashMap::new()),
        ),
        CoreError::KeyEncryption(cause) => {
            tracing::error!(%cause, "signing keys");
            Status::internal("internal error")
        }
        CoreError::Internal(cause) => {
            tracing::error!(%cause, "internal error");
            Status::internal("internal error")
        }
    }
}

fn social_code(reason: SocialError) -> Code {
    match reason {
        SocialError::StateInvalid | SocialError::CodeRejected | SocialError::TokenInvalid => Code::Unauthenticated,
        SocialError::EmailInUse | SocialError::EmailRequired | SocialError::LastLoginMethod => Code::FailedPrecondition,
        SocialError::LinkedElsewhere => Code::AlreadyExists,
        SocialError::ProviderUnavailable => Code::Unavailable,
    }
}

/// Lets handlers write `identity.call().await.map_err(to_status)?` as `?`.
pub trait IntoStatus<T> {
    fn status(self) -> Result<T, Status>;
}

impl<T> IntoStatus<T> for Result<T, CoreError> {
    fn status(self) -> Result<T, Status> {
        self.map_err(to_status)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use identity_core::DeadReason;

    use super::*;

    #[test]
    fn every_error_has_its_code() {
        let cases = [
            (CoreError::NotFound("user"), Code::NotFound),
            (CoreError::AlreadyExists { field: "username" }, Code::AlreadyExists),
            (CoreError::InvalidCredentials, Code::Unauthenticated),
            (CoreError::SessionDead(DeadReason::SessionRevoked), Code::Unauthenticated),
            (CoreError::Forbidden("no"), Code::PermissionDenied),
            (
                CoreError::Throttled { what: "failed logins", retry_after: Duration::from_secs(3) },
                Code::ResourceExhausted,
            ),
            (CoreError::EmailNotVerified, Code::FailedPrecondition),
            (CoreError::invalid("email", "bad"), Code::InvalidArgument),
            (CoreError::Unavailable, Code::Unavailable),
            (CoreError::Internal("SELECT secret".into()), Code::Internal),
        ];
        for (error, code) in cases {
            assert_eq!(to_status(error).code(), code);
        }
    }

    #[test]
    fn details_travel_with_the_status() {
        let status = to_status(CoreError::invalid("email", "must be a valid email address"));
        let violation = &status.get_details_bad_request().unwrap().field_violations[0];
        assert_eq!(violation.field, "email");
        let status = to_status(CoreError::Throttled { what: "failed logins", retry_after: Duration::from_secs(7) });
        assert_eq!(status.get_details_retry_info().unwrap().retry_delay, Some(Duration::from_secs(7)));
        let status = to_status(CoreError::AlreadyExists { field: "email" });
        assert_eq!(status.get_details_bad_request().unwrap().field_violations[0].field, "email");
        let status = to_status(CoreError::Internal("SELECT password_hash FROM credentials".into()));
        assert_eq!(status.message(), "internal error");
    }
}
