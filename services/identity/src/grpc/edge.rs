//! What the server does to every answer on its way out, whatever service gave it.
//!
//! - tonic refuses a request it cannot read before any handler runs: a message over
//!   `MAX_REQUEST_BYTES` (`OUT_OF_RANGE`) or bytes that are not the message (`INTERNAL`, as
//!   gRPC's own table says for a server that cannot parse). Both are the caller's fault here:
//!   they leave as `INVALID_ARGUMENT` with a `google.rpc.BadRequest` on the field `request`.
//! - An `UNAVAILABLE` answer means a call just found the database unreachable: health turns
//!   NOT_SERVING before that answer leaves, not at its next probe.

use std::{convert::Infallible, future::Future, pin::Pin, sync::Arc};

use tokio::sync::Mutex;
use tonic::{Code, Status, body::Body, codegen::http};
use tonic_health::{ServingStatus, server::HealthReporter};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};
use tower::util::AndThenLayer;

/// The largest request message accepted: far above what any RPC of the API needs (a login is
/// under 2 KiB with every field at its limit), far below tonic's default of 4 MiB.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// What gRPC health says of the database, for the server and each of its services: set by
/// the periodic probe and by any call that finds the database gone.
#[derive(Clone)]
pub struct DatabaseHealth {
    reporter: HealthReporter,
    services: &'static [&'static str],
    last: Arc<Mutex<Option<ServingStatus>>>,
}

impl DatabaseHealth {
    pub fn new(reporter: HealthReporter, services: &'static [&'static str]) -> Self {
        DatabaseHealth { reporter, services, last: Arc::default() }
    }

    /// Reports `status` for every service, if it changed.
    pub async fn report(&self, status: ServingStatus) {
        let mut last = self.last.lock().await;
        if *last == Some(status) {
            return;
        }
        if last.is_some() {
            tracing::warn!(?status, "database health changed");
        }
        for service in self.services {
            self.reporter.set_service_status(*service, status).await;
        }
        *last = Some(status);
    }
}

type Rewritten = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

/// The layer: rewrites unreadable requests' refusals, and reports outages to `health`.
pub fn layer(health: DatabaseHealth) -> AndThenLayer<impl FnOnce(http::Response<Body>) -> Rewritten + Clone> {
    AndThenLayer::new(move |response: http::Response<Body>| -> Rewritten {
        let health = health.clone();
        Box::pin(async move {
            let (response, outage) = rewrite(response);
            if outage {
                health.report(ServingStatus::NotServing).await;
            }
            Ok(response)
        })
    })
}

/// The response to send, and whether it reports the database unavailable.
fn rewrite(response: http::Response<Body>) -> (http::Response<Body>, bool) {
    // A handler's or tonic's refusal before any message is a trailers-only response: the status
    // travels in its headers (and tonic keeps the `Status` in its extensions).
    let status = match response.extensions().get::<Status>() {
        Some(status) => status.clone(),
        None => match Status::from_header_map(response.headers()) {
            Some(status) => status,
            None => return (response, false),
        },
    };
    match status.code() {
        Code::Unavailable => (response, true),
        Code::OutOfRange => {
            (invalid_request(&format!("the message is larger than {} KiB", MAX_REQUEST_BYTES / 1024)), false)
        }
        Code::Internal if is_unreadable(status.message()) => {
            (invalid_request("the message could not be decoded as this RPC's request"), false)
        }
        _ => (response, false),
    }
}

/// tonic's words for a request it could not read (its own handlers' internal errors say only
/// "internal error").
fn is_unreadable(message: &str) -> bool {
    ["failed to decode Protobuf message", "Missing request message", "protocol error"]
        .iter()
        .any(|prefix| message.starts_with(prefix))
}

fn invalid_request(reason: &str) -> http::Response<Body> {
    let details = ErrorDetails::with_bad_request(vec![FieldViolation::new("request", reason)]);
    Status::with_error_details(Code::InvalidArgument, format!("request: {reason}"), details).into_http()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(response: &http::Response<Body>) -> Code {
        Status::from_header_map(response.headers()).unwrap().code()
    }

    #[test]
    fn unreadable_requests_become_invalid_argument_and_outages_are_reported() {
        let oversized =
            Status::out_of_range("Error, decoded message length too large: found 1048583 bytes").into_http();
        let (rewritten, outage) = rewrite(oversized);
        let status = Status::from_header_map(rewritten.headers()).unwrap();
        assert_eq!((status.code(), outage), (Code::InvalidArgument, false));
        assert_eq!(status.get_details_bad_request().unwrap().field_violations[0].field, "request");

        let garbage = Status::internal("failed to decode Protobuf message: invalid wire type").into_http();
        assert_eq!(code(&rewrite(garbage).0), Code::InvalidArgument);

        let ours = Status::internal("internal error").into_http();
        assert_eq!(code(&rewrite(ours).0), Code::Internal);

        let (response, outage) = rewrite(Status::unavailable("the database is unavailable").into_http());
        assert_eq!((code(&response), outage), (Code::Unavailable, true));
    }
}
