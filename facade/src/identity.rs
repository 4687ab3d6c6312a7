//! The gRPC client of the identity service: one channel opened at start, cloned per call
//! (cheap), with timeouts; tonic reconnects it by itself when the service comes back. The
//! calls every transport makes (Authenticate, Login) go through here, timed and counted.

use std::{sync::Arc, time::Duration};

use identity_proto::pb::{self, auth_service_client::AuthServiceClient, user_service_client::UserServiceClient};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::{
    error::{ApiError, ErrorKind},
    metrics::{LoginOutcome, Metrics},
};

/// The identity service's URL is not one a channel can be made for.
#[derive(Debug, thiserror::Error)]
#[error("not a gRPC endpoint URL: {0}")]
pub struct InvalidUrl(String);

#[derive(Clone, Debug)]
pub struct IdentityClient {
    channel: Channel,
    metrics: Arc<Metrics>,
}

impl IdentityClient {
    /// Connects lazily: the facade starts (and answers SERVICE_UNAVAILABLE) even while the
    /// identity service is down.
    pub fn new(url: &str, timeout: Duration, metrics: Arc<Metrics>) -> Result<Self, InvalidUrl> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|error| InvalidUrl(error.to_string()))?
            .connect_timeout(Duration::from_secs(2).min(timeout))
            .timeout(timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        Ok(IdentityClient { channel: endpoint.connect_lazy(), metrics })
    }

    pub fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel.clone())
    }

    pub fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel.clone())
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// `Authenticate`, timed.
    pub async fn authenticate(&self, request: pb::AuthenticateRequest) -> Result<pb::Principal, tonic::Status> {
        let started = std::time::Instant::now();
        let result = self.auth().authenticate(request).await;
        self.metrics.authenticate(result.is_ok(), started.elapsed());
        let principal = result?.into_inner().principal;
        principal.ok_or_else(|| tonic::Status::internal("Authenticate answered without a principal"))
    }

    /// `Login`, counted by outcome.
    pub async fn login(&self, request: tonic::Request<pb::LoginRequest>) -> Result<pb::LoginResponse, ApiError> {
        let result = self.auth().login(request).await.map(tonic::Response::into_inner).map_err(ApiError::from);
        self.metrics.login(match &result {
            Ok(_) => LoginOutcome::Succeeded,
            Err(error) => match error.kind {
                ErrorKind::TooManyRequests => LoginOutcome::Throttled,
                ErrorKind::ServiceUnavailable => LoginOutcome::Unavailable,
                _ => LoginOutcome::Failed,
            },
        });
        result
    }

    /// Whether the identity service answers and reports itself (and so its database) serving.
    pub async fn ready(&self) -> Result<(), ApiError> {
        let mut health = HealthClient::new(self.channel.clone());
        let response = health.check(HealthCheckRequest { service: String::new() }).await.map_err(|status| {
            tracing::warn!(code = ?status.code(), message = status.message(), "identity service health check failed");
            ApiError::new(ErrorKind::ServiceUnavailable, "the identity service is unreachable")
        })?;
        match response.into_inner().status() {
            ServingStatus::Serving => Ok(()),
            _ => Err(ApiError::new(
                ErrorKind::ServiceUnavailable,
                "the identity service is not serving (database down?)",
            )),
        }
    }
}
