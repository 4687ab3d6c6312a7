//! The binaries as an operator runs them: a child process on an ephemeral port, found by its
//! own log line, stopped gracefully or killed outright.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::{Auth, Users, pb_health};

/// The path of a workspace binary next to the running test executable.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --bin {name}` (cargo test --workspace does)",
        path.display()
    );
    path
}

/// Whether `env` names a PostgreSQL database (which needs a key-encryption key).
pub fn on_postgres(env: &[(&str, &str)]) -> bool {
    env.iter().any(|(name, value)| *name == "IDENTITY_DATABASE_URL" && value.starts_with("postgres"))
}

/// `identity-service` running as a process of its own.
pub struct IdentityProcess {
    pub addr: SocketAddr,
    child: Child,
    channel: Channel,
    logs: Arc<Mutex<Vec<String>>>,
    /// Where it writes mail (sign-up sends some), unless `env` says otherwise.
    _outbox: tempfile::TempDir,
}

impl IdentityProcess {
    /// Starts the binary with only `env` (plus JSON logs and an ephemeral port), and waits
    /// until it reports SERVING.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        Self::start_with(env, None).await
    }

    /// Starts the binary serving TLS (the files in `env`), and talks to it with `tls`.
    pub async fn start_tls(env: &[(&str, &str)], tls: ClientTlsConfig) -> Self {
        Self::start_with(env, Some(tls)).await
    }

    async fn start_with(env: &[(&str, &str)], tls: Option<ClientTlsConfig>) -> Self {
        let dir = std::env::temp_dir();
        let outbox = tempfile::tempdir().unwrap();
        let mut command = Command::new(binary("identity-service"));
        command
            .env_clear()
            .env("IDENTITY_GRPC_ADDR", "127.0.0.1:0")
            .env("IDENTITY_OUTBOX_DIR", outbox.path())
            .env("IDENTITY_JWT_ALG", "ES256")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info");
        if on_postgres(env) {
            command.env("IDENTITY_KEY_ENCRYPTION_KEY", crate::TEST_KEK);
        }
        let mut child = command
            .envs(env.iter().copied())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                if entry["fields"]["message"] == "identity service listening" {
                    return entry["fields"]["address"].as_str().unwrap().parse::<SocketAddr>().unwrap();
                }
            }
            panic!("identity-service exited before listening");
        })
        .await
        .expect("identity-service did not listen within 60 s");
        // Keep reading the log (the child never blocks on a full pipe); tests may look at it.
        let logs = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn({
            let logs = logs.clone();
            async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    logs.lock().unwrap().push(line);
                }
            }
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}")).unwrap();
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).unwrap();
        }
        let channel = endpoint.connect_timeout(Duration::from_secs(5)).timeout(Duration::from_secs(30)).connect_lazy();
        let process = IdentityProcess { addr, child, channel, logs, _outbox: outbox };
        crate::wait_serving(&process.channel, Duration::from_secs(30)).await;
        process
    }

    pub fn users(&self) -> Users {
        crate::UserServiceClient::new(self.channel.clone())
    }

    pub fn auth(&self) -> Auth {
        crate::AuthServiceClient::new(self.channel.clone())
    }

    pub fn health(&self) -> pb_health::health_client::HealthClient<Channel> {
        pb_health::health_client::HealthClient::new(self.channel.clone())
    }

    /// The log lines (JSON) written so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// SIGKILL: no shutdown, no flush, no goodbye.
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}
