//! `/graphql/ws`: GraphQL over websockets (`graphql-transport-ws`, and the legacy
//! `graphql-ws`), authenticated once at connect and closed the moment the session dies.
//!
//! Authentication: the `connection_init` payload `{"authorization": "Bearer …"}` or
//! `{"sessionToken": "…"}`, else the credential of the upgrade request (the `sessionid`
//! cookie, or `Authorization`), checked through `Authenticate`. Each authenticated socket
//! holds one `WatchSession` stream; a terminal event (REVOKED, EXPIRED) is published to the
//! socket's `sessionEvents` subscribers and the socket is closed with 4401 right after.
//!
//! Close codes:
//! - 4403 Forbidden: no credential, or a dead one (graphql-ws clients do not retry it);
//! - 4401 Unauthorized: the session died while the socket was open;
//! - 4408: no `connection_init` within the timeout (the protocol's code);
//! - 4429: too many sockets for one session;
//! - 1012 Service Restart: the watch on the identity service ended and no replica answered
//!   for 5 s (a watch whose replica went away is re-attached to another one after checking the
//!   session again) — the socket is never left silently authenticated, and clients reconnect
//!   and are checked again;
//! - 1013 Try Again Later: the identity service could not be asked at connect;
//! - 1009 Message Too Big: a message over `FACADE_MAX_BODY_BYTES`; 1002 for other breaches of
//!   the websocket protocol.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_graphql::{
    Data,
    http::{ALL_WEBSOCKET_PROTOCOLS, WebSocket as GraphqlWebSocket, WsMessage},
};
use async_graphql_poem::GraphQLProtocol;
use futures::{SinkExt, StreamExt, future};
use identity_proto::pb;
use poem::{
    IntoResponse, Request, handler,
    http::header,
    web::{
        Data as PoemData,
        websocket::{Message, WebSocket, WebSocketConfig, WebSocketStream},
    },
};
use tokio::{
    sync::{broadcast, oneshot},
    task::JoinHandle,
};

use crate::{
    context::{Caller, RequestContext},
    credential::{ClientInfo, Credential},
    graphql::subscriptions::{SessionEvent, SocketEvents},
    sockets::SocketSlot,
    state::AppState,
};

/// How a socket ends, when the facade ends it.
type Close = (u16, String);

/// What the socket owns once authenticated: dropped (and the watch stopped) when it closes.
#[derive(Default)]
struct Held {
    watch: Option<JoinHandle<()>>,
    slot: Option<SocketSlot>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(watch) = self.watch.take() {
            watch.abort();
        }
    }
}

#[handler]
pub async fn upgrade(
    request: &Request,
    socket: WebSocket,
    protocol: GraphQLProtocol,
    PoemData(state): PoemData<&Arc<AppState>>,
) -> impl IntoResponse {
    let upgrade_credential = Credential::of_request(request).filter(|credential| match credential {
        // The cookie authenticates a socket only when opened by our own pages: a page of another
        // origin on the same site would otherwise ride on it (cross-site websocket hijacking).
        Credential::Session(_) => same_origin(request, state.discovery.last().map(|s| s.settings.issuer.clone())),
        Credential::Bearer(_) => true,
    });
    let client = ClientInfo::of_request(request, &state.proxies);
    let state = Arc::clone(state);
    // tungstenite's defaults (128 KiB read and write buffers, 64 MiB messages) would cost
    // ~160 KiB per idle socket and let one client send 64 MiB: GraphQL messages are small.
    let max_message = state.max_body_bytes;
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    socket
        .config(config)
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |stream| serve(stream, protocol, state, upgrade_credential, client))
}

