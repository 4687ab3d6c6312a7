//! `graphql-facade`: the public face of the identity stack. Every request's credential is
//! resolved once through the identity service (`context`); GraphQL resolvers (`graphql`) map
//! to and from its gRPC API; `error` holds the one table of error codes. The facade never
//! touches the database: it sees only the generated `pb` types and its own view types.

pub mod config;
pub mod context;
pub mod error;
pub mod graphql;
pub mod identity;

use std::{future::Future, sync::Arc, time::Duration};

use poem::{
    EndpointExt, Route, Server, get,
    listener::{Acceptor, TcpAcceptor},
    middleware::CookieJarManager,
};

pub use config::{Config, ConfigError};

use crate::{
    graphql::{
        http::{self, GraphqlState},
        websocket,
    },
    identity::IdentityClient,
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
    let identity = IdentityClient::new(&config.identity_url, config.identity_timeout.into())?;
    let schema = graphql::schema(graphql::Limits {
        depth: config.max_depth,
        complexity: config.max_complexity,
        aliases: config.max_aliases,
    });
    let state = Arc::new(GraphqlState {
        schema,
        identity,
        max_body_bytes: config.max_body_bytes,
        graphiql: config.graphiql,
        sockets: websocket::Sockets::new(websocket::SocketLimits {
            per_session: config.ws_max_sockets_per_session,
            subscriptions: config.ws_max_subscriptions,
            init_timeout: config.ws_init_timeout.into(),
            ping_interval: config.ws_ping_interval.into(),
        }),
    });
    let app = Route::new()
        .at("/graphql", get(http::get).post(http::post))
        .at("/graphql/ws", get(websocket::upgrade))
        .data(state)
        // No request-logging middleware: it would log query strings, and a GET query may
        // carry a token.
        .with(CookieJarManager::new());
    let acceptor = TcpAcceptor::from_tokio(listener).map_err(StartError::Listen)?;
    let address = acceptor.local_addr().first().and_then(|addr| addr.as_socket_addr().copied());
    tracing::info!(?address, identity = %config.identity_url, "graphql facade listening");
    Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(app, shutdown, Some(Duration::from_secs(10)))
        .await
        .map_err(StartError::Listen)?;
    tracing::info!("graphql facade stopped");
    Ok(())
}
