//! How many websockets each session holds open, bounded; and the bounds and timers of every
//! socket.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

/// Bounds and timers of the websockets.
#[derive(Debug, Clone, Copy)]
pub struct SocketLimits {
    pub per_session: usize,
    pub subscriptions: usize,
    pub init_timeout: Duration,
    pub ping_interval: Duration,
}

/// Open sockets per session.
pub struct Sockets {
    pub limits: SocketLimits,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One socket counted against its session; uncounted when dropped.
pub struct SocketSlot {
    open: Arc<Mutex<HashMap<String, usize>>>,
    session_id: String,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.open.lock()
            && let Some(count) = open.get_mut(&self.session_id)
        {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.session_id);
            }
        }
    }
}

impl Sockets {
    pub fn new(limits: SocketLimits) -> Self {
        Sockets { limits, open: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// A slot for one more socket of `session_id`, unless it has as many as allowed.
    pub fn take_slot(&self, session_id: &str) -> Option<SocketSlot> {
        let mut open = self.open.lock().ok()?;
        let count = open.entry(session_id.to_owned()).or_insert(0);
        if *count >= self.limits.per_session {
            return None;
        }
        *count += 1;
        Some(SocketSlot { open: Arc::clone(&self.open), session_id: session_id.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_per_session_are_bounded_and_released() {
        let sockets = Sockets::new(SocketLimits {
            per_session: 2,
            subscriptions: 1,
            init_timeout: Duration::from_secs(1),
            ping_interval: Duration::from_secs(1),
        });
        let first = sockets.take_slot("s").unwrap();
        let _second = sockets.take_slot("s").unwrap();
        assert!(sockets.take_slot("s").is_none());
        assert!(sockets.take_slot("other").is_some());
        drop(first);
        assert!(sockets.take_slot("s").is_some());
    }
}
