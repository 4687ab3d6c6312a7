//! One table: gRPC status code -> GraphQL `extensions.code` -> HTTP status, side by side. The
//! GraphQL layer and the HTTP layers both read it; nothing else maps errors.

use async_graphql::ErrorExtensions;
use poem::http::StatusCode;
use tonic::Code;
use tonic_types::StatusExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadUserInput,
    Unauthenticated,
    Forbidden,
    NotFound,
    Conflict,
    TooManyRequests,
    ServiceUnavailable,
    Internal,
}

/// gRPC code, the kind it becomes, its GraphQL code, its HTTP status.
const TABLE: &[(Code, ErrorKind, &str, StatusCode)] = &[
    (Code::InvalidArgument, ErrorKind::BadUserInput, "BAD_USER_INPUT", StatusCode::BAD_REQUEST),
    (Code::Unauthenticated, ErrorKind::Unauthenticated, "UNAUTHENTICATED", StatusCode::UNAUTHORIZED),
    (Code::PermissionDenied, ErrorKind::Forbidden, "FORBIDDEN", StatusCode::FORBIDDEN),
    (Code::NotFound, ErrorKind::NotFound, "NOT_FOUND", StatusCode::NOT_FOUND),
    (Code::AlreadyExists, ErrorKind::Conflict, "CONFLICT", StatusCode::CONFLICT),
    (Code::ResourceExhausted, ErrorKind::TooManyRequests, "TOO_MANY_REQUESTS", StatusCode::TOO_MANY_REQUESTS),
    (Code::Unavailable, ErrorKind::ServiceUnavailable, "SERVICE_UNAVAILABLE", StatusCode::SERVICE_UNAVAILABLE),
    (Code::DeadlineExceeded, ErrorKind::ServiceUnavailable, "SERVICE_UNAVAILABLE", StatusCode::SERVICE_UNAVAILABLE),
    (Code::Cancelled, ErrorKind::ServiceUnavailable, "SERVICE_UNAVAILABLE", StatusCode::SERVICE_UNAVAILABLE),
    (Code::Internal, ErrorKind::Internal, "INTERNAL_SERVER_ERROR", StatusCode::INTERNAL_SERVER_ERROR),
];

impl ErrorKind {
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::BadUserInput,
        ErrorKind::Unauthenticated,
        ErrorKind::Forbidden,
        ErrorKind::NotFound,
        ErrorKind::Conflict,
        ErrorKind::TooManyRequests,
        ErrorKind::ServiceUnavailable,
        ErrorKind::Internal,
    ];

    fn row(self) -> (&'static str, StatusCode) {
        TABLE
            .iter()
            .find(|(_, kind, _, _)| *kind == self)
            .map(|(_, _, code, status)| (*code, *status))
            .unwrap_or(("INTERNAL_SERVER_ERROR", StatusCode::INTERNAL_SERVER_ERROR))
    }

    pub fn graphql_code(self) -> &'static str {
        self.row().0
    }

    pub fn http_status(self) -> StatusCode {
        self.row().1
    }

    fn from_grpc(code: Code) -> Self {
        TABLE.iter().find(|(grpc, ..)| *grpc == code).map(|(_, kind, ..)| *kind).unwrap_or(ErrorKind::Internal)
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

    pub fn bad_input(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError {
            violations: vec![(field.to_owned(), message.clone())],
            ..ApiError::new(ErrorKind::BadUserInput, format!("{field}: {message}"))
        }
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        let kind = ErrorKind::from_grpc(status.code());
        let message = match kind {
            ErrorKind::Internal => {
                tracing::error!(code = ?status.code(), message = status.message(), "identity service error");
                "internal error".to_owned()
            }
            ErrorKind::ServiceUnavailable => {
                tracing::warn!(code = ?status.code(), message = status.message(), "identity service unavailable");
                "the identity service is unavailable; retry later".to_owned()
            }
            _ => status.message().to_owned(),
        };
        ApiError {
            kind,
            message,
            reason: status.get_details_error_info().map(|info| info.reason),
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
            if let Some(seconds) = self.retry_after {
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
            (Code::PermissionDenied, "FORBIDDEN", 403),
            (Code::NotFound, "NOT_FOUND", 404),
            (Code::AlreadyExists, "CONFLICT", 409),
            (Code::ResourceExhausted, "TOO_MANY_REQUESTS", 429),
            (Code::Unavailable, "SERVICE_UNAVAILABLE", 503),
            (Code::Internal, "INTERNAL_SERVER_ERROR", 500),
            (Code::Unknown, "INTERNAL_SERVER_ERROR", 500),
        ];
        for (code, graphql, http) in cases {
            let error = ApiError::from(tonic::Status::new(code, "x"));
            assert_eq!((error.kind.graphql_code(), error.kind.http_status().as_u16()), (graphql, http), "{code:?}");
        }
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
}
