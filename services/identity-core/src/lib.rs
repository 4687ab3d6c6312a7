//! The identity domain: users, passwords, sessions, tokens, signing keys, login throttling and
//! session events, with their storage (sea-orm). No transport lives here: no tonic, no poem,
//! no status codes. Transports call `Identity` and map `CoreError` once at their boundary.
//!
//! One module per noun: `users` (accounts, roles, the principal, input rules), `sessions`
//! (a folder, a file per concern), `keys` (signing and verifying), `passwords` (argon2 and the
//! policy), `throttle` (the login budget), `tokens` (opaque secrets, sealing), `events` (the
//! bus), `settings`, `store` (opening the database), `entities` (the tables), `error`, `clock`,
//! `blocking` (the CPU pool). The contract they keep is in `docs/identity-service.md`.

mod blocking;
pub mod clock;
mod entities;
pub mod error;
pub mod events;
pub mod keys;
mod passwords;
pub mod sessions;
pub mod settings;
pub mod store;
mod throttle;
mod tokens;
pub mod users;

use std::sync::Arc;

use sea_orm::DatabaseConnection;

pub use error::{CoreError, CoreResult, DeadReason, Violation};
pub use events::{Event, Events, RevokeReason, SessionEvent, SessionEventKind};
pub use keys::{Claims, PublicJwk};
pub use sessions::{ClientInfo, Credential, LoginOutcome, SessionView, TokenPair};
pub use settings::{JwtAlg, PasswordCost, Secret, Settings, ThrottleSettings};
pub use store::StoreOptions;
pub use users::{NewUser, Principal, Role, User, UserPage, UserPatch, check_bootstrap_manager, limits};

use crate::{blocking::BlockingPool, keys::Keys, passwords::Passwords, sessions::LiveSessions};

/// The identity domain, cheap to clone and share between tasks.
#[derive(Clone)]
pub struct Identity {
    inner: Arc<Inner>,
}

struct Inner {
    db: DatabaseConnection,
    settings: Settings,
    passwords: Passwords,
    keys: Keys,
    events: Events,
    live: LiveSessions,
}

impl Identity {
    /// Connects, migrates, and loads (or creates) the signing key.
    pub async fn open(database_url: &str, store: &StoreOptions, settings: Settings) -> CoreResult<Self> {
        settings.validate()?;
        let db = store::open(database_url, store).await?;
        let pool = BlockingPool::per_core();
        let keys = Keys::load(&db, &settings, pool.clone()).await?;
        let passwords = Passwords::new(settings.password_cost, pool).await?;
        let live = LiveSessions::new(settings.session_cache_ttl);
        Ok(Identity { inner: Arc::new(Inner { db, settings, passwords, keys, events: Events::new(), live }) })
    }

    /// Readiness: the database answers.
    pub async fn ping(&self) -> CoreResult<()> {
        store::ping(&self.inner.db).await
    }

    /// The public signing keys (current and previous).
    pub fn jwks(&self) -> &[PublicJwk] {
        self.inner.keys.jwks()
    }

    pub fn events(&self) -> &Events {
        &self.inner.events
    }

    /// The one way onto the bus: this process's caches forget what `event` makes stale, then
    /// the watchers hear of it.
    pub(crate) fn publish(&self, event: Event) {
        self.inner.live.apply(&event);
        self.inner.events.broadcast(event);
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Closes the database pool (graceful shutdown).
    pub async fn close(&self) {
        if let Err(error) = self.inner.db.clone().close().await {
            tracing::warn!(%error, "closing the database");
        }
    }

    pub(crate) fn db(&self) -> &DatabaseConnection {
        &self.inner.db
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub(crate) fn passwords(&self) -> &Passwords {
        &self.inner.passwords
    }

    pub(crate) fn live_sessions(&self) -> &LiveSessions {
        &self.inner.live
    }
}
