//! Several identity services on one PostgreSQL database, and facades over them: what one
//! replica does, every other knows at once. (SQLite is one process: these tests need
//! PostgreSQL and pass trivially without it.)
//!
//! The replicas' session caches are given a minute to live, so that only the event bus can
//! explain a refusal seen within seconds.

use std::time::Duration;

use e2e::*;
use futures::future::join_all;
use identity_proto::pb;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;
use tonic::Code;
use tonic_types::StatusExt;

/// A replica's configuration on `db`: caches that trust themselves for a minute.
fn replica(db: &TestDb) -> identity_service::Config {
    let mut config = config(db);
    config.session_cache_ttl = secs(60);
    config
}

async fn replicas(db: &TestDb, count: usize) -> Vec<Service> {
    let mut started = Vec::new();
    for _ in 0..count {
        started.push(Service::start(replica(db)).await);
    }
    started
}

/// Polls `check` every 10 ms until it holds; fails after `limit`.
async fn within(limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "not seen within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn refused_on(replica: &Service, access_token: &str) -> bool {
    replica.auth().authenticate(access(access_token)).await.is_err_and(|status| status.code() == Code::Unauthenticated)
}

#[tokio::test]
async fn what_one_replica_changes_every_other_refuses_at_once() {
    let db = TestDb::new().await;
    if !db.is_postgres() {
        return;
    }
    let mut manager = replica(&db);
    manager.bootstrap_manager = Some(identity_core::Secret::new(format!("root:{PASSWORD}")));
    let a = Service::start(manager).await;
    let others = replicas(&db, 2).await;
    let root = log_in(&mut a.auth(), "root").await;

    // Each change is made through A, after B and C have cached the session as alive.
    for (name, change) in ["logout", "revoke", "deactivate", "delete", "password"].iter().zip(0..) {
        let user = sign_up(&mut a.users(), name).await;
        let login = log_in(&mut a.auth(), name).await;
        let other_login = log_in(&mut a.auth(), name).await;
        for replica in &others {
            replica.auth().authenticate(access(&login.access_token)).await.unwrap();
        }
        match change {
            0 => drop(a.auth().logout(bearer(pb::LogoutRequest {}, &login.access_token)).await.unwrap()),
            1 => drop(
                a.auth()
                    .revoke_session(bearer(
                        pb::RevokeSessionRequest { session_id: login.session_id.clone() },
                        &root.access_token,
                    ))
                    .await
                    .unwrap(),
            ),
            2 => {
                let user = pb::User { id: user.id.clone(), is_active: false, ..Default::default() };
                let mask = prost_types::FieldMask { paths: vec!["is_active".into()] };
                a.users()
                    .update_user(bearer(
                        pb::UpdateUserRequest { user: Some(user), update_mask: Some(mask) },
                        &root.access_token,
                    ))
                    .await
                    .unwrap();
            }
            3 => drop(
                a.users()
                    .delete_user(bearer(pb::DeleteUserRequest { id: user.id.clone() }, &root.access_token))
                    .await
                    .unwrap(),
            ),
            _ => {
                // The session changing the password lives on; the others end.
                let change = pb::ChangePasswordRequest {
                    current_password: PASSWORD.into(),
                    new_password: "a new horse battery".into(),
                };
                a.users().change_password(bearer(change, &other_login.access_token)).await.unwrap();
            }
        }
        for replica in &others {
            within(Duration::from_secs(5), async || refused_on(replica, &login.access_token).await).await;
        }
        eprintln!("{name}: refused on every replica");
    }

    // A role change reaches the others too: they answer with the new role.
    let user = sign_up(&mut a.users(), "rhea").await;
    let login = log_in(&mut a.auth(), "rhea").await;
    for replica in &others {
        let principal = replica.auth().authenticate(access(&login.access_token)).await.unwrap().into_inner();
        assert_eq!(principal.principal.unwrap().role, "user");
    }
    let promoted = pb::User { id: user.id, role: "manager".into(), ..Default::default() };
    let mask = prost_types::FieldMask { paths: vec!["role".into()] };
    a.users()
        .update_user(bearer(
            pb::UpdateUserRequest { user: Some(promoted), update_mask: Some(mask) },
            &root.access_token,
        ))
        .await
        .unwrap();
    for replica in &others {
        within(Duration::from_secs(5), async || {
            let answer = replica.auth().authenticate(access(&login.access_token)).await.unwrap().into_inner();
            answer.principal.unwrap().role == "manager"
        })
        .await;
    }
}

