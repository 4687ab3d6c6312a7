//! A TCP proxy in front of a database, to cut a server off from it and back.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// A TCP proxy in front of a database: `cut()` drops every connection and refuses new ones
/// until `restore()`, as a network partition or a database restart would.
pub struct Proxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (up, connections) = (Arc::clone(&up), Arc::clone(&connections));
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let target = target.clone();
                    let handle = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(&target).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    connections.lock().unwrap().push(handle);
                }
            })
        };
        Proxy { addr, up, connections, accept }
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// `url` with its host and port replaced by this proxy's.
    pub fn url_through(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let userinfo = authority.rsplit_once('@').map(|(user, _)| format!("{user}@")).unwrap_or_default();
        format!("{scheme}://{userinfo}{}/{path}", self.addr)
    }

    /// The `host:port` a postgres URL points at.
    pub fn target_of(url: &str) -> String {
        let rest = url.split_once("://").unwrap().1;
        let authority = rest.split('/').next().unwrap();
        let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
        if host.contains(':') { host.to_owned() } else { format!("{host}:5432") }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_rewritten_through_the_proxy() {
        assert_eq!(Proxy::target_of("postgres://postgres@127.0.0.1:5432/t_1"), "127.0.0.1:5432");
        assert_eq!(Proxy::target_of("postgres://localhost/t_1"), "localhost:5432");
    }
}
