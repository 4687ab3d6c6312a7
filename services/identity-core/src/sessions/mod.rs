//! Sessions and their tokens, one file per concern:
//!
//! - `cache`: what this process knows about sessions (the hot path's memory), their lifetime
//!   rule, and how events make entries stale;
//! - `login`: the login use case, step by step;
//! - `authenticate`: the per-request check of a credential;
//! - `refresh`: refresh-token rotation, the grace and reuse detection;
//! - `revoke`: listing sessions and ending them;
//! - `watch`: following one session until it ends.
//!
//! The hot path: `authenticate` verifies a JWT once (then `Keys` caches its claims) and keeps
//! what it learnt about each session in memory, so a credential seen before costs neither a
//! signature check nor a database read. Events published through `Identity::publish` drop the
//! stale entries at once; entries are re-read after `session_cache_ttl`, which bounds how late
//! a revocation by another replica is seen. `last_seen_at` is written at most once per
//! `Lifetime::touch_interval` per session, not once per request.

mod authenticate;
mod cache;
mod login;
mod refresh;
pub(crate) mod revoke;
mod watch;

pub(crate) use cache::LiveSessions;

use crate::keys::Claims;
use crate::users::User;

/// A credential presented by a caller.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    SessionToken(&'a str),
    AccessToken(&'a str),
}

/// Where a login comes from, as the caller reports it.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: String,
    pub user_agent: String,
}

/// An access token and the refresh token that replaces it.
#[derive(Debug, Clone)]
pub struct TokenPair {
    pub access_token: String,
    pub access_expires_at: i64,
    pub refresh_token: String,
    pub refresh_expires_at: i64,
    pub claims: Claims,
}

#[derive(Debug, Clone)]
pub struct LoginOutcome {
    pub user: User,
    pub session_id: String,
    pub session_token: String,
    pub tokens: TokenPair,
}

/// A session as listed to its owner or a manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    pub id: String,
    pub user_id: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
    pub idle_expires_at: i64,
    pub client_ip: String,
    pub user_agent: String,
    pub current: bool,
}
