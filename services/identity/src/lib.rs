//! `identity-service`: the tonic gRPC server in front of `identity-core`. It owns the wiring
//! (services, health, reflection, configuration); the rules live in the core.

pub mod config;
pub mod grpc;
pub mod metrics;
pub mod tls;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use identity_core::{CoreError, Identity, Observer};
use identity_proto::{
    FILE_DESCRIPTOR_SET,
    pb::{
        account_service_server::AccountServiceServer, auth_service_server::AuthServiceServer,
        social_service_server::SocialServiceServer, user_service_server::UserServiceServer,
    },
};
use tokio::net::TcpListener;
use tonic::{
    server::NamedService,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::ServingStatus;

pub use config::{Config, ConfigError};

/// Why the service could not start (or stopped). Each message names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("IDENTITY_DATABASE_URL: cannot open the database: {0}")]
    Database(CoreError),
    /// The key-encryption key is missing, malformed, or not the keys' (the text names it).
    #[error("{0}")]
    Keys(String),
    #[error("IDENTITY_BOOTSTRAP_MANAGER: {0}")]
    Bootstrap(CoreError),
    #[error("server reflection: {0}")]
    Reflection(String),
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("IDENTITY_METRICS_ADDR: cannot listen on {0}: {1}")]
    Metrics(SocketAddr, std::io::Error),
    #[error("IDENTITY_GRPC_UDS: cannot listen on {0}: {1}")]
    Uds(std::path::PathBuf, std::io::Error),
}

impl StartError {
    /// The exit code of a binary that failed this way: 2 for configuration, 1 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Config(_) => 2,
            _ => 1,
        }
    }
}

/// The service with its database open: migrated, keys loaded, the bootstrap manager ensured.
/// Nothing listens yet, so a binary can bind only once this succeeded.
pub struct Opened {
    identity: Identity,
    metrics: Arc<metrics::Metrics>,
    metrics_addr: Option<SocketAddr>,
    forwarders: grpc::Forwarders,
    transport: tls::Transport,
    janitor: config::Janitor,
    uds: Option<std::path::PathBuf>,
}

/// Opens the database and prepares the domain. Every failure names its setting.
pub async fn open(config: &Config) -> Result<Opened, StartError> {
    let settings = config.settings()?;
    let transport = config.transport()?;
    if config.grpc_uds.is_some() && !matches!(transport, tls::Transport::Plaintext) {
        return Err(ConfigError(
            "IDENTITY_GRPC_UDS is plaintext for one host; it cannot go with IDENTITY_TLS_CERT: set one of them".into(),
        )
        .into());
    }
    let janitor = config.janitor()?;
    let bootstrap = config.bootstrap_manager()?;
    let metrics = metrics::Metrics::new();
    let observer: Arc<dyn Observer> = metrics.clone();
    // Replicas starting together take turns (a PostgreSQL advisory lock) from migrating to
    // creating the bootstrap manager: one schema, one key set, one manager.
    let (identity, startup) = Identity::open(config.database_url.expose(), &config.store()?, settings, observer)
        .await
        .map_err(|error| match error {
            CoreError::KeyEncryption(message) => StartError::Keys(message),
            other => StartError::Database(other),
        })?;
    if let Some((username, password)) = bootstrap {
        match identity.ensure_manager(&username, password.expose()).await.map_err(StartError::Bootstrap)? {
            Some(user) => tracing::info!(user_id = %user.id, %username, "bootstrap manager created"),
            None => tracing::info!("a manager exists; IDENTITY_BOOTSTRAP_MANAGER left unused"),
        }
    }
    startup.release().await;
    if config.smtp_url.is_none() {
        // The embedded default: fine on a laptop, never in production.
        tracing::warn!(
            dir = %config.outbox_dir.display(),
            "no IDENTITY_SMTP_URL: mail is written to files and every link (password resets too) is logged; \
             set IDENTITY_SMTP_URL in production"
        );
    }
    let forwarders = grpc::Forwarders::new(config.trusted_forwarders.clone());
    let uds = config.grpc_uds.clone();
    Ok(Opened { identity, metrics, metrics_addr: config.metrics_addr, forwarders, transport, janitor, uds })
}

/// Opens the database, then serves gRPC on `listener` until `shutdown` completes.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StartError> {
    open(&config).await?.serve(listener, shutdown).await
}

