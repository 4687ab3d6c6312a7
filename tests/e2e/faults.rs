//! The database going away and coming back: clear UNAVAILABLE (no hang, no panic), health
//! NOT_SERVING, and service resuming by itself; a PostgreSQL restart; a service killed
//! (SIGKILL) in the middle of writes.
//!
//! On PostgreSQL the service reaches its database through a proxy that the test cuts: every
//! connection drops and new ones are refused. On SQLite (an embedded file) the way a database
//! "goes away" is another process holding the write lock; writes then wait out the busy
//! timeout and answer UNAVAILABLE.

use std::{collections::HashSet, time::Duration};

use e2e::*;
use identity_proto::pb;
use sea_orm::{ConnectOptions, ConnectionTrait, Database};
use tonic::{Code, Request};

/// A request that must be answered within `seconds` (so a hang fails the test).
fn bounded<T>(message: T, seconds: u64) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(Duration::from_secs(seconds));
    request
}

fn new_user(name: &str) -> pb::CreateUserRequest {
    pb::CreateUserRequest {
        username: name.into(),
        email: format!("{name}@example.com"),
        password: PASSWORD.into(),
        role: String::new(),
    }
}

async fn health_is(service: &Service, status: pb_health::health_check_response::ServingStatus) {
    let mut health = pb_health::health_client::HealthClient::new(service.channel());
    eventually(Duration::from_secs(20), || {
        let mut health = health.clone();
        async move {
            let response = health.check(pb_health::HealthCheckRequest { service: String::new() }).await.ok()?;
            (response.into_inner().status == status as i32).then_some(())
        }
    })
    .await;
    let _ = &mut health;
}

#[tokio::test]
async fn a_database_outage_answers_unavailable_and_service_resumes_by_itself() {
    let db = TestDb::new().await;
    if db.is_postgres() {
        postgres_outage(&db).await;
    } else {
        sqlite_lock(&db).await;
    }
}

async fn postgres_outage(db: &TestDb) {
    let proxy = Proxy::start(Proxy::target_of(&db.url)).await;
    let mut config = config(db);
    config.database_url = identity_core::Secret::new(proxy.url_through(&db.url));
    let service = Service::start(config).await;
    let (mut users, mut auth) = (service.users(), service.auth());
    let user = sign_up(&mut users, "olive").await;
    let login = log_in(&mut auth, "olive").await;
    let unseen = log_in(&mut auth, "olive").await;

    proxy.cut();
    let unavailable = |status: tonic::Status, what: &str| {
        assert_eq!(status.code(), Code::Unavailable, "{what}: {status:?}");
        assert!(!status.message().contains("SELECT"), "{what} leaks SQL: {}", status.message());
    };
    unavailable(users.create_user(bounded(new_user("paula"), 15)).await.unwrap_err(), "CreateUser");
    unavailable(
        auth.login(bounded(pb::LoginRequest { username: "olive".into(), password: PASSWORD.into() }, 15))
            .await
            .unwrap_err(),
        "Login",
    );
    let mut request = bounded(session_token(&unseen.session_token), 15);
    request.metadata_mut().insert("x-test", "unseen".parse().unwrap());
    unavailable(auth.authenticate(request).await.unwrap_err(), "Authenticate (never seen)");
    let mut get = bounded(pb::GetUserRequest { id: user.id.clone() }, 15);
    get.metadata_mut().insert("authorization", format!("Bearer {}", login.access_token).parse().unwrap());
    unavailable(users.get_user(get).await.unwrap_err(), "GetUser");
    unavailable(
        auth.refresh_token(bounded(pb::RefreshTokenRequest { refresh_token: login.refresh_token.clone() }, 15))
            .await
            .unwrap_err(),
        "RefreshToken",
    );
    health_is(&service, pb_health::health_check_response::ServingStatus::NotServing).await;

    proxy.restore();
    health_is(&service, pb_health::health_check_response::ServingStatus::Serving).await;
    eventually(Duration::from_secs(20), || {
        let mut users = users.clone();
        async move { users.create_user(new_user("paula")).await.ok() }
    })
    .await;
    log_in(&mut auth, "paula").await;
    auth.authenticate(session_token(&unseen.session_token)).await.unwrap();
    auth.refresh_token(pb::RefreshTokenRequest { refresh_token: login.refresh_token }).await.unwrap();
}

