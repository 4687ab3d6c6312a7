//! The gRPC client of the identity service: one channel opened at start, cloned per call
//! (cheap), with timeouts; tonic reconnects it by itself when the service comes back.

use std::time::Duration;

use identity_proto::pb::{auth_service_client::AuthServiceClient, user_service_client::UserServiceClient};
use tonic::transport::{Channel, Endpoint};

use crate::config::ConfigError;

#[derive(Clone, Debug)]
pub struct IdentityClient {
    channel: Channel,
}

impl IdentityClient {
    /// Connects lazily: the facade starts (and answers SERVICE_UNAVAILABLE) even while the
    /// identity service is down.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, ConfigError> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|error| ConfigError(format!("FACADE_IDENTITY_URL: {error}")))?
            .connect_timeout(Duration::from_secs(2).min(timeout))
            .timeout(timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        Ok(IdentityClient { channel: endpoint.connect_lazy() })
    }

    pub fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel.clone())
    }

    pub fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel.clone())
    }
}