/// Whether the upgrade comes from one of our pages: `Origin` (sent by every browser) is the
/// issuer's origin (the public address, whatever a proxy did to `Host`), or names the `Host`
/// the request went to. Clients that send no `Origin` are not browsers.
fn same_origin(request: &Request, issuer: Option<String>) -> bool {
    let Some(origin) = request.header(header::ORIGIN) else { return true };
    let origin = origin.trim_end_matches('/');
    let public = issuer.as_deref().and_then(|issuer| {
        let (scheme, rest) = issuer.split_once("://")?;
        Some(format!("{scheme}://{}", rest.split('/').next().unwrap_or_default()))
    });
    if public.is_some_and(|public| public.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let host = request.header(header::HOST).unwrap_or_default();
    origin.split_once("://").is_some_and(|(_, authority)| !host.is_empty() && authority.eq_ignore_ascii_case(host))
}

async fn serve(
    stream: WebSocketStream,
    protocol: GraphQLProtocol,
    state: Arc<AppState>,
    upgrade_credential: Option<Credential>,
    client: ClientInfo,
) {
    let (mut sink, incoming) = stream.split();
    // A client that breaks the websocket protocol (a message over the limit, a bad frame) ends
    // its input; the socket is then closed with the code that says why, not just dropped.
    let broken: Arc<Mutex<Option<Close>>> = Arc::default();
    let incoming = {
        let broken = Arc::clone(&broken);
        incoming.take_while(move |message| {
            if let Err(error) = message
                && let Some(close) = protocol_violation(error)
                && let Ok(mut broken) = broken.lock()
            {
                *broken = Some(close);
            }
            future::ready(message.is_ok())
        })
    }
    .filter_map(|message| {
        future::ready(message.ok().filter(|m| m.is_text() || m.is_binary()).map(Message::into_bytes))
    });

    let held = Arc::new(Mutex::new(Held::default()));
    let refusal: Arc<Mutex<Option<Close>>> = Arc::default();
    let initialised = Arc::new(AtomicBool::new(false));
    let (end, ended) = tokio::sync::oneshot::channel::<Close>();

    let on_init = {
        let (state, held, refusal, initialised) =
            (Arc::clone(&state), Arc::clone(&held), Arc::clone(&refusal), Arc::clone(&initialised));
        move |payload: serde_json::Value| async move {
            let refuse = |code: u16, message: &str| {
                if let Ok(mut refusal) = refusal.lock() {
                    *refusal = Some((code, message.to_owned()));
                }
                Err(async_graphql::Error::new(message))
            };
            let Some(credential) = Credential::of_init_payload(&payload).or(upgrade_credential) else {
                return refuse(4403, "Forbidden: no credential");
            };
            let context = match RequestContext::resolve(state.identity.clone(), Some(credential), client).await {
                Ok(context) => context,
                Err(_) => return refuse(1013, "the identity service is unavailable; retry later"),
            };
            let principal = match &context.caller {
                Caller::User(principal) => principal.clone(),
                Caller::Rejected(error) => return refuse(4403, &format!("Forbidden: {}", error.message)),
                Caller::Anonymous => return refuse(4403, "Forbidden: no credential"),
            };
            let Some(slot) = state.sockets.take_slot(&principal.session_id) else {
                return refuse(4429, "too many sockets for this session");
            };
            let (events, _) = broadcast::channel(16);
            let watch = tokio::spawn(watch_session(context.clone(), events.clone(), end));
            if let Ok(mut held) = held.lock() {
                held.watch = Some(watch);
                held.slot = Some(slot);
            }
            initialised.store(true, Ordering::Relaxed);
            let mut data = Data::default();
            data.insert(context);
            data.insert(SocketEvents {
                events,
                running: Arc::new(AtomicUsize::new(0)),
                max_running: state.sockets.limits.subscriptions,
            });
            Ok(data)
        }
    };

    let graphql = GraphqlWebSocket::new(state.schema.clone(), incoming, protocol.0).on_connection_init(on_init);
    let limits = state.sockets.limits;
    let closing = {
        let initialised = Arc::clone(&initialised);
        async move {
            let init_timeout = async {
                tokio::time::sleep(limits.init_timeout).await;
                if initialised.load(Ordering::Relaxed) {
                    future::pending::<()>().await;
                }
            };
            tokio::select! {
                Ok(close) = ended => close,
                () = init_timeout => (4408, "Connection initialisation timeout".to_owned()),
            }
        }
    };
    let mut closing = Box::pin(closing);
    let mut graphql = Box::pin(graphql);
    let mut ping = tokio::time::interval(limits.ping_interval);
    ping.reset();

    let close = loop {
        tokio::select! {
            message = graphql.next() => match message {
                Some(WsMessage::Text(text)) => {
                    if sink.send(Message::Text(text)).await.is_err() {
                        return;
                    }
                }
                // An init refused: our code (4403, 4429, 1013) rather than async-graphql's 1002.
                Some(WsMessage::Close(code, reason)) => break refused(&refusal).unwrap_or((code, reason)),
                // The stream ended: the client left or broke the protocol, or (legacy protocol)
                // init was refused.
                None => match refused(&refusal).or_else(|| refused(&broken)) {
                    Some(close) => break close,
                    None => return,
                },
            },
            close = &mut closing => break close,
            _ = ping.tick() => {
                if sink.send(Message::Ping(Vec::new())).await.is_err() {
                    return;
                }
            }
        }
    };
    let _ = sink.send(Message::close_with(close.0, close.1)).await;
    let _ = sink.close().await;
    drop(held);
}

/// The close a read error calls for: 1009 for a message over the limit, 1002 for any other
/// breach of the protocol; `None` when the connection itself failed (nobody to tell).
fn protocol_violation(error: &std::io::Error) -> Option<Close> {
    // poem hands tungstenite's errors over as `io::Error`s of kind `Other`, with their text.
    if error.kind() != std::io::ErrorKind::Other {
        return None;
    }
    if error.to_string().starts_with("Space limit exceeded") {
        Some((1009, "message too big".to_owned()))
    } else {
        Some((1002, "protocol error".to_owned()))
    }
}

fn refused(refusal: &Mutex<Option<Close>>) -> Option<Close> {
    refusal.lock().ok().and_then(|mut refusal| refusal.take())
}

/// Follows the session on the identity service: every event goes to the socket's
/// subscribers; after an event that ends the session the socket is closed (4401). When the
/// watch itself ends without such an event (its replica went away), the session is checked
/// again and watched again, on whichever replica answers; only when none does for a few
/// seconds is the socket closed (1012), never left authenticated unwatched.
async fn watch_session(context: RequestContext, events: broadcast::Sender<SessionEvent>, end: oneshot::Sender<Close>) {
    const ENDED: &str = "Unauthorized: the session has ended";
    let mut backoff = Duration::from_millis(100);
    let mut unanswered = Duration::ZERO;
    let close = 'watch: loop {
        let request = match context.as_caller(pb::WatchSessionRequest {}) {
            Ok(request) => request,
            Err(_) => break (4401, ENDED.to_owned()),
        };
        match context.identity.auth().watch_session(request).await {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                loop {
                    match stream.next().await {
                        Some(Ok(message)) => {
                            let Some(event) = SessionEvent::from_pb(message) else { continue };
                            let last = event.ends_session();
                            let _ = events.send(event);
                            if last {
                                // Let the event reach the client before the close does: it has
                                // a few hops left (the subscription stream, the socket's loop).
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                break 'watch (4401, ENDED.to_owned());
                            }
                            backoff = Duration::from_millis(100);
                            unanswered = Duration::ZERO;
                        }
                        Some(Err(status)) if status.code() == tonic::Code::Unauthenticated => {
                            break 'watch (4401, ENDED.to_owned());
                        }
                        Some(Err(_)) | None => break,
                    }
                }
            }
            Err(status) if status.code() == tonic::Code::Unauthenticated => break (4401, ENDED.to_owned()),
            Err(_) => {}
        }
        // The watch is gone but not the session, as far as we know: look again, then watch again.
        if unanswered >= REATTACH_FOR {
            break (1012, "the identity service is unavailable; reconnect".to_owned());
        }
        tokio::time::sleep(backoff).await;
        unanswered += backoff;
        backoff = (backoff * 2).min(Duration::from_secs(1));
        let Some(credential) = &context.credential else { break (4401, ENDED.to_owned()) };
        let check = pb::AuthenticateRequest { credential: Some(credential.to_pb()), omit_claims: true };
        match context.identity.authenticate(check).await {
            Ok(_) => tracing::info!("re-attaching a websocket's session watch"),
            Err(status) if status.code() == tonic::Code::Unauthenticated => break (4401, ENDED.to_owned()),
            Err(_) => {}
        }
    };
    let _ = end.send(close);
}

/// How long a socket whose watch ended keeps trying to watch its session again.
const REATTACH_FOR: Duration = Duration::from_secs(5);
