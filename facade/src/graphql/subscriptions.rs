//! `sessionEvents`: what happens to the caller's session, live, over the websocket. The
//! events come from the socket's `WatchSession` stream (see `graphql_ws`).

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use async_graphql::{Context, Enum, ErrorExtensions, ID, Result, SimpleObject, Subscription as SubscriptionRoot};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

use crate::error::{ApiError, ErrorKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum SessionEventKind {
    /// The session was revoked (logout elsewhere, a manager, refresh-token reuse, password
    /// change). The socket closes right after with 4401.
    Revoked,
    /// The user's role changed; the session lives on.
    RoleChanged,
    /// The session reached its absolute or idle expiry. The socket closes right after.
    Expired,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct SessionEvent {
    pub kind: SessionEventKind,
    pub session_id: ID,
    pub user_id: ID,
    pub role: String,
    /// Why a revoked session ended: "logout", "revoked", "refresh_token_reuse", ...
    pub reason: String,
    pub at: DateTime<Utc>,
}

impl SessionEvent {
    pub fn ends_session(&self) -> bool {
        matches!(self.kind, SessionEventKind::Revoked | SessionEventKind::Expired)
    }
}

/// The events of one socket's session, and how many subscriptions the socket runs.
#[derive(Clone)]
pub struct SocketEvents {
    pub events: broadcast::Sender<SessionEvent>,
    pub running: Arc<AtomicUsize>,
    pub max_running: usize,
}

/// Counts a running subscription; uncounts it when its stream is dropped.
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct Subscription;

#[SubscriptionRoot]
impl Subscription {
    /// Events of the caller's session until it ends. Websocket only.
    async fn session_events(&self, ctx: &Context<'_>) -> Result<impl Stream<Item = SessionEvent> + use<>> {
        let socket = ctx.data::<SocketEvents>().map_err(|_| {
            ApiError::new(ErrorKind::BadUserInput, "subscriptions need the websocket at /graphql/ws").extend()
        })?;
        if socket.running.fetch_add(1, Ordering::Relaxed) >= socket.max_running {
            socket.running.fetch_sub(1, Ordering::Relaxed);
            let message = format!("at most {} subscriptions per socket", socket.max_running);
            return Err(ApiError::new(ErrorKind::TooManyRequests, message).extend());
        }
        let running = Running(Arc::clone(&socket.running));
        let events = BroadcastStream::new(socket.events.subscribe()).filter_map(|event| async move { event.ok() });
        Ok(events.map(move |event| {
            let _counted = &running;
            event
        }))
    }
}