async fn sqlite_lock(db: &TestDb) {
    let service = Service::start(config(db)).await;
    let (mut users, mut auth) = (service.users(), service.auth());
    sign_up(&mut users, "quentin").await;

    // Another process takes the write lock and keeps it.
    let mut options = ConnectOptions::new(db.url.clone());
    options.max_connections(1).min_connections(1);
    let other = Database::connect(options).await.unwrap();
    other.execute_unprepared("BEGIN IMMEDIATE").await.unwrap();

    let status = users.create_user(bounded(new_user("rita"), 15)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let status = auth
        .login(bounded(pb::LoginRequest { username: "quentin".into(), password: PASSWORD.into() }, 15))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    other.execute_unprepared("COMMIT").await.unwrap();
    other.close().await.unwrap();
    users.create_user(new_user("rita")).await.unwrap();
    log_in(&mut auth, "quentin").await;
    log_in(&mut auth, "rita").await;
}

#[tokio::test]
async fn health_and_readiness_turn_at_the_first_call_that_finds_the_database_gone() {
    let db = TestDb::new().await;
    if !db.is_postgres() {
        // An embedded SQLite file cannot be unreachable; a writer holding its lock (above) is
        // no outage: reads and health go on.
        return;
    }
    let proxy = Proxy::start(Proxy::target_of(&db.url)).await;
    let mut identity = config(&db);
    identity.database_url = identity_core::Secret::new(proxy.url_through(&db.url));
    let stack = Stack::start_with(db, identity, |_| {}).await;
    let mut users = stack.identity.users();
    sign_up(&mut users, "sven").await;
    let ready = format!("http://{}/readyz", stack.facade.addr);
    assert_eq!(reqwest::get(&ready).await.unwrap().status(), 200);

    proxy.cut();
    let status = users.create_user(bounded(new_user("tove"), 15)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    // At once: not at the next periodic probe.
    let mut health = pb_health::health_client::HealthClient::new(stack.identity.channel());
    let answer = health.check(pb_health::HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(answer.status, pb_health::health_check_response::ServingStatus::NotServing as i32);
    assert_eq!(reqwest::get(&ready).await.unwrap().status(), 503);

    proxy.restore();
    health_is(&stack.identity, pb_health::health_check_response::ServingStatus::Serving).await;
    eventually(Duration::from_secs(20), || {
        let mut users = users.clone();
        async move { users.create_user(new_user("tove")).await.ok() }
    })
    .await;
}

#[tokio::test]
async fn a_postgresql_restart_is_survived_without_restarting_the_service() {
    let db = TestDb::new().await;
    if !db.is_postgres() {
        return;
    }
    // A cluster of this test's own: stopping the machine's shared server is not ours to do.
    let cluster = postgres::Cluster::start();
    let mut config = config(&db);
    config.database_url = identity_core::Secret::new(cluster.url());
    config.refresh_reuse_grace = secs(0);
    let service = Service::start(config).await;
    let (mut users, mut auth) = (service.users(), service.auth());
    sign_up(&mut users, "ulla").await;
    let kept = log_in(&mut auth, "ulla").await;
    let revoked = log_in(&mut auth, "ulla").await;
    auth.logout(session(pb::LogoutRequest {}, &revoked.session_token)).await.unwrap();
    let spent = log_in(&mut auth, "ulla").await;
    auth.refresh_token(pb::RefreshTokenRequest { refresh_token: spent.refresh_token.clone() }).await.unwrap();

    cluster.stop();
    let status = users.create_user(bounded(new_user("vida"), 15)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    health_is(&service, pb_health::health_check_response::ServingStatus::NotServing).await;

    cluster.start_again();
    health_is(&service, pb_health::health_check_response::ServingStatus::Serving).await;
    eventually(Duration::from_secs(20), || {
        let mut users = users.clone();
        async move { users.create_user(new_user("vida")).await.ok() }
    })
    .await;
    log_in(&mut auth, "vida").await;
    auth.authenticate(session_token(&kept.session_token)).await.unwrap();
    // What was dead before the restart is dead after it.
    assert_eq!(
        auth.authenticate(session_token(&revoked.session_token)).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let reuse = auth.refresh_token(pb::RefreshTokenRequest { refresh_token: spent.refresh_token }).await.unwrap_err();
    assert_eq!(reuse.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn kill_minus_nine_during_writes_loses_nothing_that_was_acknowledged() {
    let db = TestDb::new().await;
    let manager = format!("root:{PASSWORD}");
    let env = [
        ("IDENTITY_DATABASE_URL", db.url.as_str()),
        ("IDENTITY_BOOTSTRAP_MANAGER", manager.as_str()),
        ("IDENTITY_REFRESH_REUSE_GRACE", "0s"),
    ];
    let process = IdentityProcess::start(&env).await;
    let mut auth = process.auth();
    sign_up(&mut process.users(), "wim").await;
    let revoked = log_in(&mut auth, "wim").await;
    auth.logout(session(pb::LogoutRequest {}, &revoked.session_token)).await.unwrap();
    let spent = log_in(&mut auth, "wim").await;
    auth.refresh_token(pb::RefreshTokenRequest { refresh_token: spent.refresh_token.clone() }).await.unwrap();

    // Eight writers sign up users as fast as they can; the process is killed mid-flight.
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let (mut users, acknowledged) = (process.users(), acknowledged.clone());
            tokio::spawn(async move {
                for n in 0.. {
                    let name = format!("w{writer}n{n}");
                    match users.create_user(new_user(&name)).await {
                        Ok(_) => acknowledged.lock().unwrap().push(name),
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    eventually(Duration::from_secs(60), || {
        let acknowledged = acknowledged.clone();
        async move { (acknowledged.lock().unwrap().len() >= 40).then_some(()) }
    })
    .await;
    process.kill().await;
    for writer in writers {
        writer.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    let process = IdentityProcess::start(&env).await;
    let mut auth = process.auth();
    let root = log_in(&mut auth, "root").await;
    let mut stored = HashSet::new();
    let mut page_token = String::new();
    loop {
        let request = pb::ListUsersRequest { page_size: 1000, page_token: page_token.clone() };
        let page = process.users().list_users(bearer(request, &root.access_token)).await.unwrap().into_inner();
        stored.extend(page.users.into_iter().map(|user| user.username));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let lost: Vec<&String> = acknowledged.iter().filter(|name| !stored.contains(*name)).collect();
    assert!(lost.is_empty(), "{} of {} acknowledged sign-ups lost: {lost:?}", lost.len(), acknowledged.len());
    assert_eq!(
        auth.authenticate(session_token(&revoked.session_token)).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let reuse = auth.refresh_token(pb::RefreshTokenRequest { refresh_token: spent.refresh_token }).await.unwrap_err();
    assert_eq!(reuse.code(), Code::Unauthenticated);
}
