//! The black-box test harness: real servers on `127.0.0.1:0`, each test with its own database
//! (a SQLite file, or a fresh PostgreSQL database when `TEST_DATABASE_URL` is set), and a TCP
//! proxy that can cut a server off from its database. Tests speak only gRPC (and run the
//! binaries) through it.

#![allow(clippy::unwrap_used)]

pub mod postgres;
pub mod process;
pub mod raw;

pub use process::{IdentityProcess, binary};

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use identity_core::{JwtAlg, Secret};
use identity_proto::pb;
pub use identity_proto::pb::{auth_service_client::AuthServiceClient, user_service_client::UserServiceClient};
use identity_service::Config;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinHandle,
};
use tonic::{
    Request,
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};

pub type Users = UserServiceClient<Channel>;
pub type Auth = AuthServiceClient<Channel>;

pub const PASSWORD: &str = "correct horse battery";

// === TestDb ===

/// A database of the test's own, dropped after it.
pub struct TestDb {
    pub url: String,
    postgres: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new() -> Self {
        match std::env::var("TEST_DATABASE_URL").ok().filter(|url| !url.is_empty()) {
            Some(admin) => {
                let name = format!("t_{}", uuid::Uuid::new_v4().simple());
                let db = Database::connect(&admin).await.expect("TEST_DATABASE_URL must be reachable");
                db.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await.unwrap();
                db.close().await.ok();
                let (prefix, _) = admin.rsplit_once('/').expect("TEST_DATABASE_URL needs a /database");
                TestDb { url: format!("{prefix}/{name}"), postgres: Some((admin, name)), _dir: None }
            }
            None => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("identity.db").display());
                TestDb { url, postgres: None, _dir: Some(dir) }
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    /// A direct connection, for the few checks a client cannot make (what is stored).
    pub async fn connect(&self) -> DatabaseConnection {
        Database::connect(&self.url).await.unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.postgres.take() else { return };
        // Drop runs outside any runtime we may block: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                if let Ok(db) = Database::connect(&admin).await {
                    let _ = db.execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await;
                    let _ = db.close().await;
                }
            });
        })
        .join();
    }
}

// === Service ===

/// The test configuration: the contract's defaults on `db`, ES256 (cheap keys), and a short
/// database timeout so that outages show quickly.
pub fn config(db: &TestDb) -> Config {
    let mut config = Config::defaults();
    config.database_url = Secret::new(db.url.clone());
    config.jwt_alg = JwtAlg::Es256;
    config.database_timeout = secs(2);
    config
}

pub fn secs(n: u64) -> humantime::Duration {
    Duration::from_secs(n).into()
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

pub use tonic_health::pb as pb_health;

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
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
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

    pub async fn start_with(db: TestDb, identity: Config, facade: impl FnOnce(&mut graphql_facade::Config)) -> Self {
        let identity = Service::start(identity).await;
        let mut config = facade_config(&identity);
        facade(&mut config);
        let facade = Facade::start(config).await;
        Stack { facade, identity, db }
    }

    pub fn client(&self) -> Gql {
        Gql { http: reqwest::Client::new(), url: self.facade.url() }
    }
}

/// A GraphQL-over-HTTP client.
#[derive(Clone)]
pub struct Gql {
    pub http: reqwest::Client,
    pub url: String,
}

impl Gql {
    /// POSTs a query as JSON; `authorization` is the whole header value.
    pub async fn post(
        &self,
        authorization: Option<&str>,
        query: &str,
        variables: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let mut request = self.http.post(&self.url).json(&serde_json::json!({"query": query, "variables": variables}));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// The same with `Authorization: Bearer <token>`.
    pub async fn as_user(&self, token: &str, query: &str, variables: serde_json::Value) -> serde_json::Value {
        self.post(Some(&format!("Bearer {token}")), query, variables).await.1
    }

    pub async fn anonymous(&self, query: &str, variables: serde_json::Value) -> serde_json::Value {
        self.post(None, query, variables).await.1
    }

    /// django-graphql-jwt's `tokenAuth`: (token, refreshToken).
    pub async fn token_auth(&self, username: &str, password: &str) -> (String, String) {
        let body = self
            .anonymous(
                "mutation($u: String!, $p: String!) { tokenAuth(username: $u, password: $p) { token refreshToken } }",
                serde_json::json!({"u": username, "p": password}),
            )
            .await;
        let auth = &body["data"]["tokenAuth"];
        assert!(auth.is_object(), "tokenAuth failed: {body}");
        (auth["token"].as_str().unwrap().to_owned(), auth["refreshToken"].as_str().unwrap().to_owned())
    }
}

// === WsClient ===

/// What the server sent on a websocket.
#[derive(Debug)]
pub enum Frame {
    Json(serde_json::Value),
    Closed(u16, String),
}

/// A GraphQL websocket client speaking `graphql-transport-ws` (or the legacy `graphql-ws`).
pub struct WsClient {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    /// Opens `/graphql/ws` with `protocol`, sending `cookie` on the upgrade request if given.
    pub async fn connect(facade: &Facade, protocol: &str, cookie: Option<&str>) -> Self {
        let headers: Vec<(&str, &str)> = cookie.map(|cookie| ("cookie", cookie)).into_iter().collect();
        Self::connect_with(facade, protocol, &headers).await
    }

