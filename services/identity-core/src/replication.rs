//! The cross-replica half of the event bus, on PostgreSQL `LISTEN/NOTIFY`: no other server.
//!
//! Every event published on one replica is announced with `pg_notify` after the change it
//! reports has been committed, as JSON with the replica's id and the time (never a secret:
//! ids, a role, a reason). Every replica listens on a connection of its own and applies what
//! the others announce exactly as its own events: its caches forget, its watchers hear.
//!
//! While the listening connection is down, announcements may be missed, so the replica trusts
//! none of its cached sessions (`Authenticate` reads the database: slower, correct). It
//! reconnects by itself with back-off; once it listens again it drops everything it cached
//! and trusts its cache again. A log line and the observer say when it goes down and up.

use std::{sync::Arc, time::Duration};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, Value, sqlx::postgres::PgListener};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{clock, events::Event, sessions::LiveSessions};

/// The channel every replica listens on.
const CHANNEL: &str = "identity_events";

/// Told how replication goes (the service turns it into metrics).
pub trait ReplicationObserver: Send + Sync + 'static {
    /// The listening connection went up or down.
    fn listener(&self, up: bool);
    /// An event from another replica was applied here, `lag` after it was announced.
    fn applied(&self, lag: Duration);
}

/// An observer that observes nothing.
pub struct NoObserver;

impl ReplicationObserver for NoObserver {
    fn listener(&self, _up: bool) {}
    fn applied(&self, _lag: Duration) {}
}

impl crate::mail::MailObserver for NoObserver {
    fn queued(&self, _kind: crate::mail::MailKind) {}
    fn attempted(&self, _kind: crate::mail::MailKind, _outcome: crate::mail::MailOutcome) {}
}

/// What travels on the channel.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    /// The announcing replica.
    origin: String,
    /// When it was announced, Unix milliseconds.
    at_ms: i64,
    event: Event,
}

/// This replica's end of the channel.
pub(crate) struct Replication {
    origin: String,
    /// Sent to (or dropped with the `Identity`): the listener then stops.
    stop: watch::Sender<()>,
}

impl Replication {
    /// Starts listening (returns once listening, or once the first attempt failed: the replica
    /// then starts distrusting its cache and keeps trying).
    pub(crate) async fn start(
        db: &DatabaseConnection,
        live: Arc<LiveSessions>,
        events: crate::events::Events,
        observer: Arc<dyn ReplicationObserver>,
    ) -> Self {
        let origin = uuid::Uuid::new_v4().to_string();
        let (stop, stopped) = watch::channel(());
        let listener = Listener { db: db.clone(), origin: origin.clone(), live, events, observer };
        let first = listener.connect().await;
        tokio::spawn(listener.run(first, stopped));
        Replication { origin, stop }
    }

    /// Stops listening (before the pool closes, so that its closing is no "lost connection").
    pub(crate) fn stop(&self) {
        let _ = self.stop.send(());
    }

    /// Tells the other replicas. A failure is logged, not returned: the change itself is
    /// committed, and other replicas' caches re-read it within their time to live.
    pub(crate) async fn announce(&self, db: &DatabaseConnection, event: &Event) {
        notify(db, &self.origin, event).await;
    }
}

/// Announces `event` on the channel as `origin` (a replica, or an operator command).
pub(crate) async fn notify(db: &DatabaseConnection, origin: &str, event: &Event) {
    let envelope = Envelope { origin: origin.to_owned(), at_ms: clock::now_millis(), event: event.clone() };
    let payload = match serde_json::to_string(&envelope) {
        Ok(payload) => payload,
        Err(error) => return tracing::error!(%error, "cannot encode an event"),
    };
    let values: [Value; 2] = [CHANNEL.into(), payload.into()];
    let statement = Statement::from_sql_and_values(DbBackend::Postgres, "SELECT pg_notify($1, $2)", values);
    if let Err(error) = db.execute_raw(statement).await {
        tracing::warn!(%error, "could not announce an event to the other replicas");
    }
}

struct Listener {
    db: DatabaseConnection,
    origin: String,
    live: Arc<LiveSessions>,
    events: crate::events::Events,
    observer: Arc<dyn ReplicationObserver>,
}

impl Listener {
    async fn connect(&self) -> Option<PgListener> {
        let pool = self.db.get_postgres_connection_pool();
        let connected = async {
            let mut listener = PgListener::connect_with(pool).await?;
            // A lost connection is reported (`Ok(None)`) rather than silently re-established:
            // the cache must be distrusted for as long as it is down.
            listener.eager_reconnect(false);
            listener.listen(CHANNEL).await?;
            Ok::<_, sea_orm::sqlx::Error>(listener)
        };
        match connected.await {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for other replicas' events");
                None
            }
        }
    }

    async fn run(self, mut listener: Option<PgListener>, mut stopped: watch::Receiver<()>) {
        let mut backoff = Duration::from_millis(100);
        if listener.is_none() {
            self.live.trust(false);
            self.observer.listener(false);
        }
        loop {
            match listener.take() {
                Some(mut connected) => {
                    self.live.trust(true);
                    self.observer.listener(true);
                    backoff = Duration::from_millis(100);
                    loop {
                        let received = tokio::select! {
                            _ = stopped.changed() => return,
                            received = connected.try_recv() => received,
                        };
                        match received {
                            Ok(Some(notification)) => self.apply(notification.payload()),
                            Ok(None) => break,
                            Err(error) => {
                                tracing::warn!(%error, "lost the connection that listens for other replicas");
                                break;
                            }
                        }
                    }
                    // Announcements may be missed from now on: trust nothing cached.
                    self.live.trust(false);
                    self.observer.listener(false);
                    tracing::warn!("not listening for other replicas: sessions are read from the database");
                }
                None => {
                    tokio::select! {
                        _ = stopped.changed() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    listener = self.connect().await;
                    if listener.is_some() {
                        // Whatever was announced while nobody listened is unknown: forget all.
                        self.live.forget_all();
                        tracing::info!("listening for other replicas again");
                    }
                }
            }
        }
    }

    fn apply(&self, payload: &str) {
        let envelope: Envelope = match serde_json::from_str(payload) {
            Ok(envelope) => envelope,
            Err(error) => return tracing::warn!(%error, "an announcement that is not an event"),
        };
        if envelope.origin == self.origin {
            return;
        }
        self.live.apply(&envelope.event);
        self.events.broadcast(envelope.event);
        let lag = u64::try_from(clock::now_millis() - envelope.at_ms).unwrap_or(0);
        self.observer.applied(Duration::from_millis(lag));
    }
}
