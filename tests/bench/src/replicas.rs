//! Scenario 9: how long after a revocation returns on one replica every other replica refuses
//! the session, and every facade's websocket on it closes. Three identity services (release
//! processes) on one fresh PostgreSQL database, two facades, each on another replica than the
//! one that revokes.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use e2e::{Frame, WsClient};
use identity_proto::pb;
use tonic::transport::Channel;

use crate::procs::{Proc, free_addr, sibling};

/// What the scenario measured, in milliseconds.
pub struct Lag {
    pub replicas: usize,
    pub trials: usize,
    /// Mean time between two polls of one replica (one `Authenticate` round trip).
    pub poll_ms: f64,
    /// From the revoking call returning to the first refusal, on each other replica.
    pub refusal: Percentiles,
    /// From the revoking call returning to each other facade's socket receiving its close.
    pub socket: Percentiles,
}

pub struct Percentiles {
    pub samples: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples.get(((samples.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0.0);
        Percentiles { samples: samples.len(), p50: at(0.5), p99: at(0.99), max: samples.last().copied().unwrap_or(0.0) }
    }
}

fn identity(database_url: &str) -> Proc {
    let grpc = free_addr();
    let mut command = Command::new(sibling("identity-service"));
    command
        .env("IDENTITY_DATABASE_URL", database_url)
        // Required on PostgreSQL (the signing keys are sealed under it); fixed here.
        .env("IDENTITY_KEY_ENCRYPTION_KEY", "YmVuY2ggb25seToga2V5LWVuY3J5cHRpb24ga2V5ISE=")
        .env("IDENTITY_GRPC_ADDR", grpc.to_string())
        .env("IDENTITY_JWT_ALG", "ES256")
        .env("RUST_LOG", "warn");
    Proc::spawn("identity", command, grpc)
}

fn facade(identity: &Proc) -> Proc {
    let http = free_addr();
    let mut command = Command::new(sibling("graphql-facade"));
    command
        .env("FACADE_HTTP_ADDR", http.to_string())
        .env("FACADE_IDENTITY_URL", format!("http://{}", identity.addr))
        .env("RUST_LOG", "warn");
    Proc::spawn("facade", command, http)
}

async fn channel(proc: &Proc) -> Channel {
    Channel::from_shared(format!("http://{}", proc.addr)).unwrap().tcp_nodelay(true).connect().await.unwrap()
}

/// Polls `Authenticate` with `token` on `channel` until it is refused; when, and how many polls.
async fn first_refusal(channel: Channel, token: String) -> (Instant, u32) {
    let mut auth = e2e::Auth::new(channel);
    let mut polls = 0;
    loop {
        polls += 1;
        if auth.authenticate(e2e::access(&token)).await.is_err() {
            return (Instant::now(), polls);
        }
    }
}

pub async fn run(database_url: &str, trials: usize, socket_trials: usize) -> Lag {
    let mut replicas: Vec<Proc> = (0..3).map(|_| identity(database_url)).collect();
    for replica in &mut replicas {
        replica.wait_listening();
    }
    let mut facades: Vec<Proc> = replicas[1..].iter().map(facade).collect();
    for facade in &mut facades {
        facade.wait_listening();
    }
    let channels = [channel(&replicas[0]).await, channel(&replicas[1]).await, channel(&replicas[2]).await];
    e2e::sign_up(&mut e2e::Users::new(channels[0].clone()), "lag").await;
    let mut revoker = e2e::Auth::new(channels[0].clone());

    let mut refusals = Vec::new();
    let (mut polls, mut polling) = (0u32, Duration::ZERO);
    for _ in 0..trials {
        let login = e2e::log_in(&mut revoker, "lag").await;
        // The others know the session (alive, cached) before it ends.
        for channel in &channels[1..] {
            e2e::Auth::new(channel.clone()).authenticate(e2e::access(&login.access_token)).await.unwrap();
        }
        let watchers: Vec<_> = channels[1..]
            .iter()
            .map(|channel| tokio::spawn(first_refusal(channel.clone(), login.access_token.clone())))
            .collect();
        let started = Instant::now();
        revoker.logout(e2e::bearer(pb::LogoutRequest {}, &login.access_token)).await.unwrap();
        let returned = Instant::now();
        for watcher in watchers {
            let (refused, count) = watcher.await.unwrap();
            refusals.push(refused.saturating_duration_since(returned).as_secs_f64() * 1000.0);
            polls += count;
            polling += refused.duration_since(started);
        }
    }

    let mut closes = Vec::new();
    for _ in 0..socket_trials {
        let login = e2e::log_in(&mut revoker, "lag").await;
        let mut sockets = Vec::new();
        for facade in &facades {
            let mut socket = WsClient::connect_to(facade.addr, "graphql-transport-ws", &[]).await;
            let ack = socket.init(serde_json::json!({"sessionToken": login.session_token})).await;
            assert!(matches!(ack, Frame::Json(ref message) if message["type"] == "connection_ack"), "{ack:?}");
            sockets.push(socket);
        }
        revoker.logout(e2e::bearer(pb::LogoutRequest {}, &login.access_token)).await.unwrap();
        let returned = Instant::now();
        let closed = futures::future::join_all(sockets.iter_mut().map(|socket| async move {
            loop {
                if let Frame::Closed(code, _) = socket.next().await {
                    assert_eq!(code, 4401);
                    return Instant::now();
                }
            }
        }))
        .await;
        closes.extend(closed.into_iter().map(|at| at.saturating_duration_since(returned).as_secs_f64() * 1000.0));
    }
    drop(facades);
    drop(replicas);
    Lag {
        replicas: 3,
        trials,
        poll_ms: polling.as_secs_f64() * 1000.0 / f64::from(polls.max(1)),
        refusal: Percentiles::of(refusals),
        socket: Percentiles::of(closes),
    }
}
