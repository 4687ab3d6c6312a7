//! One table — gRPC status code → error kind → GraphQL `extensions.code` and HTTP status — as
//! exhaustive matches the compiler checks, and one renderer per transport: a GraphQL error
//! (`ApiError::extend`), a GraphQL-over-HTTP refusal (`graphql_refusal`), and `{"detail"}`
//! JSON (`detail_response`; REST's `rest::ErrorResponse` carries the same fields). Rules that
//! hold for every transport — a 503 says when to retry — live in `ApiError::retry_after`.

use async_graphql::ErrorExtensions;
use poem::{
    Response,
    http::{HeaderValue, StatusCode, header},
};
use tonic::Code;
use tonic_types::StatusExt;

/// The `google.rpc.ErrorInfo` domain of the identity service's errors.
const DOMAIN: &str = "identity.v1";
/// The `ErrorInfo` reason of a login refused for an unverified address.
const EMAIL_NOT_VERIFIED: &str = "EMAIL_NOT_VERIFIED";
/// The `ErrorInfo` reason of a sign-in whose provider could not be reached.
const PROVIDER_UNAVAILABLE: &str = "PROVIDER_UNAVAILABLE";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadUserInput,
    Unauthenticated,
    Forbidden,
    /// The right password for an address not yet verified, while verification is required.
    EmailNotVerified,
    NotFound,
    Conflict,
    TooManyRequests,
    ServiceUnavailable,
    Internal,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::BadUserInput,
        ErrorKind::Unauthenticated,
        ErrorKind::Forbidden,
        ErrorKind::EmailNotVerified,
        ErrorKind::NotFound,
        ErrorKind::Conflict,
        ErrorKind::TooManyRequests,
        ErrorKind::ServiceUnavailable,
        ErrorKind::Internal,
    ];

    /// The GraphQL `extensions.code` and the HTTP status of the kind.
    pub fn codes(self) -> (&'static str, StatusCode) {
        match self {
            ErrorKind::BadUserInput => ("BAD_USER_INPUT", StatusCode::BAD_REQUEST),
            ErrorKind::Unauthenticated => ("UNAUTHENTICATED", StatusCode::UNAUTHORIZED),
            ErrorKind::Forbidden => ("FORBIDDEN", StatusCode::FORBIDDEN),
            ErrorKind::EmailNotVerified => ("EMAIL_NOT_VERIFIED", StatusCode::FORBIDDEN),
            ErrorKind::NotFound => ("NOT_FOUND", StatusCode::NOT_FOUND),
            ErrorKind::Conflict => ("CONFLICT", StatusCode::CONFLICT),
            ErrorKind::TooManyRequests => ("TOO_MANY_REQUESTS", StatusCode::TOO_MANY_REQUESTS),
            ErrorKind::ServiceUnavailable => ("SERVICE_UNAVAILABLE", StatusCode::SERVICE_UNAVAILABLE),
            ErrorKind::Internal => ("INTERNAL_SERVER_ERROR", StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    pub fn graphql_code(self) -> &'static str {
        self.codes().0
    }

    pub fn http_status(self) -> StatusCode {
        self.codes().1
    }

    /// What an identity-service answer means to our clients, by its code and the
    /// `google.rpc.ErrorInfo` (reason, domain) it carries, if any. Codes the identity service
    /// never sends (and tonic's own failures) are internal, but for the ones that say "not now".
    fn from_grpc(code: Code, info: Option<(&str, &str)>) -> Self {
        match code {
            Code::FailedPrecondition if info == Some((EMAIL_NOT_VERIFIED, DOMAIN)) => ErrorKind::EmailNotVerified,
            Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => ErrorKind::BadUserInput,
            Code::Unauthenticated => ErrorKind::Unauthenticated,
            Code::PermissionDenied => ErrorKind::Forbidden,
            Code::NotFound => ErrorKind::NotFound,
            Code::AlreadyExists | Code::Aborted => ErrorKind::Conflict,
            Code::ResourceExhausted => ErrorKind::TooManyRequests,
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => ErrorKind::ServiceUnavailable,
            Code::Ok | Code::Unknown | Code::Unimplemented | Code::Internal | Code::DataLoss => ErrorKind::Internal,
        }
    }
}

/// An error as the facade reports it, whatever the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    /// Why a credential was refused (`SESSION_REVOKED`, `TOKEN_EXPIRED`, ...).
    pub reason: Option<String>,
    /// Bad fields and what is wrong with each.
    pub violations: Vec<(String, String)>,
    /// Seconds to wait before retrying (throttling).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError { kind, message: message.into(), reason: None, violations: Vec::new(), retry_after: None }
    }

    pub fn unauthenticated() -> Self {
        ApiError::new(ErrorKind::Unauthenticated, "authentication required")
    }

    pub fn internal() -> Self {
        ApiError::new(ErrorKind::Internal, "internal error")
    }

    pub fn bad_input(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError {
            violations: vec![(field.to_owned(), message.clone())],
            ..ApiError::new(ErrorKind::BadUserInput, format!("{field}: {message}"))
        }
    }

    /// Seconds a client should wait before trying again: the throttle's figure for a 429, one
    /// second for a 503; none for the rest.
    pub fn retry_after(&self) -> Option<u64> {
        match self.kind {
            ErrorKind::TooManyRequests => Some(self.retry_after.unwrap_or(1).max(1)),
            ErrorKind::ServiceUnavailable => Some(1),
            _ => None,
        }
    }

    /// `{"detail": ...}` with the kind's status and `Retry-After` when there is one.
    pub fn detail_response(&self) -> Response {
        let body = serde_json::json!({ "detail": self.message });
        self.with_retry_after(json_response(self.kind.http_status(), &body))
    }

    /// A GraphQL-over-HTTP request refused before GraphQL ran: an `errors` list and no `data`,
    /// with `status` (the kind's, or 200 where the media type asks for it) and `content_type`.
    pub fn graphql_refusal(&self, status: StatusCode, content_type: &'static str) -> Response {
        let body = serde_json::json!({
            "errors": [{"message": self.message, "extensions": {"code": self.kind.graphql_code()}}]
        });
        let response = Response::builder()
            .status(status)
            .content_type(content_type)
            .body(serde_json::to_vec(&body).unwrap_or_default());
        self.with_retry_after(response)
    }

    fn with_retry_after(&self, mut response: Response) -> Response {
        if let Some(seconds) = self.retry_after()
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// What poem refuses before any handler runs (no such route, a wrong method, a body that does
/// not parse), as `{"detail"}` JSON with poem's status; a route's own refusal as it was. The matched route, if any, stays with
/// the response (metrics label it by route).
pub fn poem_refusal(error: poem::Error) -> Response {
    // An error made from a response (a route's own `Err` answer, already rendered) keeps it.
    if !error.has_source() {
        return error.into_response();
    }
    let mut response = json_response(error.status(), &serde_json::json!({ "detail": error.to_string() }));
    if let Some(pattern) = error.data::<poem::PathPattern>() {
        response.set_data(pattern.clone());
    }
    response
}

/// A JSON body with `status` (for errors and answers alike).
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(serde_json::to_vec(body).unwrap_or_default())
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        let info = status.get_details_error_info();
        let kind = ErrorKind::from_grpc(status.code(), info.as_ref().map(|i| (i.reason.as_str(), i.domain.as_str())));
        let message = match kind {
            ErrorKind::Internal => {
                tracing::error!(code = ?status.code(), message = status.message(), "identity service error");
                "internal error".to_owned()
            }
            // A provider the identity service could not reach says so itself.
            ErrorKind::ServiceUnavailable
                if info.as_ref().is_some_and(|i| i.reason == PROVIDER_UNAVAILABLE && i.domain == DOMAIN) =>
            {
                status.message().to_owned()
            }
            ErrorKind::ServiceUnavailable => {
                tracing::warn!(code = ?status.code(), message = status.message(), "identity service unavailable");
                "the identity service is unavailable; retry later".to_owned()
            }
            // dj-rest-auth's words, for REST and GraphQL alike.
            ErrorKind::EmailNotVerified => "E-mail is not verified.".to_owned(),
            _ => status.message().to_owned(),
        };
        ApiError {
            kind,
            message,
            reason: info.map(|info| info.reason),
            violations: status
                .get_details_bad_request()
                .map(|bad| bad.field_violations.into_iter().map(|v| (v.field, v.description)).collect())
                .unwrap_or_default(),
            retry_after: status.get_details_retry_info().and_then(|info| info.retry_delay).map(|d| d.as_secs().max(1)),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl ErrorExtensions for ApiError {
    fn extend(&self) -> async_graphql::Error {
        async_graphql::Error::new(self.message.clone()).extend_with(|_, extensions| {
            extensions.set("code", self.kind.graphql_code());
            if let Some(reason) = &self.reason {
                extensions.set("reason", reason.as_str());
            }
            if !self.violations.is_empty() {
                let list: Vec<async_graphql::Value> = self
                    .violations
                    .iter()
                    .map(|(field, message)| {
                        let mut map = async_graphql::indexmap::IndexMap::new();
                        map.insert(async_graphql::Name::new("field"), async_graphql::Value::from(field.as_str()));
                        map.insert(async_graphql::Name::new("message"), async_graphql::Value::from(message.as_str()));
                        async_graphql::Value::Object(map)
                    })
                    .collect();
                extensions.set("fieldViolations", list);
            }
            if let Some(seconds) = self.retry_after() {
                extensions.set("retryAfter", seconds);
            }
        })
    }
}

/// `?` for resolvers: a gRPC failure becomes a GraphQL error with its extensions.
pub trait GraphqlResult<T> {
    fn graphql(self) -> async_graphql::Result<T>;
}

impl<T> GraphqlResult<T> for Result<T, ApiError> {
    fn graphql(self) -> async_graphql::Result<T> {
        self.map_err(|error| error.extend())
    }
}

impl<T> GraphqlResult<T> for Result<T, tonic::Status> {
    fn graphql(self) -> async_graphql::Result<T> {
        self.map_err(|status| ApiError::from(status).extend())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic_types::ErrorDetails;

    use super::*;

    #[test]
    fn every_grpc_code_has_one_graphql_code_and_http_status() {
        let cases = [
            (Code::InvalidArgument, "BAD_USER_INPUT", 400),
            (Code::Unauthenticated, "UNAUTHENTICATED", 401),
            (Code::FailedPrecondition, "BAD_USER_INPUT", 400),
            (Code::PermissionDenied, "FORBIDDEN", 403),
            (Code::NotFound, "NOT_FOUND", 404),
            (Code::AlreadyExists, "CONFLICT", 409),
            (Code::ResourceExhausted, "TOO_MANY_REQUESTS", 429),
            (Code::Unavailable, "SERVICE_UNAVAILABLE", 503),
            (Code::DeadlineExceeded, "SERVICE_UNAVAILABLE", 503),
            (Code::Internal, "INTERNAL_SERVER_ERROR", 500),
            (Code::Unknown, "INTERNAL_SERVER_ERROR", 500),
        ];
        for (code, graphql, http) in cases {
            let error = ApiError::from(tonic::Status::new(code, "x"));
            assert_eq!((error.kind.graphql_code(), error.kind.http_status().as_u16()), (graphql, http), "{code:?}");
        }
    }

    #[test]
    fn an_unverified_address_is_its_own_kind_only_with_the_identity_services_reason() {
        let refusal = |reason: &str, domain: &str| {
            let details = ErrorDetails::with_error_info(reason, domain, std::collections::HashMap::new());
            ApiError::from(tonic::Status::with_error_details(
                Code::FailedPrecondition,
                "email address not verified",
                details,
            ))
        };
        let error = refusal("EMAIL_NOT_VERIFIED", "identity.v1");
        assert_eq!((error.kind.graphql_code(), error.kind.http_status().as_u16()), ("EMAIL_NOT_VERIFIED", 403));
        assert_eq!(error.message, "E-mail is not verified.");
        assert_eq!(error.reason.as_deref(), Some("EMAIL_NOT_VERIFIED"));
        let rendered = error.extend().extensions.unwrap();
        assert_eq!(rendered.get("code"), Some(&async_graphql::Value::from("EMAIL_NOT_VERIFIED")));
        // Another reason, or the same word from another domain, is an ordinary precondition.
        for (reason, domain) in [("SOMETHING_ELSE", "identity.v1"), ("EMAIL_NOT_VERIFIED", "example.com")] {
            assert_eq!(refusal(reason, domain).kind, ErrorKind::BadUserInput, "{reason} {domain}");
        }
        assert!(ErrorKind::ALL.contains(&ErrorKind::EmailNotVerified));
    }

    #[test]
    fn internal_messages_do_not_leak() {
        let error = ApiError::from(tonic::Status::internal("SELECT password_hash FROM credentials"));
        assert_eq!(error.message, "internal error");
    }

    #[test]
    fn details_become_extensions() {
        let status = tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "slow down",
            ErrorDetails::with_retry_info(Some(Duration::from_secs(7))),
        );
        let error = ApiError::from(status).extend();
        let extensions = error.extensions.unwrap();
        assert_eq!(extensions.get("code"), Some(&async_graphql::Value::from("TOO_MANY_REQUESTS")));
        assert_eq!(extensions.get("retryAfter"), Some(&async_graphql::Value::from(7u64)));
    }

    #[test]
    fn every_http_rendering_of_a_503_says_when_to_retry() {
        let error = ApiError::new(ErrorKind::ServiceUnavailable, "down");
        for response in
            [error.detail_response(), error.graphql_refusal(StatusCode::SERVICE_UNAVAILABLE, "application/json")]
        {
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        }
        let throttled = ApiError { retry_after: Some(9), ..ApiError::new(ErrorKind::TooManyRequests, "slow") };
        assert_eq!(throttled.detail_response().headers()[header::RETRY_AFTER], "9");
        assert!(!ApiError::unauthenticated().detail_response().headers().contains_key(header::RETRY_AFTER));
    }
}
