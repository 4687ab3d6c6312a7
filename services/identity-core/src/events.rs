//! The one bus of the domain: typed events for whatever another part caches or watches.
//!
//! `Identity::publish` is the only way onto it. It first lets this process's caches forget
//! what the event makes stale (synchronously: the caller's next request already sees it), then
//! broadcasts it to the watchers (`WatchSession`), then (on PostgreSQL) announces it to the
//! other replicas (`replication`), which apply it the same way. Events carry ids, never
//! secrets.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::sync::broadcast;

/// Why a session was revoked: stored with the session, and sent to its watchers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    /// The session's holder logged out.
    Logout,
    /// Its owner or a manager revoked it (`RevokeSession`).
    Revoked,
    /// Its refresh token was revoked (`RevokeToken`).
    TokenRevoked,
    /// A spent refresh token was used again after the grace: theft.
    RefreshTokenReuse,
    /// The user changed their password (their other sessions end).
    PasswordChanged,
    UserDeactivated,
    UserDeleted,
    /// The session is gone from the database (its user was deleted elsewhere).
    Deleted,
}

impl RevokeReason {
    const ALL: [RevokeReason; 8] = [
        RevokeReason::Logout,
        RevokeReason::Revoked,
        RevokeReason::TokenRevoked,
        RevokeReason::RefreshTokenReuse,
        RevokeReason::PasswordChanged,
        RevokeReason::UserDeactivated,
        RevokeReason::UserDeleted,
        RevokeReason::Deleted,
    ];

    /// The stored and transmitted name.
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Logout => "logout",
            RevokeReason::Revoked => "revoked",
            RevokeReason::TokenRevoked => "token_revoked",
            RevokeReason::RefreshTokenReuse => "refresh_token_reuse",
            RevokeReason::PasswordChanged => "password_changed",
            RevokeReason::UserDeactivated => "user_deactivated",
            RevokeReason::UserDeleted => "user_deleted",
            RevokeReason::Deleted => "deleted",
        }
    }

    /// The reason of a stored name (`Revoked` for one this version does not know).
    pub fn parse(name: &str) -> Self {
        Self::ALL.into_iter().find(|reason| reason.as_str() == name).unwrap_or(RevokeReason::Revoked)
    }
}

impl Serialize for RevokeReason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RevokeReason {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|name| RevokeReason::parse(&name))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SessionEventKind {
    Revoked { reason: RevokeReason },
    RoleChanged,
    Expired,
}

/// Something that happened to one session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEvent {
    #[serde(flatten)]
    pub kind: SessionEventKind,
    pub session_id: String,
    pub user_id: String,
    /// The user's role at the time of the event.
    pub role: String,
    pub at: i64,
}

impl SessionEvent {
    /// After this event the session is over.
    pub fn ends_session(&self) -> bool {
        matches!(self.kind, SessionEventKind::Revoked { .. } | SessionEventKind::Expired)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// One session was revoked, expired or saw its user's role change.
    Session(SessionEvent),
    /// A user's email, role or status changed, or the user was deleted: whatever is cached of
    /// them is stale.
    UserChanged { user_id: String },
    /// The signing keys changed (a key published, activated early, or revoked): every replica
    /// re-reads them.
    KeysChanged,
}

#[derive(Clone, Debug)]
pub struct Events {
    sender: broadcast::Sender<Event>,
}

impl Events {
    pub fn new() -> Self {
        Events { sender: broadcast::channel(4096).0 }
    }

    pub(crate) fn broadcast(&self, event: Event) {
        // No receiver is not an error: nobody is watching.
        let _ = self.sender.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_travel_as_json_and_come_back_the_same() {
        let events = [
            Event::Session(SessionEvent {
                kind: SessionEventKind::Revoked { reason: RevokeReason::PasswordChanged },
                session_id: "s".into(),
                user_id: "u".into(),
                role: "user".into(),
                at: 1_700_000_000,
            }),
            Event::Session(SessionEvent {
                kind: SessionEventKind::RoleChanged,
                session_id: "s".into(),
                user_id: "u".into(),
                role: "manager".into(),
                at: 1,
            }),
            Event::UserChanged { user_id: "u".into() },
            Event::KeysChanged,
        ];
        for event in events {
            let json = serde_json::to_string(&event).unwrap();
            assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), event, "{json}");
        }
    }

    #[test]
    fn every_reason_survives_its_stored_name() {
        for reason in RevokeReason::ALL {
            assert_eq!(RevokeReason::parse(reason.as_str()), reason);
        }
        assert_eq!(RevokeReason::parse("something newer"), RevokeReason::Revoked);
    }
}
