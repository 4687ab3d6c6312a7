//! The database going away and coming back: clear UNAVAILABLE (no hang, no panic), health
//! NOT_SERVING, and service resuming by itself.
//!
//! On PostgreSQL the service reaches its database through a proxy that the test cuts: every
//! connection drops and new ones are refused. On SQLite (an embedded file) the way a database
//! "goes away" is another process holding the write lock; writes then wait out the busy
//! timeout and answer UNAVAILABLE.

use std::time::Duration;

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