#[tokio::test]
async fn a_socket_on_one_facade_closes_when_the_session_ends_through_another() {
    let db = TestDb::new().await;
    if !db.is_postgres() {
        return;
    }
    let [a, b]: [Service; 2] = replicas(&db, 2).await.try_into().ok().unwrap();
    let first = Facade::start(facade_config(&a)).await;
    let second = Facade::start(facade_config(&b)).await;
    sign_up(&mut a.users(), "sela").await;
    let login = log_in(&mut a.auth(), "sela").await;

    let mut socket = WsClient::connect(&second, "graphql-transport-ws", None).await;
    let ack = socket.init(json!({"sessionToken": login.session_token})).await;
    assert!(matches!(ack, Frame::Json(ref message) if message["type"] == "connection_ack"), "{ack:?}");
    socket.subscribe("1", "subscription { sessionEvents { kind reason } }").await;

    let client = Gql { http: reqwest::Client::new(), url: first.url() };
    let logout = client.as_user(&login.access_token, "mutation { logout { success } }", json!({})).await;
    assert_eq!(logout["data"]["logout"]["success"], true, "{logout}");

    match socket.next().await {
        Frame::Json(event) => {
            assert_eq!(event["payload"]["data"]["sessionEvents"]["kind"], "REVOKED", "{event}");
            assert_eq!(event["payload"]["data"]["sessionEvents"]["reason"], "logout", "{event}");
        }
        other => panic!("expected the REVOKED event, got {other:?}"),
    }
    match socket.next().await {
        Frame::Closed(code, _) => assert_eq!(code, 4401),
        other => panic!("expected close 4401, got {other:?}"),
    }
}

#[tokio::test]
async fn replicas_started_together_agree_on_one_schema_one_key_set_and_one_manager() {
    let db = TestDb::new().await;
    if !db.is_postgres() {
        return;
    }
    let configs: Vec<_> = (0..3)
        .map(|_| {
            let mut config = replica(&db);
            config.bootstrap_manager = Some(identity_core::Secret::new(format!("root:{PASSWORD}")));
            config
        })
        .collect();
    let replicas: Vec<Service> = join_all(configs.into_iter().map(Service::start)).await;

    let mut key_sets = Vec::new();
    for replica in &replicas {
        let keys = replica.auth().get_jwks(pb::GetJwksRequest {}).await.unwrap().into_inner().keys;
        key_sets.push(keys.into_iter().map(|key| key.kid).collect::<Vec<_>>());
    }
    assert_eq!(key_sets[0].len(), 1, "{key_sets:?}");
    assert!(key_sets.iter().all(|keys| *keys == key_sets[0]), "{key_sets:?}");

    let conn = db.connect().await;
    let managers =
        Statement::from_string(conn.get_database_backend(), "SELECT COUNT(*) FROM users WHERE role = 'manager'");
    let count: i64 = conn.query_one_raw(managers).await.unwrap().unwrap().try_get_by_index(0).unwrap();
    assert_eq!(count, 1);

    // A token from each verifies on every other.
    for (index, issuer) in replicas.iter().enumerate() {
        let login = log_in(&mut issuer.auth(), "root").await;
        for (other, verifier) in replicas.iter().enumerate() {
            let verified =
                verifier.auth().verify_token(pb::VerifyTokenRequest { token: login.access_token.clone() }).await;
            assert!(verified.is_ok(), "a token of replica {index} refused by replica {other}: {verified:?}");
        }
    }
}

#[tokio::test]
async fn thirty_guesses_over_three_replicas_are_checked_at_most_the_budget() {
    let db = TestDb::new().await;
    if !db.is_postgres() {
        return;
    }
    let replicas = replicas(&db, 3).await;
    sign_up(&mut replicas[0].users(), "tess").await;
    let attempts = (0..30).map(|index| {
        let mut auth = replicas[index % 3].auth();
        let request = from_address(
            pb::LoginRequest { username: "tess".into(), password: format!("guess {index}") },
            "203.0.113.30",
        );
        async move { auth.login(request).await.unwrap_err().code() }
    });
    let codes = join_all(attempts).await;
    let checked = codes.iter().filter(|code| **code == Code::Unauthenticated).count();
    let throttled = codes.iter().filter(|code| **code == Code::ResourceExhausted).count();
    assert!((1..=5).contains(&checked), "{checked} checked");
    assert_eq!(checked + throttled, 30, "{codes:?}");
}

