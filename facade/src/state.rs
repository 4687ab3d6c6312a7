//! What every route needs, built once at start and shared.

use std::{sync::Arc, time::Duration};

use crate::{
    browser::Cookies,
    credential::TrustedProxies,
    discovery::Discovery,
    graphql::{AppSchema, Documents},
    identity::IdentityClient,
    metrics::Metrics,
    sockets::Sockets,
};

pub struct AppState {
    pub schema: AppSchema,
    /// What the schema parsed (`graphql::Documents`).
    pub documents: Documents,
    pub identity: IdentityClient,
    pub discovery: Discovery,
    pub cookies: Cookies,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
    pub graphiql: bool,
    pub sockets: Sockets,
    pub hasura: HasuraSettings,
    pub proxies: TrustedProxies,
}

#[derive(Debug, Clone)]
pub struct HasuraSettings {
    pub anonymous_role: Option<String>,
    pub cache_max_age: Duration,
}
