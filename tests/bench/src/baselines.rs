//! The baselines: the floor (a bare poem + async-graphql server that only verifies an HS256
//! JWT: no gRPC, no database), a trivial tonic unary call (gRPC health `Check`), and the
//! machine's argon2 bound.

use std::{net::SocketAddr, time::Instant};

use async_graphql::{Context, EmptyMutation, EmptySubscription, Object, Schema, SimpleObject};
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use poem::{
    EndpointExt, Request, Route, Server, handler,
    listener::TcpListener,
    post,
    web::{Data, Json},
};
use serde::{Deserialize, Serialize};

pub const FLOOR_ISSUER: &str = "floor";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FloorClaims {
    pub sub: String,
    pub username: String,
    pub exp: u64,
    pub iss: String,
}

#[derive(SimpleObject)]
struct Who {
    id: String,
    username: String,
}

struct Query;

#[Object]
impl Query {
    async fn whoami(&self, ctx: &Context<'_>) -> async_graphql::Result<Who> {
        let claims = ctx.data_opt::<FloorClaims>().ok_or("UNAUTHENTICATED")?;
        Ok(Who { id: claims.sub.clone(), username: claims.username.clone() })
    }
}

type FloorSchema = Schema<Query, EmptyMutation, EmptySubscription>;

struct FloorState {
    schema: FloorSchema,
    key: DecodingKey,
    validation: Validation,
}

#[handler]
async fn floor_graphql(
    request: &Request,
    Json(body): Json<async_graphql::Request>,
    Data(state): Data<&std::sync::Arc<FloorState>>,
) -> Json<async_graphql::Response> {
    let mut body = body;
    let token = request.header("authorization").and_then(|value| value.strip_prefix("Bearer "));
    if let Some(token) = token
        && let Ok(data) = jsonwebtoken::decode::<FloorClaims>(token, &state.key, &state.validation)
    {
        body = body.data(data.claims);
    }
    Json(state.schema.execute(body).await)
}

/// Serves the floor until killed.
pub async fn serve_floor(addr: SocketAddr, secret: String) {
    let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_issuer(&[FLOOR_ISSUER]);
    let state = std::sync::Arc::new(FloorState {
        schema: Schema::new(Query, EmptyMutation, EmptySubscription),
        key: DecodingKey::from_secret(secret.as_bytes()),
        validation,
    });
    let app = Route::new().at("/graphql", post(floor_graphql)).data(state);
    Server::new(TcpListener::bind(addr)).run(app).await.expect("floor server");
}

/// A token the floor accepts.
pub fn floor_token(secret: &str) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let claims = FloorClaims { sub: "1".into(), username: "bench".into(), exp: exp + 3600, iss: FLOOR_ISSUER.into() };
    jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).expect("sign")
}

/// Serves gRPC health only (the trivial unary call) until killed, with TCP_NODELAY like the
/// identity service.
pub async fn serve_trivial(addr: SocketAddr) {
    let (_reporter, health) = tonic_health::server::health_reporter();
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(health)
        .serve(addr)
        .await
        .expect("trivial gRPC server");
}

/// Verifies per second with `threads` threads verifying at once: what the machine really
/// gives when every core hashes (cores may share caches, memory bandwidth or a physical core).
pub fn argon2_parallel_rate(threads: usize, rounds: u32) -> f64 {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| argon2_verify_seconds(rounds));
        }
    });
    (threads as f64 * f64::from(rounds)) / started.elapsed().as_secs_f64()
}

/// Seconds per argon2id verify at the contract's cost (m=19456 KiB, t=2, p=1), one core.
/// The cost of encryption at rest: opening a sealed signing key (AES-256-GCM over a private
/// key the size of an RS256 PKCS#8 PEM, 1704 bytes) with the service's own code, per open.
pub fn sealed_key_open_seconds(rounds: u32) -> f64 {
    use identity_core::{Secret, keys::sealing::Sealing};
    let kek = Secret::new("YmVuY2ggb25seToga2V5LWVuY3J5cHRpb24ga2V5ISE=");
    let sealing = Sealing::resolve(Some(&kek), &[], "sqlite::memory:").expect("a KEK");
    let pem = vec![b'k'; 1704];
    let sealed = sealing.seal("bench-kid", &pem).expect("seal");
    let started = Instant::now();
    for _ in 0..rounds {
        let opened = sealing.open("bench-kid", &sealed.text, &sealed.kek_id).expect("open");
        assert_eq!(opened.len(), pem.len());
    }
    started.elapsed().as_secs_f64() / f64::from(rounds)
}

pub fn argon2_verify_seconds(rounds: u32) -> f64 {
    use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version, password_hash::SaltString};
    let params = Params::new(19_456, 2, 1, None).expect("argon2 params");
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let salt = SaltString::encode_b64(b"bench-salt-bytes").expect("salt");
    let hash = argon2.hash_password(b"correct horse battery", &salt).expect("hash").to_string();
    let parsed = argon2::PasswordHash::new(&hash).expect("parse");
    let started = Instant::now();
    for _ in 0..rounds {
        argon2.verify_password(b"correct horse battery", &parsed).expect("verify");
    }
    started.elapsed().as_secs_f64() / f64::from(rounds)
}
