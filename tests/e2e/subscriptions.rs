//! Live sessions over websockets: authenticated at connect, closed the moment the session
//! dies, with the event first.

use e2e::*;
use serde_json::json;

const EVENTS: &str = "subscription { sessionEvents { kind sessionId role reason at } }";
const TRANSPORT_WS: &str = "graphql-transport-ws";

fn json_of(frame: Frame) -> serde_json::Value {
    match frame {
        Frame::Json(value) => value,
        Frame::Closed(code, reason) => panic!("closed {code} {reason}"),
    }
}

fn assert_acked(frame: Frame) {
    assert_eq!(json_of(frame)["type"], "connection_ack");
}

fn assert_closed(frame: Frame, expected: u16) -> String {
    match frame {
        Frame::Closed(code, reason) => {
            assert_eq!(code, expected, "{reason}");
            reason
        }
        Frame::Json(value) => panic!("expected close {expected}, got {value}"),
    }
}

/// Logs a user in over gRPC: (access token, session token, session id).
async fn user(stack: &Stack, name: &str) -> identity_proto::pb::LoginResponse {
    sign_up(&mut stack.identity.users(), name).await;
    log_in(&mut stack.identity.auth(), name).await
}

async fn revoke(stack: &Stack, login: &identity_proto::pb::LoginResponse) {
    let request =
        bearer(identity_proto::pb::RevokeSessionRequest { session_id: login.session_id.clone() }, &login.access_token);
    stack.identity.auth().revoke_session(request).await.unwrap();
}

#[tokio::test]
async fn a_cookie_socket_gets_the_revocation_then_closes_with_4401() {
    let stack = Stack::start().await;
    let login = user(&stack, "ann").await;
    let cookie = format!("sessionid={}", login.session_token);
    let mut socket = WsClient::connect(&stack.facade, TRANSPORT_WS, Some(&cookie)).await;
    assert_acked(socket.init(json!({})).await);
    socket.subscribe("1", EVENTS).await;
    // The socket runs queries too, as the cookie's user.
    socket.send(json!({"id": "2", "type": "subscribe", "payload": {"query": "{ whoami { username } }"}})).await;
    let answer = json_of(socket.next().await);
    assert_eq!((answer["id"].as_str(), &answer["payload"]["data"]["whoami"]["username"]), (Some("2"), &json!("ann")));
    assert_eq!(json_of(socket.next().await)["type"], "complete");

    // Logout elsewhere.
    let mut request = session(identity_proto::pb::LogoutRequest {}, &login.session_token);
    request.metadata_mut().insert("x-test", "elsewhere".parse().unwrap());
    stack.identity.auth().logout(request).await.unwrap();
    let event = json_of(socket.next().await);
    assert_eq!(event["type"], "next", "{event}");
    assert_eq!(event["payload"]["data"]["sessionEvents"]["kind"], "REVOKED");
    assert_eq!(event["payload"]["data"]["sessionEvents"]["reason"], "logout");
    assert_eq!(event["payload"]["data"]["sessionEvents"]["sessionId"], login.session_id.as_str());
    assert_closed(socket.next().await, 4401);
}

#[tokio::test]
async fn the_cookie_opens_a_socket_only_from_our_own_origin() {
    let stack = Stack::start().await;
    let login = user(&stack, "cyd").await;
    let cookie = format!("sessionid={}", login.session_token);
    let own = format!("http://{}", stack.facade.addr);
    let mut socket =
        WsClient::connect_with(&stack.facade, TRANSPORT_WS, &[("cookie", &cookie), ("origin", &own)]).await;
    assert_acked(socket.init(json!({})).await);

    // A page of another origin (same site or not) cannot ride on the cookie.
    for origin in ["http://evil.example", "null", "http://127.0.0.1:1", "http://127.0.0.1:8080.evil.example"] {
        let headers = [("cookie", cookie.as_str()), ("origin", origin)];
        let mut socket = WsClient::connect_with(&stack.facade, TRANSPORT_WS, &headers).await;
        assert_closed(socket.init(json!({})).await, 4403);
    }
    // It may still authenticate with a credential of its own in the payload.
    let headers = [("cookie", cookie.as_str()), ("origin", "http://evil.example")];
    let mut socket = WsClient::connect_with(&stack.facade, TRANSPORT_WS, &headers).await;
    assert_acked(socket.init(json!({"sessionToken": login.session_token})).await);
}