/// The names health reports: the server as a whole and each of our services.
const HEALTH_SERVICES: [&str; 5] = [
    "",
    <UserServiceServer<grpc::users::Users> as NamedService>::NAME,
    <AuthServiceServer<grpc::auth::Auth> as NamedService>::NAME,
    <AccountServiceServer<grpc::accounts::Accounts> as NamedService>::NAME,
    <SocialServiceServer<grpc::social::Social> as NamedService>::NAME,
];

impl Opened {
    /// Serves gRPC on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), StartError> {
        let Opened { identity, metrics, metrics_addr, forwarders, transport, janitor, uds } = self;
        let uds = match uds {
            Some(path) => Some((bind_uds(&path).map_err(|error| StartError::Uds(path.clone(), error))?, path)),
            None => None,
        };
        let metrics_server = match metrics_addr {
            Some(address) => {
                let listener = TcpListener::bind(address).await.map_err(|error| StartError::Metrics(address, error))?;
                tracing::info!(address = %listener.local_addr().unwrap_or(address), "metrics listening");
                Some(tokio::spawn(metrics::serve(listener, metrics.clone())))
            }
            None => None,
        };
        let (health, health_service) = tonic_health::server::health_reporter();
        // Reflection serves our API, health, and google.rpc error details (so that grpcurl can
        // show field violations, retry info and error reasons), in both protocol versions.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1().map_err(|error| StartError::Reflection(error.to_string()))?;
        let reflection_v1alpha =
            reflection().build_v1alpha().map_err(|error| StartError::Reflection(error.to_string()))?;

        // Health follows the database: NOT_SERVING while it cannot be reached, from the first
        // call that finds it gone (or the periodic probe, whichever comes first). Every
        // service's status is set before the server accepts, so no check finds one missing.
        let database = grpc::edge::DatabaseHealth::new(health, &HEALTH_SERVICES);
        database.report(database_status(&identity).await).await;
        let watcher = {
            let (identity, database) = (identity.clone(), database.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(HEALTH_PROBE_INTERVAL).await;
                    database.report(database_status(&identity).await).await;
                }
            })
        };
        let sweeper = {
            let identity = identity.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(SWEEP_INTERVAL).await;
                    if let Err(error) = identity.erase_spent_successors().await {
                        tracing::debug!(%error, "could not erase spent refresh successors");
                    }
                }
            })
        };

        let janitor = tokio::spawn(run_janitor(identity.clone(), janitor, metrics.clone()));
        let keys = tokio::spawn(run_keys(identity.clone(), metrics.clone()));
        let mail = tokio::spawn(run_mail(identity.clone(), metrics.clone()));

        let (stopping_sender, stopping) = tokio::sync::watch::channel(false);
        let mut uds_stopping = stopping_sender.subscribe();
        let shutdown = async move {
            shutdown.await;
            let _ = stopping_sender.send(true);
        };
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, transport = transport.describe(), "identity service listening");
        }
        let limit = grpc::edge::MAX_REQUEST_BYTES;
        let mut server = Server::builder();
        if let tls::Transport::Tls { config, mutual } = transport {
            server = server.tls_config(config)?;
            if mutual {
                server = server.trace_fn(tls::caller_span);
            }
        }
        let router = server
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .layer(grpc::edge::layer(database))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(
                UserServiceServer::new(grpc::users::Users::new(identity.clone())).max_decoding_message_size(limit),
            )
            .add_service(
                AccountServiceServer::new(grpc::accounts::Accounts::new(identity.clone(), forwarders.clone()))
                    .max_decoding_message_size(limit),
            )
            .add_service(
                SocialServiceServer::new(grpc::social::Social::new(identity.clone(), forwarders.clone()))
                    .max_decoding_message_size(limit),
            )
            .add_service(
                AuthServiceServer::new(grpc::auth::Auth::new(identity.clone(), forwarders, stopping))
                    .max_decoding_message_size(limit),
            );
        let on_uds = uds.map(|(listener, path)| {
            tracing::info!(path = %path.display(), "identity service listening on a Unix socket");
            let router = router.clone();
            let stop = async move {
                let _ = uds_stopping.wait_for(|stopping| *stopping).await;
            };
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            (tokio::spawn(async move { router.serve_with_incoming_shutdown(incoming, stop).await }), path)
        });
        // Without TCP_NODELAY, Nagle's algorithm and the peer's delayed ACK hold every small
        // response back ~40 ms: measured 44 ms per authenticated facade request, 0.3 ms with.
        let served =
            router.serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), shutdown).await;
        if let Some((task, path)) = on_uds {
            match task.await {
                Ok(Err(error)) => tracing::error!(%error, "the Unix socket's server failed"),
                Err(error) => tracing::error!(%error, "the Unix socket's server panicked"),
                Ok(Ok(())) => {}
            }
            let _ = std::fs::remove_file(&path);
        }
        watcher.abort();
        sweeper.abort();
        janitor.abort();
        keys.abort();
        mail.abort();
        if let Some(metrics_server) = metrics_server {
            metrics_server.abort();
        }
        identity.close().await;
        tracing::info!("identity service stopped");
        Ok(served?)
    }
}

