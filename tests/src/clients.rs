//! Clients as our users run them: GraphQL over HTTP, GraphQL over websockets, gRPC requests
//! on someone's behalf, and PyJWT verifying our tokens.

use std::time::Duration;

use identity_proto::pb;
use tokio::net::TcpStream;
use tonic::{Request, metadata::MetadataValue};

use crate::{Auth, Facade, PASSWORD, Users};

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
        Self::connect_to(facade.addr, protocol, headers).await
    }

    /// The same to a facade at `addr` (one this process did not start).
    pub async fn connect_to(addr: std::net::SocketAddr, protocol: &str, headers: &[(&str, &str)]) -> Self {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{addr}/graphql/ws").into_client_request().unwrap();
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
/// Sends `request` and reads its JSON answer.
pub async fn json_of(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}

pub fn error_code(body: &serde_json::Value) -> &str {
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {body}"))
}
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