#[tokio::test]
async fn a_bearer_payload_authenticates_and_a_revocation_by_a_manager_ends_the_socket() {
    let stack = Stack::start().await;
    let login = user(&stack, "bob").await;
    let mut socket = WsClient::connect(&stack.facade, TRANSPORT_WS, None).await;
    assert_acked(socket.init(json!({"authorization": format!("Bearer {}", login.access_token)})).await);
    socket.subscribe("events", EVENTS).await;
    // Give the subscription a moment to be registered before the event.
    socket.send(json!({"id": "q", "type": "subscribe", "payload": {"query": "{ __typename }"}})).await;
    json_of(socket.next().await);
    json_of(socket.next().await);

    let root = log_in(&mut stack.identity.auth(), "root").await;
    revoke(&stack, &root_as(&root, &login)).await;
    let event = json_of(socket.next().await);
    assert_eq!(event["payload"]["data"]["sessionEvents"]["kind"], "REVOKED", "{event}");
    assert_closed(socket.next().await, 4401);
}

/// A LoginResponse carrying `target`'s session id and `manager`'s token (to revoke as manager).
fn root_as(
    manager: &identity_proto::pb::LoginResponse,
    target: &identity_proto::pb::LoginResponse,
) -> identity_proto::pb::LoginResponse {
    identity_proto::pb::LoginResponse {
        session_id: target.session_id.clone(),
        access_token: manager.access_token.clone(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_session_token_payload_authenticates_and_a_role_change_arrives_as_an_event() {
    let stack = Stack::start().await;
    let login = user(&stack, "cal").await;
    let mut socket = WsClient::connect(&stack.facade, TRANSPORT_WS, None).await;
    assert_acked(socket.init(json!({"sessionToken": login.session_token})).await);
    socket.subscribe("1", EVENTS).await;
    socket.send(json!({"id": "q", "type": "subscribe", "payload": {"query": "{ __typename }"}})).await;
    json_of(socket.next().await);
    json_of(socket.next().await);

    let root = log_in(&mut stack.identity.auth(), "root").await;
    let cal = login.user.clone().unwrap();
    let promote = identity_proto::pb::UpdateUserRequest {
        user: Some(identity_proto::pb::User { id: cal.id, role: "manager".into(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["role".into()] }),
    };
    stack.identity.users().update_user(bearer(promote, &root.access_token)).await.unwrap();
    let event = json_of(socket.next().await);
    assert_eq!(event["payload"]["data"]["sessionEvents"]["kind"], "ROLE_CHANGED", "{event}");
    assert_eq!(event["payload"]["data"]["sessionEvents"]["role"], "manager");
    // The socket lives on after a role change.
    socket.send(json!({"id": "w", "type": "subscribe", "payload": {"query": "{ whoami { username } }"}})).await;
    assert_eq!(json_of(socket.next().await)["payload"]["data"]["whoami"]["username"], "cal");
}

#[tokio::test]
async fn missing_forged_and_revoked_credentials_are_refused_with_4403() {
    let stack = Stack::start().await;
    let login = user(&stack, "dot").await;
    revoke(&stack, &login).await;
    let payloads = [
        json!({}),
        json!({"authorization": "Bearer forged.token.here"}),
        json!({"sessionToken": "made-up"}),
        json!({"authorization": format!("Bearer {}", login.access_token)}),
        json!({"sessionToken": login.session_token}),
    ];
    for payload in payloads {
        let mut socket = WsClient::connect(&stack.facade, TRANSPORT_WS, None).await;
        let reason = assert_closed(socket.init(payload.clone()).await, 4403);
        assert!(reason.starts_with("Forbidden"), "{payload}: {reason}");
    }
}

#[tokio::test]
async fn the_legacy_graphql_ws_protocol_works_and_refuses_the_same_way() {
    let stack = Stack::start().await;
    let login = user(&stack, "eli").await;
    let mut socket = WsClient::connect(&stack.facade, "graphql-ws", None).await;
    assert_acked(socket.init(json!({"authorization": format!("Bearer {}", login.access_token)})).await);
    socket.send(json!({"id": "1", "type": "start", "payload": {"query": "{ whoami { username } }"}})).await;
    let data = json_of(socket.next().await);
    assert_eq!((data["type"].as_str(), &data["payload"]["data"]["whoami"]["username"]), (Some("data"), &json!("eli")));

    let mut refused = WsClient::connect(&stack.facade, "graphql-ws", None).await;
    let error = json_of(refused.init(json!({"sessionToken": "made-up"})).await);
    assert_eq!(error["type"], "connection_error");
    assert_closed(refused.next().await, 4403);
}

#[tokio::test]
async fn an_identity_service_restart_does_not_leave_sockets_authenticated() {
    let stack = Stack::start().await;
    let login = user(&stack, "fin").await;
    let mut socket = WsClient::connect(&stack.facade, TRANSPORT_WS, None).await;
    assert_acked(socket.init(json!({"sessionToken": login.session_token})).await);
    let Stack { facade, identity, db } = stack;
    identity.stop().await.unwrap();
    assert_closed(socket.next().await, 1012);
    drop((facade, db));
}

#[tokio::test]
async fn sockets_without_connection_init_time_out_with_4408() {
    let db = TestDb::new().await;
    let identity = config(&db);
    let stack = Stack::start_with(db, identity, |facade| facade.ws_init_timeout = secs(1)).await;
    let mut socket = WsClient::connect(&stack.facade, TRANSPORT_WS, None).await;
    assert_closed(socket.next().await, 4408);
}

#[tokio::test]
async fn sockets_per_session_are_bounded() {
    let db = TestDb::new().await;
    let identity = config(&db);
    let stack = Stack::start_with(db, identity, |facade| facade.ws_max_sockets_per_session = 2).await;
    let login = user(&stack, "gil").await;
    let payload = json!({"sessionToken": login.session_token});
    let mut first = WsClient::connect(&stack.facade, TRANSPORT_WS, None).await;
    assert_acked(first.init(payload.clone()).await);
    let mut second = WsClient::connect(&stack.facade, TRANSPORT_WS, None).await;
    assert_acked(second.init(payload.clone()).await);
    let mut third = WsClient::connect(&stack.facade, TRANSPORT_WS, None).await;
    assert_closed(third.init(payload.clone()).await, 4429);
    drop(first);
    // The slot comes back once the first socket is gone.
    let fourth = eventually(std::time::Duration::from_secs(10), || {
        let facade = &stack.facade;
        let payload = payload.clone();
        async move {
            let mut socket = WsClient::connect(facade, TRANSPORT_WS, None).await;
            matches!(socket.init(payload).await, Frame::Json(_)).then_some(socket)
        }
    })
    .await;
    drop((second, fourth));
}

#[tokio::test]
async fn subscriptions_per_socket_are_bounded() {
    let db = TestDb::new().await;
    let identity = config(&db);
    let stack = Stack::start_with(db, identity, |facade| facade.ws_max_subscriptions = 1).await;
    let login = user(&stack, "hu").await;
    let mut socket = WsClient::connect(&stack.facade, TRANSPORT_WS, None).await;
    assert_acked(socket.init(json!({"sessionToken": login.session_token})).await);
    socket.subscribe("1", EVENTS).await;
    socket.subscribe("2", EVENTS).await;
    let refused = json_of(socket.next().await);
    assert_eq!(refused["id"], "2", "{refused}");
    assert_eq!(refused["payload"]["errors"][0]["extensions"]["code"], "TOO_MANY_REQUESTS", "{refused}");
}

#[tokio::test]
async fn an_oversized_message_closes_the_socket() {
    let db = TestDb::new().await;
    let identity = config(&db);
    let stack = Stack::start_with(db, identity, |facade| facade.max_body_bytes = 4096).await;
    let login = user(&stack, "ivo").await;
    let mut socket = WsClient::connect(&stack.facade, TRANSPORT_WS, None).await;
    assert_acked(socket.init(json!({"sessionToken": login.session_token})).await);
    let huge = format!("{{ __typename }} # {}", "x".repeat(8192));
    socket.send(json!({"id": "1", "type": "subscribe", "payload": {"query": huge}})).await;
    match socket.next().await {
        Frame::Closed(code, _) => assert_eq!(code, 1009, "an oversized message closes with Message Too Big"),
        other => panic!("an 8 KiB message was accepted: {other:?}"),
    }
}

#[tokio::test]
async fn idle_sockets_are_kept_alive_with_pings() {
    let db = TestDb::new().await;
    let identity = config(&db);
    let stack = Stack::start_with(db, identity, |facade| facade.ws_ping_interval = secs(1)).await;
    let login = user(&stack, "jan").await;
    let mut socket = WsClient::connect(&stack.facade, TRANSPORT_WS, None).await;
    assert_acked(socket.init(json!({"sessionToken": login.session_token})).await);
    assert!(socket.ping_within(std::time::Duration::from_secs(10)).await, "no ping from the server");
}
