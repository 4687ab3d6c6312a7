//! The black-box test harness: real servers on `127.0.0.1:0`, each test with its own database
//! (a SQLite file, or a fresh PostgreSQL database when `TEST_DATABASE_URL` is set), clients
//! that speak what our users speak, a TCP proxy that can cut a server off from its database, a
//! PostgreSQL cluster a test may stop, an SMTP server that keeps what it receives, providers to
//! sign in with (an OpenID provider and a GitHub-shaped server), and the
//! binaries run as processes.

#![allow(clippy::unwrap_used)]

pub mod browser;
pub mod clients;
pub mod databases;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod raw;
pub mod servers;
pub mod smtp;
pub mod social;
pub mod tls;

use std::time::Duration;

pub use browser::Browser;
pub use clients::*;
pub use databases::{TestDb, count, count_reaches};
pub use identity_proto::pb::{
    account_service_client::AccountServiceClient, auth_service_client::AuthServiceClient,
    user_service_client::UserServiceClient,
};
pub use process::{IdentityProcess, binary};
pub use proxy::Proxy;
pub use servers::*;
pub use smtp::{Mail, SmtpServer, outbox, query_param};
pub use tls::Pki;
use tonic::transport::Channel;
pub use tonic_health::pb as pb_health;

pub type Users = UserServiceClient<Channel>;
pub type Auth = AuthServiceClient<Channel>;
pub type Accounts = AccountServiceClient<Channel>;

pub const PASSWORD: &str = "correct horse battery";

/// The key-encryption key of the tests' PostgreSQL deployments (required there; SQLite
/// deployments generate theirs beside the database unless a test sets one).
pub const TEST_KEK: &str = "dGVzdCBrZXktZW5jcnlwdGlvbiBrZXkgMzIgYnl0ZXM=";

/// The metrics a server exposes at `http://{addr}/metrics`.
pub async fn scrape(addr: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap()
}

/// The value of the sample called exactly `name` (labels included, as exposed) in a Prometheus
/// exposition; `None` when there is none. Only sample lines count: a `# HELP` line may well
/// read `identity_event_listener_up 1 while…`.
pub fn sample(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        Some(value.trim().parse().unwrap_or_else(|_| panic!("{name}: not a number in {line:?}")))
    })
}

/// Polls `check` until it returns `Some`, failing after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "condition not met within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