    /// The same with any headers on the upgrade request (`cookie`, `origin`, ...).
    pub async fn connect_with(facade: &Facade, protocol: &str, headers: &[(&str, &str)]) -> Self {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{}/graphql/ws", facade.addr).into_client_request().unwrap();
        request.headers_mut().insert("sec-websocket-protocol", protocol.parse().unwrap());
        for (name, value) in headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap();
            request.headers_mut().insert(name, value.parse().unwrap());
        }
        let (socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
        assert_eq!(response.headers()["sec-websocket-protocol"], protocol);
        WsClient { socket }
    }

    pub async fn send(&mut self, message: serde_json::Value) {
        use futures::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        self.socket.send(Message::Text(message.to_string().into())).await.unwrap();
    }

    /// The next JSON message or the close, skipping pings; fails after 15 s of silence.
    pub async fn next(&mut self) -> Frame {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            let message = tokio::time::timeout(Duration::from_secs(15), self.socket.next())
                .await
                .expect("the server said nothing for 15 s");
            match message {
                Some(Ok(Message::Text(text))) => return Frame::Json(serde_json::from_str(&text).unwrap()),
                Some(Ok(Message::Close(frame))) => {
                    return frame.map_or(Frame::Closed(1005, String::new()), |frame| {
                        Frame::Closed(frame.code.into(), frame.reason.to_string())
                    });
                }
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Frame::Closed(1006, error.to_string()),
                None => return Frame::Closed(1006, "the connection dropped".into()),
            }
        }
    }

    /// Waits for a websocket Ping frame, ignoring everything else; false after `limit`.
    pub async fn ping_within(&mut self, limit: Duration) -> bool {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let wait = async {
            while let Some(Ok(message)) = self.socket.next().await {
                if matches!(message, Message::Ping(_)) {
                    return true;
                }
            }
            false
        };
        tokio::time::timeout(limit, wait).await.unwrap_or(false)
    }

    /// `connection_init` with `payload`; returns what the server answered.
    pub async fn init(&mut self, payload: serde_json::Value) -> Frame {
        self.send(serde_json::json!({"type": "connection_init", "payload": payload})).await;
        self.next().await
    }

    /// `subscribe` (graphql-transport-ws) with `id`.
    pub async fn subscribe(&mut self, id: &str, query: &str) {
        self.send(serde_json::json!({"id": id, "type": "subscribe", "payload": {"query": query}})).await;
    }
}

/// The `extensions.code` of the first error of a response.
pub fn error_code(body: &serde_json::Value) -> &str {
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {body}"))
}

// === requests ===

/// A request carrying `authorization: Bearer <token>`.
pub fn bearer<T>(message: T, access_token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", MetadataValue::try_from(format!("Bearer {access_token}")).unwrap());
    request
}

/// A request carrying `x-session-token: <token>`.
pub fn session<T>(message: T, session_token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("x-session-token", MetadataValue::try_from(session_token).unwrap());
    request
}

/// A request that says it comes from `ip` (as the facade does).
pub fn from_address<T>(message: T, ip: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("x-forwarded-for", MetadataValue::try_from(ip).unwrap());
    request
}