/// Whatever listens for other replicas (its last statement was LISTEN) is cut off.
async fn kill_listeners(db: &TestDb) -> u64 {
    let conn = db.connect().await;
    let kill = Statement::from_string(
        conn.get_database_backend(),
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    );
    conn.query_all_raw(kill).await.unwrap().len() as u64
}

#[tokio::test]
async fn a_replica_that_lost_its_listener_trusts_no_cache_and_listens_again_by_itself() {
    let db = TestDb::new().await;
    if !db.is_postgres() {
        return;
    }
    let a = Service::start(replica(&db)).await;
    let metrics = free_address();
    let mut b_config = replica(&db);
    b_config.metrics_addr = Some(metrics);
    let b = Service::start(b_config).await;
    sign_up(&mut a.users(), "lena").await;
    let first = log_in(&mut a.auth(), "lena").await;
    let second = log_in(&mut a.auth(), "lena").await;
    b.auth().authenticate(access(&first.access_token)).await.unwrap();
    b.auth().authenticate(access(&second.access_token)).await.unwrap();
    let listening = |text: &str| sample(text, "identity_event_listener_up");
    let losses = |text: &str| sample(text, "identity_event_listener_losses_total");
    assert_eq!(listening(&scrape(metrics).await), Some(1.0));

    assert!(kill_listeners(&db).await >= 2, "no listener found to cut off");
    // Whatever happens meanwhile is not missed: B reads the database until it listens again.
    a.auth().logout(bearer(pb::LogoutRequest {}, &first.access_token)).await.unwrap();
    within(Duration::from_secs(5), async || refused_on(&b, &first.access_token).await).await;

    // B noticed the loss and listens again by itself...
    within(Duration::from_secs(15), async || {
        let text = scrape(metrics).await;
        losses(&text) == Some(1.0) && listening(&text) == Some(1.0)
    })
    .await;
    // ...trusts its cache again, and hears of the next revocation through it.
    b.auth().authenticate(access(&second.access_token)).await.unwrap();
    b.auth().authenticate(access(&second.access_token)).await.unwrap();
    let heard = |text: &str| sample(text, "identity_event_apply_lag_seconds_count").unwrap_or(0.0);
    let before = heard(&scrape(metrics).await);
    a.auth().logout(bearer(pb::LogoutRequest {}, &second.access_token)).await.unwrap();
    within(Duration::from_secs(5), async || refused_on(&b, &second.access_token).await).await;
    // The lag is recorded right after the event is applied: look again until it shows (and
    // say what the replica reports if it never does).
    for _ in 0..100 {
        if heard(&scrape(metrics).await) > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = scrape(metrics).await;
    let events: Vec<&str> = text.lines().filter(|line| line.starts_with("identity_event")).collect();
    panic!("the revocation was refused but not heard through the listener ({before} before):\n{}", events.join("\n"));
}

#[tokio::test]
async fn a_facade_over_several_replicas_keeps_answering_when_one_is_killed_and_uses_it_again_when_it_returns() {
    let db = TestDb::new().await;
    if !db.is_postgres() {
        return;
    }
    let [a, b]: [Service; 2] = replicas(&db, 2).await.try_into().ok().unwrap();
    let mut config = facade_config(&a);
    config.identity_url = format!("http://{},http://{}", a.addr, b.addr);
    let facade = Facade::start(config).await;
    sign_up(&mut a.users(), "kora").await;
    let client = Gql { http: reqwest::Client::new(), url: facade.url() };
    let (token, _) = client.token_auth("kora", PASSWORD).await;
    let whoami = async || client.as_user(&token, "{ whoami { username } }", json!({})).await;
    for _ in 0..10 {
        assert_eq!(whoami().await["data"]["whoami"]["username"], "kora");
    }
    let a_addr = a.addr;
    drop(a);
    for round in 0..50 {
        let body = whoami().await;
        assert_eq!(body["data"]["whoami"]["username"], "kora", "request {round} after the kill: {body}");
    }
    // Calls other than Authenticate are not retried, but one that finds the replica gone
    // passes it over: the next second's calls all go to the replica that is left. (First
    // the pass-over the whoami calls left behind runs out.)
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let started = std::time::Instant::now();
    let mut failed = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let body =
            client.anonymous("mutation($t: String!) { verifyToken(token: $t) { payload } }", json!({"t": token})).await;
        if body["data"]["verifyToken"]["payload"]["username"] != "kora" {
            failed += 1;
        }
    }
    let allowed = 1 + started.elapsed().as_secs();
    assert!(failed <= allowed, "{failed} of 40 verifyToken calls failed after the kill (at most {allowed} may)");

    // The killed replica returns where it was, and the other is killed: with no restart, the
    // facade answers through the one that came back.
    let _a = Service::start_at(replica(&db), a_addr).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    drop(b);
    for round in 0..50 {
        let body = whoami().await;
        assert_eq!(
            body["data"]["whoami"]["username"], "kora",
            "request {round} once only the returned one is left: {body}"
        );
    }
}

