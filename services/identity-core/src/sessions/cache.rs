//! What this process knows about sessions: by id, and session-token digest to id. Entries are
//! dropped by the events that make them stale (`LiveSessions::apply`, called for every event
//! published) and re-read after the cache's time to live.
//!
//! A fill reads the database, then caches what it read; an invalidation may land in between.
//! Every invalidation advances an epoch, and a fill that finds the epoch moved since it started
//! takes its entry out again: a stale read is never left behind.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use moka::sync::Cache;

use crate::{
    clock,
    entities::sessions,
    error::{CoreError, CoreResult, DeadReason},
    events::{Event, SessionEvent},
    users::User,
};

/// The lifetime rule of every session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lifetime {
    idle: i64,
}

impl Lifetime {
    pub(crate) fn new(idle: Duration) -> Self {
        Lifetime { idle: clock::secs(idle) }
    }

    /// A session dies at its absolute expiry or `idle` after its last use, whichever comes
    /// first.
    pub(crate) fn deadline(self, last_seen: i64, expires_at: i64) -> i64 {
        last_seen.saturating_add(self.idle).min(expires_at)
    }

    /// How often a session's use is written down: a tenth of the idle lifetime, between 1 s and
    /// 60 s. Idle expiry stays accurate to about that, and a busy session costs one write a
    /// minute.
    pub(crate) fn touch_interval(self) -> i64 {
        (self.idle / 10).clamp(1, 60)
    }
}

/// One session as this process knows it.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) session: sessions::Model,
    /// `None` once the user is gone.
    pub(crate) user: Option<User>,
    last_seen: AtomicI64,
    persisted_seen: AtomicI64,
}

impl Live {
    pub(crate) fn new(session: sessions::Model, user: Option<User>) -> Self {
        Live {
            last_seen: AtomicI64::new(session.last_seen_at),
            persisted_seen: AtomicI64::new(session.last_seen_at),
            session,
            user,
        }
    }

    /// The latest use this process knows of.
    pub(crate) fn last_seen(&self) -> i64 {
        self.last_seen.load(Ordering::Relaxed)
    }

    pub(crate) fn deadline(&self, lifetime: Lifetime) -> i64 {
        lifetime.deadline(self.last_seen(), self.session.expires_at)
    }

    /// The user, if the session is alive at `now`; else why not.
    pub(crate) fn check(&self, lifetime: Lifetime, now: i64) -> CoreResult<User> {
        let dead = |reason| Err(CoreError::SessionDead(reason));
        if self.session.revoked_at.is_some() {
            return dead(DeadReason::SessionRevoked);
        }
        if now >= self.deadline(lifetime) {
            return dead(DeadReason::SessionExpired);
        }
        match &self.user {
            Some(user) if user.is_active => Ok(user.clone()),
            _ => dead(DeadReason::UserInactive),
        }
    }

    /// Marks the session used at `now`; `Some(now)` when that use should be written down (at
    /// most once per touch interval, by one caller).
    pub(crate) fn mark_used(&self, lifetime: Lifetime, now: i64) -> Option<i64> {
        self.last_seen.fetch_max(now, Ordering::Relaxed);
        let persisted = self.persisted_seen.load(Ordering::Relaxed);
        if now - persisted < lifetime.touch_interval() {
            return None;
        }
        self.persisted_seen.compare_exchange(persisted, now, Ordering::Relaxed, Ordering::Relaxed).ok().map(|_| now)
    }

    /// Keeps a use this process saw before the entry was re-read.
    pub(crate) fn seen_at_least(&self, last_seen: i64) {
        self.last_seen.fetch_max(last_seen, Ordering::Relaxed);
    }
}

pub(crate) struct LiveSessions {
    by_id: Cache<String, Arc<Live>>,
    by_token: Cache<[u8; 32], String>,
    epoch: AtomicU64,
    /// False while this replica may be missing other replicas' events: nothing cached is used
    /// and nothing is cached.
    trusted: AtomicBool,
}

impl LiveSessions {
    pub(crate) fn new(ttl: Duration) -> Self {
        LiveSessions {
            by_id: Cache::builder().max_capacity(200_000).time_to_live(ttl).build(),
            by_token: Cache::builder().max_capacity(200_000).time_to_live(ttl).build(),
            epoch: AtomicU64::new(0),
            trusted: AtomicBool::new(true),
        }
    }

    pub(crate) fn get(&self, session_id: &str) -> Option<Arc<Live>> {
        if !self.trusted.load(Ordering::Acquire) {
            return None;
        }
        self.by_id.get(session_id)
    }

