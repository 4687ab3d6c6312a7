//! The servers under test, in this process on ephemeral ports: the identity service, the
//! facade, and both on one database (`Stack`).

use std::{net::SocketAddr, time::Duration};

use identity_core::{JwtAlg, Secret};
use identity_service::Config;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::{Channel, Endpoint};

use crate::{
    AccountServiceClient, Accounts, Auth, AuthServiceClient, Gql, PASSWORD, SmtpServer, TestDb, UserServiceClient,
    Users, eventually, pb_health,
};

/// The test configuration: the contract's defaults on `db`, ES256 (cheap keys), a short
/// database timeout so that outages show quickly, and mail (sign-up sends some) written into
/// the test's own directory, never ./data.
pub fn config(db: &TestDb) -> Config {
    let mut config = Config::defaults();
    config.database_url = Secret::new(db.url.clone());
    config.jwt_alg = JwtAlg::Es256;
    config.database_timeout = secs(2);
    config.outbox_dir = db.outbox_dir();
    if db.is_postgres() {
        config.key_encryption_key = Some(Secret::new(crate::TEST_KEK));
    }
    config
}

/// A loopback address nothing listens on (now): for a port a test must name in advance.
pub fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// `config(db)` sending mail to `smtp`, retrying a failed delivery every 200 ms, with mail
/// limits out of the way (a test of throttling sets its own).
pub fn mail_config(db: &TestDb, smtp: &SmtpServer) -> Config {
    let mut config = config(db);
    config.smtp_url = Some(Secret::new(smtp.url()));
    config.email_from = "Identity <no-reply@identity.test>".into();
    config.mail_retry_max = millis(200);
    config.mail_address_limit = 1000;
    config.mail_client_limit = 1000;
    config
}

pub fn secs(n: u64) -> humantime::Duration {
    Duration::from_secs(n).into()
}

pub fn millis(n: u64) -> humantime::Duration {
    Duration::from_millis(n).into()
}

/// An identity service running in this process on an ephemeral port.
pub struct Service {
    pub addr: SocketAddr,
    channel: Channel,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), identity_service::StartError>>>,
}

impl Service {
    pub async fn start(config: Config) -> Self {
        Self::start_at(config, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts on a given address (to restart where a client expects it).
    pub async fn start_at(config: Config, addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(identity_service::serve(config, listener, async {
            let _ = stop.await;
        }));
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .connect_lazy();
        let service = Service { addr, channel, shutdown: Some(shutdown), task: Some(task) };
        service.wait_ready().await;
        service
    }

    /// Polls health until SERVING; fails if the server stopped.
    async fn wait_ready(&self) {
        let task = self.task.as_ref();
        tokio::select! {
            () = wait_serving(&self.channel, Duration::from_secs(30)) => {}
            () = async {
                while !task.is_some_and(JoinHandle::is_finished) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            } => panic!("the identity service stopped while starting"),
        }
    }

    pub fn users(&self) -> Users {
        UserServiceClient::new(self.channel.clone())
    }

    pub fn auth(&self) -> Auth {
        AuthServiceClient::new(self.channel.clone())
    }

    pub fn accounts(&self) -> Accounts {
        AccountServiceClient::new(self.channel.clone())
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Graceful shutdown; returns what `serve` returned.
    pub async fn stop(mut self) -> Result<(), identity_service::StartError> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("graceful shutdown did not finish: something holds the server open")
            .unwrap()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Polls gRPC health at `channel` until SERVING, failing after `limit`.
pub async fn wait_serving(channel: &Channel, limit: Duration) {
    let health = pb_health::health_client::HealthClient::new(channel.clone());
    eventually(limit, || {
        let mut health = health.clone();
        async move {
            let response = health.check(pb_health::HealthCheckRequest { service: String::new() }).await.ok()?;
            let serving = pb_health::health_check_response::ServingStatus::Serving as i32;
            (response.into_inner().status == serving).then_some(())
        }
    })
    .await;
}

// === Facade ===

/// A facade configuration that talks to `identity`.
pub fn facade_config(identity: &Service) -> graphql_facade::Config {
    let mut config = graphql_facade::Config::defaults();
    config.identity_url = format!("http://{}", identity.addr);
    config
}

/// The GraphQL facade running in this process on an ephemeral port.
pub struct Facade {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), graphql_facade::StartError>>>,
}

impl Facade {
    pub async fn start(config: graphql_facade::Config) -> Self {
        Self::start_on(config, TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    /// Starts on a listener bound already (whose address the identity service was told).
    pub fn start_on(config: graphql_facade::Config, listener: TcpListener) -> Self {
        let addr = listener.local_addr().unwrap();
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(graphql_facade::serve(config, listener, async {
            let _ = stop.await;
        }));
        Facade { addr, shutdown: Some(shutdown), task: Some(task) }
    }

    pub fn url(&self) -> String {
        format!("http://{}/graphql", self.addr)
    }

    /// `http://addr`, what links to the facade start with.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
    }
}

impl Drop for Facade {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Both servers on one fresh database.
pub struct Stack {
    pub facade: Facade,
    pub identity: Service,
    pub db: TestDb,
}

impl Stack {
    pub async fn start() -> Self {
        let db = TestDb::new().await;
        let mut identity = config(&db);
        identity.bootstrap_manager = Some(Secret::new(format!("root:{PASSWORD}")));
        Self::start_with(db, identity, |_| {}).await
    }

    /// Both servers; the links the service mails lead to this facade unless `identity` names
    /// another public URL.
    pub async fn start_with(
        db: TestDb,
        mut identity: Config,
        facade: impl FnOnce(&mut graphql_facade::Config),
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let public_url = format!("http://{}", listener.local_addr().unwrap());
        identity.public_url.get_or_insert(public_url);
        let identity = Service::start(identity).await;
        let mut config = facade_config(&identity);
        facade(&mut config);
        let facade = Facade::start_on(config, listener);
        Stack { facade, identity, db }
    }

    pub fn client(&self) -> Gql {
        Gql { http: reqwest::Client::new(), url: self.facade.url() }
    }
}
