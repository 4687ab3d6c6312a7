//! The gRPC client of the identity service: one channel per replica opened at start, cloned
//! per call (cheap), with timeouts; tonic reconnects each by itself when its replica comes
//! back. The calls every transport makes (Authenticate, Login) go through here, timed and
//! counted.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use identity_proto::pb::{
    self, account_service_client::AccountServiceClient, auth_service_client::AuthServiceClient,
    social_service_client::SocialServiceClient, user_service_client::UserServiceClient,
};
use tonic::{
    codegen::http,
    transport::{Channel, ClientTlsConfig, Endpoint},
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::{
    error::{ApiError, ErrorKind},
    metrics::{LoginOutcome, Metrics},
};

/// The identity service's URL is not one a channel can be made for.
#[derive(Debug, thiserror::Error)]
#[error("not a gRPC endpoint URL: {0}")]
pub struct InvalidUrl(String);

/// How long a replica that could not be reached is passed over while others answer.
const PASS_OVER: Duration = Duration::from_secs(1);

/// One identity-service replica.
#[derive(Debug)]
struct Upstream {
    url: String,
    /// One per HTTP/2 connection (`FACADE_IDENTITY_CONNECTIONS`), taken round-robin.
    channels: Vec<Channel>,
    next: AtomicUsize,
    /// Milliseconds (since `IdentityClient::epoch`) until which it is passed over.
    down_until: AtomicU64,
}

/// The identity service, one replica or several (`FACADE_IDENTITY_URL` is a comma-separated
/// list). Calls go round-robin over the replicas that answer: one that could not be reached is
/// passed over for a second while others are up, then tried again; `Authenticate` (safe to
/// repeat) is retried once on another replica.
#[derive(Clone, Debug)]
pub struct IdentityClient {
    upstreams: Arc<Vec<Upstream>>,
    next: Arc<AtomicUsize>,
    epoch: std::time::Instant,
    metrics: Arc<Metrics>,
}

impl Upstream {
    /// The next of its connections, round-robin.
    fn channel(&self) -> Channel {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        self.channels[index].clone()
    }
}

/// A channel over the Unix socket at `path`, with `endpoint`'s timeouts; connected lazily
/// (and again after the identity service restarts), as a TCP channel is.
fn unix_channel(endpoint: &Endpoint, path: std::path::PathBuf) -> Channel {
    endpoint.connect_with_connector_lazy(tower::service_fn(move |_: tonic::transport::Uri| {
        let path = path.clone();
        async move { Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
    }))
}

impl IdentityClient {
    /// Connects lazily: the facade starts (and answers SERVICE_UNAVAILABLE) even while the
    /// identity service is down. `https://` URLs speak TLS as `tls` says; an `https://` URL
    /// without it is refused, never spoken in plaintext. `unix:///path` is the identity
    /// service's Unix socket (`IDENTITY_GRPC_UDS`) on this host. `connections` HTTP/2
    /// connections are made to each.
    pub fn new(
        urls: &[String],
        connections: usize,
        timeout: Duration,
        tls: Option<&ClientTlsConfig>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, InvalidUrl> {
        let mut upstreams = Vec::with_capacity(urls.len());
        for url in urls {
            let socket = url.strip_prefix("unix://").map(std::path::PathBuf::from);
            let address = if socket.is_some() { "http://localhost" } else { url.as_str() };
            let mut endpoint =
                Endpoint::from_shared(address.to_owned()).map_err(|error| InvalidUrl(format!("{url}: {error}")))?;
            if url.starts_with("https://") {
                let tls = tls.ok_or_else(|| InvalidUrl(format!("{url}: https:// without a TLS configuration")))?;
                endpoint = endpoint.tls_config(tls.clone()).map_err(|error| InvalidUrl(format!("{url}: {error}")))?;
            }
            let endpoint = endpoint
                .connect_timeout(Duration::from_secs(2).min(timeout))
                .timeout(timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_while_idle(true);
            let channels = (0..connections.max(1))
                .map(|_| match &socket {
                    Some(path) => unix_channel(&endpoint, path.clone()),
                    None => endpoint.connect_lazy(),
                })
                .collect();
            upstreams.push(Upstream {
                url: url.clone(),
                channels,
                next: AtomicUsize::new(0),
                down_until: AtomicU64::new(0),
            });
        }
        if upstreams.is_empty() {
            return Err(InvalidUrl("no URL".into()));
        }
        Ok(IdentityClient {
            upstreams: Arc::new(upstreams),
            next: Arc::default(),
            epoch: std::time::Instant::now(),
            metrics,
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The next replica round-robin, passing over those recently unreachable (unless all are).
    fn pick(&self) -> usize {
        let count = self.upstreams.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now();
        (0..count)
            .map(|offset| (start + offset) % count)
            .find(|&index| self.upstreams[index].down_until.load(Ordering::Relaxed) <= now)
            .unwrap_or(start % count)
    }

    /// Notes how a call to replica `index` went: unreachable means passed over for a while.
    fn report<T>(&self, index: usize, result: &Result<T, tonic::Status>) {
        if let Err(status) = result
            && unreachable(status)
        {
            self.pass_over(index);
        }
    }

    /// Passes replica `index` over for a while.
    fn pass_over(&self, index: usize) {
        let until = self.now() + u64::try_from(PASS_OVER.as_millis()).unwrap_or(1000);
        self.upstreams[index].down_until.store(until, Ordering::Relaxed);
    }

    /// A connection to the next replica that answers, which passes its replica over when a
    /// call through it cannot reach it.
    fn channel(&self) -> Routed {
        let index = self.pick();
        Routed { channel: self.upstreams[index].channel(), client: self.clone(), index }
    }

    pub fn users(&self) -> UserServiceClient<Routed> {
        UserServiceClient::new(self.channel())
    }

    pub fn auth(&self) -> AuthServiceClient<Routed> {
        AuthServiceClient::new(self.channel())
    }

    pub fn accounts(&self) -> AccountServiceClient<Routed> {
        AccountServiceClient::new(self.channel())
    }

    pub fn social(&self) -> SocialServiceClient<Routed> {
        SocialServiceClient::new(self.channel())
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// `Authenticate`, timed, per replica; once more on another replica when the first could
    /// not be reached.
    pub async fn authenticate(&self, request: pb::AuthenticateRequest) -> Result<pb::Principal, tonic::Status> {
        let tries = self.upstreams.len().min(2);
        let mut result = Err(tonic::Status::unavailable("no identity service"));
        for _ in 0..tries {
            let index = self.pick();
            let upstream = &self.upstreams[index];
            let started = std::time::Instant::now();
            result = AuthServiceClient::new(upstream.channel()).authenticate(request.clone()).await;
            self.metrics.authenticate(&upstream.url, result.is_ok(), started.elapsed());
            self.report(index, &result);
            if !matches!(&result, Err(status) if unreachable(status)) {
                break;
            }
        }
        let principal = result?.into_inner().principal;
        principal.ok_or_else(|| tonic::Status::internal("Authenticate answered without a principal"))
    }

    /// `Login`, counted by outcome.
    pub async fn login(&self, request: tonic::Request<pb::LoginRequest>) -> Result<pb::LoginResponse, ApiError> {
        let index = self.pick();
        let result = AuthServiceClient::new(self.upstreams[index].channel()).login(request).await;
        self.report(index, &result);
        let result = result.map(tonic::Response::into_inner).map_err(ApiError::from);
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

    /// Whether some replica of the identity service answers and reports itself (and so its
    /// database) serving.
    pub async fn ready(&self) -> Result<(), ApiError> {
        let mut last = ApiError::new(ErrorKind::ServiceUnavailable, "the identity service is unreachable");
        for upstream in self.upstreams.iter() {
            let mut health = HealthClient::new(upstream.channel());
            match health.check(HealthCheckRequest { service: String::new() }).await {
                Ok(response) if response.get_ref().status() == ServingStatus::Serving => return Ok(()),
                Ok(_) => {
                    last = ApiError::new(
                        ErrorKind::ServiceUnavailable,
                        "the identity service is not serving (database down?)",
                    );
                }
                Err(status) => {
                    tracing::warn!(upstream = %upstream.url, code = ?status.code(), message = status.message(), "identity service health check failed");
                }
            }
        }
        Err(last)
    }
}

/// The connection to one replica that every call but `Authenticate` and `Login` (which note
/// the answer's status themselves) goes through: a call that fails in transport (refused,
/// reset, timed out) passes the replica over, so the calls after it go to the others.
#[derive(Clone, Debug)]
pub struct Routed {
    channel: Channel,
    client: IdentityClient,
    index: usize,
}

impl tower::Service<http::Request<tonic::body::Body>> for Routed {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, context: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        let ready = self.channel.poll_ready(context);
        if let std::task::Poll::Ready(Err(_)) = &ready {
            self.client.pass_over(self.index);
        }
        ready
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let response = self.channel.call(request);
        let (client, index) = (self.client.clone(), self.index);
        Box::pin(async move {
            let response = response.await;
            if response.is_err() {
                client.pass_over(index);
            }
            response
        })
    }
}

/// A replica that could not serve the call: unreachable, too slow, or without its database
/// (the identity service itself never answers `UNKNOWN`: that is the transport's).
fn unreachable(status: &tonic::Status) -> bool {
    matches!(status.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown)
}