    /// Whether what is cached may be used (see `replication`).
    pub(crate) fn trust(&self, trusted: bool) {
        self.trusted.store(trusted, Ordering::Release);
    }

    /// Forgets every session (the events that would have told what changed were missed).
    pub(crate) fn forget_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.by_id.invalidate_all();
    }

    pub(crate) fn session_of_token(&self, digest: &[u8; 32]) -> Option<String> {
        self.by_token.get(digest)
    }

    /// A token always names the same session: this never goes stale.
    pub(crate) fn remember_token(&self, digest: [u8; 32], session_id: String) {
        self.by_token.insert(digest, session_id);
    }

    /// Call before reading what `fill` will cache.
    pub(crate) fn begin_fill(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Caches `live`, read after `begin_fill` returned `started`, unless an invalidation came
    /// since.
    pub(crate) fn fill(&self, started: u64, live: Arc<Live>) {
        if !self.trusted.load(Ordering::Acquire) {
            return;
        }
        let session_id = live.session.id.clone();
        self.by_id.insert(session_id.clone(), live);
        if self.epoch.load(Ordering::Acquire) != started {
            self.by_id.invalidate(&session_id);
        }
    }

    /// Forgets what `event` makes stale.
    pub(crate) fn apply(&self, event: &Event) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        match event {
            Event::Session(SessionEvent { session_id, .. }) => self.by_id.invalidate(session_id),
            Event::UserChanged { user_id } => {
                let stale: Vec<Arc<String>> =
                    self.by_id.iter().filter(|(_, live)| live.session.user_id == *user_id).map(|(id, _)| id).collect();
                for id in stale {
                    self.by_id.invalidate(id.as_str());
                }
            }
            // Keys are not sessions: `Keys` re-reads them.
            Event::KeysChanged => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str, user_id: &str) -> sessions::Model {
        sessions::Model {
            id: id.into(),
            user_id: user_id.into(),
            token_hash: String::new(),
            created_at: 0,
            last_seen_at: 100,
            expires_at: 1_000,
            revoked_at: None,
            revoke_reason: None,
            client_ip: String::new(),
            user_agent: String::new(),
        }
    }

    #[test]
    fn a_session_dies_at_the_first_of_its_idle_and_absolute_expiry() {
        let lifetime = Lifetime::new(Duration::from_secs(50));
        assert_eq!(lifetime.deadline(100, 1_000), 150);
        assert_eq!(lifetime.deadline(990, 1_000), 1_000);
        assert_eq!(lifetime.touch_interval(), 5);
        assert_eq!(Lifetime::new(Duration::from_secs(86_400)).touch_interval(), 60);
        assert_eq!(Lifetime::new(Duration::from_secs(2)).touch_interval(), 1);
    }

    #[test]
    fn a_fill_that_raced_an_invalidation_leaves_nothing_behind() {
        let cache = LiveSessions::new(Duration::from_secs(60));
        let started = cache.begin_fill();
        cache.apply(&Event::UserChanged { user_id: "u".into() });
        cache.fill(started, Arc::new(Live::new(session("s", "u"), None)));
        assert!(cache.get("s").is_none(), "a stale read was cached");
        let started = cache.begin_fill();
        cache.fill(started, Arc::new(Live::new(session("s", "u"), None)));
        assert!(cache.get("s").is_some());
        cache.apply(&Event::UserChanged { user_id: "u".into() });
        assert!(cache.get("s").is_none());
    }

    #[test]
    fn nothing_cached_is_used_or_kept_while_untrusted() {
        let cache = LiveSessions::new(Duration::from_secs(60));
        let started = cache.begin_fill();
        cache.fill(started, Arc::new(Live::new(session("s", "u"), None)));
        cache.trust(false);
        assert!(cache.get("s").is_none());
        let started = cache.begin_fill();
        cache.fill(started, Arc::new(Live::new(session("t", "u"), None)));
        cache.forget_all();
        cache.trust(true);
        assert!(cache.get("s").is_none() && cache.get("t").is_none());
    }

    #[test]
    fn use_is_written_down_once_per_interval() {
        let lifetime = Lifetime::new(Duration::from_secs(100));
        let live = Live::new(session("s", "u"), None);
        assert_eq!(live.mark_used(lifetime, 105), None);
        assert_eq!(live.mark_used(lifetime, 110), Some(110));
        assert_eq!(live.mark_used(lifetime, 111), None);
        assert_eq!(live.last_seen(), 111);
    }
}
