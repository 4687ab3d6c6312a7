//! `graphql-facade`: the public face of the identity stack. Every request's credential is
//! read by one set of rules (`credential`) and resolved once through the identity service
//! (`context`); GraphQL resolvers (`graphql`) map to and from its gRPC API; `error` holds the
//! one table of error codes and renders it per transport. The facade never touches the
//! database: it sees only the generated `pb` types and its own view types (`convert`).
//!
//! Modules, lowest first (each imports only modules above it in this list):
//! `config`, `credential`, `error`, `metrics`, `server` — `accounts` (form errors) —
//! `identity` (the gRPC client) — `discovery` — `browser` (cookies, CSRF) — `context` —
//! `login` — `social` — `sockets`, `graphql` (the schema) — `state` — `rest`, `convert` —
//! `graphql_http`, `graphql_ws`, `hasura`, `pages`, `social_http`.

pub mod accounts;
pub mod browser;
pub mod config;
pub mod context;
pub mod convert;
pub mod credential;
pub mod discovery;
pub mod error;
pub mod graphiql;
pub mod graphql;
pub mod graphql_http;
pub mod graphql_ws;
pub mod hasura;
pub mod identity;
pub mod login;
pub mod metrics;
pub mod pages;
pub mod rest;
pub mod server;
pub mod social;
pub mod social_http;
pub mod sockets;
pub mod state;

use std::{future::Future, sync::Arc, time::Duration};

use poem::{
    EndpointExt, Route, get,
    middleware::{CookieJarManager, SetHeader},
};

pub use config::{Config, ConfigError};

use crate::{
    browser::Cookies,
    discovery::Discovery,
    identity::IdentityClient,
    metrics::{Metrics, RequestMetrics},
    state::{AppState, HasuraSettings},
};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("FACADE_HTTP_ADDR: {0}")]
    Listen(std::io::Error),
}

/// Serves HTTP on `listener` until `shutdown` completes. The identity service need not be up:
/// requests that need it answer SERVICE_UNAVAILABLE until it is.
pub async fn serve(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StartError> {
    config.validate()?;
    let metrics = Arc::new(Metrics::new());
    let tls = config.identity_tls()?;
    let identity = IdentityClient::new(
        &config.identity_urls(),
        config.identity_connections,
        config.identity_timeout.into(),
        tls.as_ref(),
        metrics.clone(),
    )
    .map_err(|error| ConfigError(format!("FACADE_IDENTITY_URL: {error}")))?;
    let discovery = Discovery::new(identity.clone());
    let (schema, documents) = graphql::schema(graphql::Limits {
        depth: config.max_depth,
        complexity: config.max_complexity,
        aliases: config.max_aliases,
    });
    let state = Arc::new(AppState {
        schema,
        documents,
        identity,
        cookies: Cookies::new(config.cookie_secure, discovery.clone()),
        discovery,
        metrics: metrics.clone(),
        hasura: HasuraSettings {
            anonymous_role: config.hasura_anonymous_role.clone(),
            cache_max_age: config.hasura_cache_max_age.into(),
        },
        max_body_bytes: config.max_body_bytes,
        proxies: credential::TrustedProxies::new(config.trusted_proxies.clone()),
        graphiql: config.graphiql,
        sockets: sockets::Sockets::new(sockets::SocketLimits {
            per_session: config.ws_max_sockets_per_session,
            subscriptions: config.ws_max_subscriptions,
            init_timeout: config.ws_init_timeout.into(),
            ping_interval: config.ws_ping_interval.into(),
        }),
    });
    let app = Route::new()
        .at("/", get(pages::HtmlPage::demo()))
        .at("/account/verify-email", get(pages::HtmlPage::verify_email()))
        .at("/account/confirm-email", get(pages::HtmlPage::confirm_email()))
        .at("/account/reset-password", get(pages::HtmlPage::reset_password()))
        .at("/account/account.js", get(pages::Asset::ACCOUNT_SCRIPT))
        .at("/account/account.css", get(pages::Asset::ACCOUNT_STYLE))
        .at(format!("/graphiql/{}/:name", graphiql::VERSION), get(graphiql::asset))
        .at("/graphql", get(graphql_http::get).post(graphql_http::post))
        .at("/graphql/ws", get(graphql_ws::upgrade))
        .nest("/api", rest::routes())
        .at("/.well-known/jwks.json", get(pages::jwks))
        .at("/.well-known/openid-configuration", get(pages::openid_configuration))
        .at("/hasura/webhook", get(hasura::get).post(hasura::post))
        .at("/auth/:provider/login", get(social_http::login))
        .at("/auth/:provider/link", get(social_http::link_account))
        .at("/auth/:provider/callback", get(social_http::callback))
        .at("/healthz", get(pages::healthz))
        .at("/readyz", get(pages::readyz))
        .at("/metrics", get(pages::metrics))
        .data(state)
        // Whatever poem refuses before a handler runs (no such route, wrong method) is
        // `{"detail"}` JSON too.
        .catch_all_error(|error: poem::Error| async move { error::poem_refusal(error) })
        .with(CookieJarManager::new())
        .with(SetHeader::new().overriding("x-content-type-options", "nosniff"))
        // Counts requests; no request-logging middleware: it would log query strings, and a
        // GET query may carry a token.
        .with(RequestMetrics(metrics));
    let address = listener.local_addr().ok();
    tracing::info!(?address, identity = %config.identity_url, "graphql facade listening");
    server::run(listener, app, shutdown, Duration::from_secs(10)).await.map_err(StartError::Listen)?;
    tracing::info!("graphql facade stopped");
    Ok(())
}
