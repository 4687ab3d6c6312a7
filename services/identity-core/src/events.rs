//! Session events, published in-process for `WatchSession` and anyone else who listens.

use tokio::sync::broadcast;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEventKind {
    /// `reason`: "logout", "revoked", "token_revoked", "refresh_token_reuse",
    /// "password_changed", "user_deactivated", "user_deleted".
    Revoked {
        reason: String,
    },
    RoleChanged,
    Expired,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEvent {
    pub kind: SessionEventKind,
    pub session_id: String,
    pub user_id: String,
    /// The user's role at the time of the event.
    pub role: String,
    pub at: i64,
}

#[derive(Clone, Debug)]
pub struct Events {
    sender: broadcast::Sender<SessionEvent>,
}

impl Events {
    pub fn new() -> Self {
        Events { sender: broadcast::channel(4096).0 }
    }

    pub fn publish(&self, event: SessionEvent) {
        // No receiver is not an error: nobody is watching.
        let _ = self.sender.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.sender.subscribe()
    }
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}