#[tokio::test]
async fn a_spoofed_forwarded_address_from_an_untrusted_caller_counts_as_the_caller() {
    let db = TestDb::new().await;
    let mut config = config(&db);
    // This test's client (127.0.0.1) is not a trusted forwarder.
    config.trusted_forwarders = vec!["10.0.0.0/8".parse().unwrap()];
    let service = Service::start(config).await;
    sign_up(&mut service.users(), "ugo").await;
    let mut auth = service.auth();
    for index in 0..5 {
        let spoofed = format!("198.51.100.{index}");
        let request = from_address(pb::LoginRequest { username: "ugo".into(), password: "wrong".into() }, &spoofed);
        assert_eq!(auth.login(request).await.unwrap_err().code(), Code::Unauthenticated);
    }
    // Every guess counted against 127.0.0.1, whatever the header said.
    let request = from_address(pb::LoginRequest { username: "ugo".into(), password: PASSWORD.into() }, "198.51.100.99");
    let status = auth.login(request).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.get_details_retry_info().is_some());

    // Through the facade, which trusts no proxy by default: X-Forwarded-For is ignored too.
    let stack = Stack::start().await;
    sign_up(&mut stack.identity.users(), "vito").await;
    let http = reqwest::Client::new();
    let mut codes = Vec::new();
    for index in 0..6 {
        let body = http
            .post(stack.facade.url())
            .header("x-forwarded-for", format!("198.51.100.{index}"))
            .json(&json!({"query": "mutation { tokenAuth(username: \"vito\", password: \"wrong\") { token } }"}))
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap();
        codes.push(error_code(&body).to_owned());
    }
    assert_eq!(codes.last().map(String::as_str), Some("TOO_MANY_REQUESTS"), "{codes:?}");
}

#[tokio::test]
async fn a_socket_whose_replica_dies_watches_on_another_and_still_closes_on_revocation() {
    let db = TestDb::new().await;
    if !db.is_postgres() {
        return;
    }
    // B's address is known to the facade before B runs: every socket's watch starts on A.
    let a = Service::start(replica(&db)).await;
    let b_addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut config = facade_config(&a);
    config.identity_url = format!("http://{},http://{b_addr}", a.addr);
    let facade = Facade::start(config).await;
    sign_up(&mut a.users(), "wren").await;
    let login = log_in(&mut a.auth(), "wren").await;
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let mut socket = WsClient::connect(&facade, "graphql-transport-ws", None).await;
        let ack = socket.init(json!({"sessionToken": login.session_token})).await;
        assert!(matches!(ack, Frame::Json(ref message) if message["type"] == "connection_ack"), "{ack:?}");
        socket.subscribe("1", "subscription { sessionEvents { kind } }").await;
        sockets.push(socket);
    }
    let b = Service::start_at(replica(&db), b_addr).await;
    drop(a);
    // The watches move to B; the revocation through B reaches every socket: its event, then 4401.
    b.auth().logout(bearer(pb::LogoutRequest {}, &login.access_token)).await.unwrap();
    for socket in &mut sockets {
        let mut frames = Vec::new();
        loop {
            match socket.next().await {
                Frame::Closed(code, reason) => {
                    assert_eq!(code, 4401, "{reason}; before: {frames:?}");
                    break;
                }
                Frame::Json(message) => frames.push(message),
            }
        }
    }
}
