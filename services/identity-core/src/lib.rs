//! The identity domain: users, passwords, sessions, tokens, signing keys, login throttling and
//! session events, with their storage (sea-orm). No transport lives here: no tonic, no poem,
//! no status codes. Transports call `Identity` and map `CoreError` once at their boundary.
//!
//! One module per noun: `users` (accounts, roles, the principal, input rules), `sessions`
//! (a folder, a file per concern), `keys` (signing and verifying), `passwords` (argon2 and the
//! policy), `throttle` (the login budget), `tokens` (opaque secrets, sealing), `events` (the
//! bus), `settings`, `store` (opening the database), `entities` (the tables), `error`, `clock`,
//! `blocking` (the CPU pool), `accounts` (verifying, resetting, changing the address by
//! email links) and `mail` (the outbox and its sender), `social` (signing in with providers), `janitor` (deleting what is past its life), `backup` (a consistent copy of SQLite). The contract they keep is in `docs/identity-service.md`.

pub mod accounts;
pub mod backup;
mod blocking;
pub mod clock;
mod entities;
pub mod error;
pub mod events;
pub mod janitor;
pub mod keys;
pub mod mail;
mod passwords;
pub mod replication;
pub mod sessions;
pub mod settings;
pub mod social;
pub mod store;
mod throttle;
mod tokens;
pub mod users;

use std::sync::Arc;

use sea_orm::DatabaseConnection;

pub use error::{CoreError, CoreResult, DeadReason, SocialError, Violation};
pub use events::{Event, Events, RevokeReason, SessionEvent, SessionEventKind};
pub use janitor::Swept;
pub use keys::{Claims, KeyClock, KeyInfo, KeyState, PublicJwk, admin::KeyAdmin, format_ms};
pub use mail::{MailKind, MailObserver, MailOutcome, outbox::Backlog};
pub use replication::{NoObserver, ReplicationObserver};
pub use sessions::{ClientInfo, Credential, LoginOutcome, SessionView, TokenPair};
pub use settings::{
    EmailSettings, EmailVerification, JwtAlg, KeySettings, PasswordCost, Secret, Settings, ThrottleSettings,
};
pub use store::{StartupLock, StoreOptions};
pub use users::{NewUser, Principal, Role, User, UserPage, UserPatch, check_bootstrap_manager, limits};

use crate::{
    blocking::BlockingPool,
    keys::{Keys, sealing::Sealing},
    passwords::Passwords,
    replication::Replication,
    sessions::LiveSessions,
};

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
    live: Arc<LiveSessions>,
    /// On PostgreSQL: the other replicas hear of our events, and we of theirs.
    replication: Option<Replication>,
    mail: Mail,
    social: social::Social,
}

/// What the outbox's sender needs (`mail::outbox`).
pub(crate) struct Mail {
    transport: mail::Transport,
    from: lettre::message::Mailbox,
    observer: Arc<dyn MailObserver>,
    /// Notified when this process queued a message.
    queued: tokio::sync::Notify,
}

impl Mail {
    pub(crate) async fn send(&self, letter: &mail::Letter) -> Result<(), String> {
        self.transport.send(&self.from, letter).await
    }
}

/// Everything the domain reports to the service's metrics.
pub trait Observer: ReplicationObserver + MailObserver {}

impl<T: ReplicationObserver + MailObserver> Observer for T {}

impl Identity {
    /// Connects, migrates, and loads (or creates) the signing key, holding the startup lock
    /// (replicas starting together take turns). The lock is returned still held: the caller
    /// finishes what must happen once for all replicas (the bootstrap manager), then releases
    /// it. On PostgreSQL, listens for the other replicas' events before returning.
    pub async fn open(
        database_url: &str,
        store: &StoreOptions,
        settings: Settings,
        observer: Arc<dyn Observer>,
    ) -> CoreResult<(Self, StartupLock)> {
        settings.validate()?;
        let transport = mail::Transport::new(&settings.email)?;
        let from = mail::parse_from("email.from", &settings.email.from)?;
        let sealing = Sealing::resolve(
            settings.keys.encryption_key.as_ref(),
            &settings.keys.previous_encryption_keys,
            database_url,
        )?;
        if let Some(path) = &sealing.generated {
            tracing::warn!(
                path = %path.display(),
                "generated a key-encryption key for the signing keys: back it up with the database \
                 (without it the stored keys cannot sign), or set IDENTITY_KEY_ENCRYPTION_KEY"
            );
        }
        let lock = StartupLock::acquire(database_url, store).await?;
        let db = store::open(database_url, store).await?;
        let pool = BlockingPool::per_core();
        let keys = Keys::load(&db, &settings, pool.clone(), sealing).await?;
        let passwords = Passwords::new(settings.password_cost, pool).await?;
        let live = Arc::new(LiveSessions::new(settings.session_cache_ttl));
        let events = Events::new();
        let replication = match store::is_postgres(database_url) {
            true => {
                let observer: Arc<dyn ReplicationObserver> = observer.clone();
                Some(Replication::start(&db, Arc::clone(&live), events.clone(), observer).await)
            }
            false => None,
        };
        let mail = Mail { transport, from, observer, queued: tokio::sync::Notify::new() };
        let social = social::Social::new(&settings.providers)?;
        let inner = Inner { db, settings, passwords, keys, events, live, replication, mail, social };
        Ok((Identity { inner: Arc::new(inner) }, lock))
    }

    /// Readiness: the database answers.
    pub async fn ping(&self) -> CoreResult<()> {
        store::ping(&self.inner.db).await
    }

    /// The public signing keys relying parties need now: next, current and retired.
    pub fn jwks(&self) -> Vec<PublicJwk> {
        self.inner.keys.jwks()
    }

    /// The algorithm new tokens are signed with.
    pub fn signing_algorithm(&self) -> JwtAlg {
        self.inner.keys.algorithm()
    }

    /// Every stored signing key and its state now.
    pub fn signing_keys(&self) -> Vec<KeyInfo> {
        self.inner.keys.list()
    }

    /// The current key's age and the time to the next activation.
    pub fn key_clock(&self) -> KeyClock {
        self.inner.keys.clock()
    }

    /// The scheduled step of the key lifecycle (every replica, each second): re-reads the
    /// keys if they changed, publishes the next key when due (one replica does, and tells the
    /// others), deletes keys past their life.
    pub async fn maintain_keys(&self) -> CoreResult<()> {
        if self.inner.keys.tick().await? {
            self.publish(Event::KeysChanged).await;
        }
        Ok(())
    }

    /// Re-reads the signing keys now (another replica or an operator changed them).
    pub async fn reload_keys(&self) -> CoreResult<()> {
        self.inner.keys.reload(false).await.map(drop)
    }

    pub fn events(&self) -> &Events {
        &self.inner.events
    }

    /// The one way onto the bus: this process's caches forget what `event` makes stale, the
    /// other replicas are told, and the watchers hear of it.
    pub(crate) async fn publish(&self, event: Event) {
        self.inner.live.apply(&event);
        if let Some(replication) = &self.inner.replication {
            replication.announce(self.db(), &event).await;
        }
        self.inner.events.broadcast(event);
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Closes the database pool (graceful shutdown).
    pub async fn close(&self) {
        if let Some(replication) = &self.inner.replication {
            replication.stop();
        }
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

    pub(crate) fn mail(&self) -> &Mail {
        &self.inner.mail
    }

    pub(crate) fn live_sessions(&self) -> &LiveSessions {
        &self.inner.live
    }
}