pub async fn sign_up(users: &mut Users, username: &str) -> pb::User {
    users
        .create_user(pb::CreateUserRequest {
            username: username.into(),
            email: format!("{username}@example.com"),
            password: PASSWORD.into(),
            role: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
}

pub async fn log_in(auth: &mut Auth, username: &str) -> pb::LoginResponse {
    auth.login(pb::LoginRequest { username: username.into(), password: PASSWORD.into() }).await.unwrap().into_inner()
}

pub fn access(token: &str) -> pb::AuthenticateRequest {
    pb::AuthenticateRequest {
        credential: Some(pb::authenticate_request::Credential::AccessToken(token.into())),
        omit_claims: false,
    }
}

pub fn session_token(token: &str) -> pb::AuthenticateRequest {
    pb::AuthenticateRequest {
        credential: Some(pb::authenticate_request::Credential::SessionToken(token.into())),
        omit_claims: false,
    }
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

// === Proxy ===

/// A TCP proxy in front of a database: `cut()` drops every connection and refuses new ones
/// until `restore()`, as a network partition or a database restart would.
pub struct Proxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (up, connections) = (Arc::clone(&up), Arc::clone(&connections));
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let target = target.clone();
                    let handle = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(&target).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    connections.lock().unwrap().push(handle);
                }
            })
        };
        Proxy { addr, up, connections, accept }
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// `url` with its host and port replaced by this proxy's.
    pub fn url_through(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let userinfo = authority.rsplit_once('@').map(|(user, _)| format!("{user}@")).unwrap_or_default();
        format!("{scheme}://{userinfo}{}/{path}", self.addr)
    }

    /// The `host:port` a postgres URL points at.
    pub fn target_of(url: &str) -> String {
        let rest = url.split_once("://").unwrap().1;
        let authority = rest.split('/').next().unwrap();
        let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
        if host.contains(':') { host.to_owned() } else { format!("{host}:5432") }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

// === Browser-like HTTP ===

/// A cookie-keeping HTTP client for the facade's plain-HTTP routes, by hand so that tests
/// see every `Set-Cookie` exactly as sent.
pub struct Browser {
    pub http: reqwest::Client,
    pub base: String,
    /// Cookies as the browser would send them back: name -> value.
    pub cookies: std::collections::BTreeMap<String, String>,
    /// Every `Set-Cookie` of the last response.
    pub set_cookies: Vec<String>,
}

impl Browser {
    pub fn new(facade: &Facade) -> Self {
        Browser {
            http: reqwest::Client::new(),
            base: format!("http://{}", facade.addr),
            cookies: Default::default(),
            set_cookies: Vec::new(),
        }
    }

    pub fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("; ")
    }

    /// The `Set-Cookie` of the last response for `name`, if any.
    pub fn set_cookie(&self, name: &str) -> Option<&str> {
        self.set_cookies.iter().map(String::as_str).find(|line| line.starts_with(&format!("{name}=")))
    }

    pub fn csrf(&self) -> String {
        self.cookies.get("csrftoken").cloned().unwrap_or_default()
    }

    /// Sends `request` with the jar's cookies; keeps what comes back.
    pub async fn send(
        &mut self,
        request: reqwest::RequestBuilder,
    ) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
        let request = if self.cookies.is_empty() { request } else { request.header("cookie", self.cookie_header()) };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        self.set_cookies =
            headers.get_all("set-cookie").iter().map(|value| value.to_str().unwrap().to_owned()).collect();
        for line in &self.set_cookies {
            let pair = line.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            let removal = line.to_ascii_lowercase().contains("max-age=0");
            if removal || value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let body = response.json().await.unwrap_or(serde_json::Value::Null);
        (status, headers, body)
    }

    pub async fn get(&mut self, path: &str) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    /// POSTs JSON with `X-CSRFToken` from the cookie jar (when `csrf`).
    pub async fn post(
        &mut self,
        path: &str,
        body: serde_json::Value,
        csrf: bool,
    ) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(&body);
        if csrf {
            request = request.header("x-csrftoken", self.csrf());
        }
        self.send(request).await
    }

    /// GET /api/csrf, then POST /api/login.
    pub async fn log_in(&mut self, username: &str, password: &str) -> serde_json::Value {
        let (status, _, _) = self.get("/api/csrf").await;
        assert_eq!(status, 200);
        let (status, _, body) =
            self.post("/api/login", serde_json::json!({"username": username, "password": password}), true).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// A GraphQL request riding on the cookies (with the CSRF header when `csrf`).
    pub async fn graphql(&mut self, query: &str, csrf: bool) -> (u16, serde_json::Value) {
        let (status, _, body) = self.post("/graphql", serde_json::json!({ "query": query }), csrf).await;
        (status, body)
    }
}

/// Verifies with PyJWT (another language, another implementation) using only the JWK set.
pub fn python_verify(jwks: &str, token: &str, issuer: &str) -> serde_json::Value {
    let python = std::env::var("E2E_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = r#"
import json, sys, jwt
jwks, token, issuer = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
header = jwt.get_unverified_header(token)
key = next(k for k in jwt.PyJWKSet.from_dict(jwks).keys if k.key_id == header["kid"])
claims = jwt.decode(token, key.key, algorithms=[header["alg"]], audience="identity", issuer=issuer)
print(json.dumps(claims))
"#;
    let output = std::process::Command::new(&python).args(["-c", script, jwks, token, issuer]).output().unwrap_or_else(
        |error| panic!("cannot run {python}: {error} (set E2E_PYTHON to a Python with PyJWT[crypto]; .ci/test does)"),
    );
    assert!(output.status.success(), "PyJWT refused the token: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_rewritten_through_the_proxy() {
        assert_eq!(Proxy::target_of("postgres://postgres@127.0.0.1:5432/t_1"), "127.0.0.1:5432");
        assert_eq!(Proxy::target_of("postgres://localhost/t_1"), "localhost:5432");
    }
}
