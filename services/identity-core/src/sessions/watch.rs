//! Following one session until it ends (`WatchSession`): its events as they are published, and
//! its end by expiry or by a revocation this process was not told of, found by re-checking.

use std::time::Duration;

use tokio::sync::{broadcast::error::RecvError, mpsc};

use crate::{
    Identity, clock,
    error::{CoreError, DeadReason},
    events::{Event, RevokeReason, SessionEvent, SessionEventKind},
    users::Principal,
};

// === impl Identity: watch ===

impl Identity {
    /// Events of the caller's session, ending after a REVOKED or EXPIRED event. The channel
    /// closes when the session ends or the receiver is dropped.
    pub fn watch_session(&self, caller: &Principal) -> mpsc::Receiver<SessionEvent> {
        let (sender, receiver) = mpsc::channel(16);
        let identity = self.clone();
        let session_id = caller.session_id.clone();
        let mut events = self.events().subscribe();
        // Re-check the session at least this often: it may die by a revocation whose
        // announcement never reached this replica (its listener was down then).
        let poll = self.settings().session_cache_ttl.max(Duration::from_secs(1));
        tokio::spawn(async move {
            loop {
                // First look, then wait: the session may have ended between the caller's
                // authentication and this subscription, and no event would tell.
                if let Some(event) = identity.end_event(&session_id).await {
                    let _ = sender.send(event).await;
                    return;
                }
                let deadline = identity.live(&session_id).await.ok().map(|live| live.deadline(identity.lifetime()));
                let wait = Duration::from_secs(deadline.map_or(0, |d| (d - clock::now()).max(0) as u64)).min(poll);
                tokio::select! {
                    _ = sender.closed() => return,
                    received = events.recv() => match received {
                        Ok(Event::Session(event)) if event.session_id == session_id => {
                            let last = event.ends_session();
                            if sender.send(event).await.is_err() || last {
                                return;
                            }
                        }
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => return,
                    },
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        });
        receiver
    }

    /// The event that ends a watch, if the session is dead now. A database that cannot be
    /// read ends nothing: the watch goes on and checks again.
    async fn end_event(&self, session_id: &str) -> Option<SessionEvent> {
        let live = match self.live(session_id).await {
            Ok(live) => live,
            Err(CoreError::SessionDead(_)) => {
                return Some(SessionEvent {
                    kind: SessionEventKind::Revoked { reason: RevokeReason::Deleted },
                    session_id: session_id.to_owned(),
                    user_id: String::new(),
                    role: String::new(),
                    at: clock::now(),
                });
            }
            Err(_) => return None,
        };
        let now = clock::now();
        let dead = match live.check(self.lifetime(), now) {
            Ok(_) => return None,
            Err(CoreError::SessionDead(reason)) => reason,
            Err(_) => return None,
        };
        let kind = match (dead, live.session.revoke_reason.as_deref()) {
            (DeadReason::SessionExpired, _) => SessionEventKind::Expired,
            (_, Some(stored)) => SessionEventKind::Revoked { reason: RevokeReason::parse(stored) },
            (DeadReason::UserInactive, None) => SessionEventKind::Revoked { reason: RevokeReason::UserDeactivated },
            (_, None) => SessionEventKind::Revoked { reason: RevokeReason::Revoked },
        };
        Some(SessionEvent {
            kind,
            session_id: session_id.to_owned(),
            user_id: live.session.user_id.clone(),
            role: live.user.as_ref().map(|user| user.role.as_str().to_owned()).unwrap_or_default(),
            at: now,
        })
    }
}