/// Listens on the Unix socket `path`, owner-only. A socket file left by a process that is gone
/// is replaced; a live one (another process answers on it) or any other file is not.
fn bind_uds(path: &std::path::Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(metadata) = std::fs::symlink_metadata(path) {
        if !metadata.file_type().is_socket() {
            return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "exists and is not a socket"));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "another process is listening on it"));
        }
        std::fs::remove_file(path)?;
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// How often health asks the database when nothing else told it.
const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// How often refresh successors whose grace closed are erased.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Every interval, if this replica's turn: deletes what is past its life, and counts it.
async fn run_janitor(identity: Identity, janitor: config::Janitor, metrics: Arc<metrics::Metrics>) {
    let mut ticks = tokio::time::interval(janitor.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match identity.claim_janitor_run(janitor.interval).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(error) => {
                tracing::debug!(%error, "janitor: cannot claim its run");
                continue;
            }
        }
        match identity.sweep(janitor.retention).await {
            Ok(swept) => {
                metrics.janitor(swept);
                if swept != identity_core::Swept::default() {
                    tracing::info!(
                        sessions = swept.sessions,
                        refresh_tokens = swept.refresh_tokens,
                        login_attempts = swept.login_attempts,
                        account_tokens = swept.account_tokens,
                        outbox = swept.outbox,
                        social_states = swept.social_states,
                        "janitor deleted rows past their life"
                    );
                }
            }
            Err(error) => tracing::warn!(%error, "janitor: sweep failed; it runs again next interval"),
        }
    }
}

/// How often each replica looks at the key set: re-reads it if it changed, takes the
/// scheduled step when due, and shows the key clock in the metrics.
const KEYS_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The key lifecycle's loop: every second, and whenever another replica announces a change.
async fn run_keys(identity: Identity, metrics: Arc<metrics::Metrics>) {
    let mut events = identity.events().subscribe();
    let mut ticks = tokio::time::interval(KEYS_POLL_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A failing step is logged once at warn when it starts failing (then at debug each second,
    // not flooding the log through a database outage), and once when it works again.
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => match identity.maintain_keys().await {
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "signing keys: the scheduled step failed; it runs again every second");
                }
                Err(error) => tracing::debug!(%error, "signing keys: the scheduled step failed again"),
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("signing keys: the scheduled step works again");
                }
                Ok(_) => {}
            },
            received = events.recv() => match received {
                Ok(identity_core::Event::KeysChanged) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    if let Err(error) = identity.reload_keys().await {
                        tracing::debug!(%error, "signing keys: cannot re-read them; the poll tries again");
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
        metrics.keys(identity.key_clock());
    }
}

/// How often each replica looks for mail due (queued by another replica, or due for another
/// attempt) when it queued none itself.
const MAIL_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The outbox's sender: whenever this replica queued a message, and every second, sends what
/// is due (the outbox decides which replica sends which message), then shows the backlog.
async fn run_mail(identity: Identity, metrics: Arc<metrics::Metrics>) {
    loop {
        if let Err(error) = identity.deliver_mail().await {
            tracing::debug!(%error, "mail: cannot read the outbox; trying again in a second");
        }
        match identity.mail_backlog().await {
            Ok(backlog) => metrics.mail_backlog(backlog),
            Err(error) => tracing::debug!(%error, "mail: cannot measure the outbox"),
        }
        tokio::select! {
            () = identity.mail_queued() => {}
            () = tokio::time::sleep(MAIL_POLL_INTERVAL) => {}
        }
    }
}

async fn database_status(identity: &Identity) -> ServingStatus {
    match identity.ping().await {
        Ok(()) => ServingStatus::Serving,
        Err(_) => ServingStatus::NotServing,
    }
}
