//! The janitor deletes what is past its life — dead sessions with their refresh tokens, expired
//! refresh tokens, forgotten login counters, expired email links, delivered mail, expired
//! sign-ins with a provider — and nothing alive, once per interval however
//! many replicas share the database. Time travels by moving stored deadlines into the past.

use std::{net::SocketAddr, time::Duration};

use e2e::*;
use identity_proto::pb;
use sea_orm::ConnectionTrait;

/// A replica whose janitor runs every `interval`, keeping nothing dead, with metrics.
fn janitor_config(db: &TestDb, interval: Duration) -> (identity_service::Config, SocketAddr) {
    let mut config = config(db);
    config.janitor_interval = interval.into();
    config.janitor_retention = Duration::ZERO.into();
    config.login_failure_window = secs(1);
    let metrics = free_address();
    config.metrics_addr = Some(metrics);
    (config, metrics)
}

/// The value of a counter in a Prometheus exposition (0 when absent).
async fn metric(addr: SocketAddr, name: &str) -> u64 {
    sample(&scrape(addr).await, name).map_or(0, |value| value as u64)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_janitor_deletes_what_is_past_its_life_and_nothing_alive() {
    let db = TestDb::new().await;
    // The janitor runs every 300 ms while the scene is set and after.
    let (config, metrics) = janitor_config(&db, Duration::from_millis(300));
    let service = Service::start(config).await;
    let mut users = service.users();
    sign_up(&mut users, "jan").await;
    let mut auth = service.auth();

    // 30 sessions: 10 logged out, 10 expired (their deadline moved into the past), 10 alive,
    // each alive one refreshed twice (two spent refresh tokens, moved past their deadline).
    let mut logins = Vec::new();
    for _ in 0..30 {
        logins.push(log_in(&mut auth, "jan").await);
    }
    for login in &logins[..10] {
        auth.logout(bearer(pb::LogoutRequest {}, &login.access_token)).await.unwrap();
    }
    let mut alive = Vec::new();
    for login in &logins[20..] {
        let first = auth.refresh_token(pb::RefreshTokenRequest { refresh_token: login.refresh_token.clone() });
        let first = first.await.unwrap().into_inner();
        let second = auth.refresh_token(pb::RefreshTokenRequest { refresh_token: first.refresh_token.clone() });
        alive.push((login.session_token.clone(), second.await.unwrap().into_inner().refresh_token));
    }
    let conn = db.connect().await;
    let expired: Vec<String> = logins[10..20].iter().map(|login| format!("'{}'", login.session_id)).collect();
    let living: Vec<String> = logins[20..].iter().map(|login| format!("'{}'", login.session_id)).collect();
    let time_travel = [
        format!("UPDATE sessions SET expires_at = 1 WHERE id IN ({})", expired.join(",")),
        // The spent refresh tokens of the living sessions are past their own deadline.
        format!(
            "UPDATE refresh_tokens SET expires_at = 1 WHERE rotated_at IS NOT NULL AND session_id IN ({})",
            living.join(",")
        ),
    ];
    for sql in &time_travel {
        conn.execute_unprepared(sql).await.unwrap();
    }
    // Three failed logins from three addresses: counters below the limit, forgotten in 1 s.
    for ip in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        let wrong = pb::LoginRequest { username: "jan".into(), password: "not the password".into() };
        auth.login(from_address(wrong, ip)).await.unwrap_err();
    }
    count_reaches(&conn, "SELECT COUNT(*) FROM sessions", 10, Duration::from_secs(20)).await;
    count_reaches(&conn, "SELECT COUNT(*) FROM login_attempts", 0, Duration::from_secs(20)).await;
    count_reaches(&conn, "SELECT COUNT(*) FROM refresh_tokens", 10, Duration::from_secs(20)).await;
    assert_eq!(metric(metrics, "identity_janitor_rows_removed_total{table=\"sessions\"}").await, 20);
    assert_eq!(metric(metrics, "identity_janitor_rows_removed_total{table=\"refresh_tokens\"}").await, 40);
    assert!(metric(metrics, "identity_janitor_rows_removed_total{table=\"login_attempts\"}").await >= 3);
    assert!(metric(metrics, "identity_janitor_runs_total").await >= 1);

    // Everything alive still works: the sessions authenticate, their latest refresh tokens
    // rotate, all at once.
    let mut calls = Vec::new();
    for (session_token, refresh_token) in alive {
        let mut auth = service.auth();
        calls.push(tokio::spawn(async move {
            auth.authenticate(e2e::session_token(&session_token)).await.unwrap();
            auth.refresh_token(pb::RefreshTokenRequest { refresh_token }).await.unwrap();
        }));
    }
    for call in calls {
        call.await.unwrap();
    }
    // The dead stay dead: a logged-out session's token is unknown.
    let dead = service.auth().authenticate(e2e::session_token(&logins[0].session_token)).await;
    assert_eq!(dead.unwrap_err().code(), tonic::Code::Unauthenticated);
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_janitor_deletes_expired_links_delivered_mail_and_expired_sign_ins_and_keeps_the_rest() {
    let db = TestDb::new().await;
    let (config, metrics) = janitor_config(&db, Duration::from_millis(300));
    let service = Service::start(config).await;
    // Ten sign-ups at once: ten verification links, ten messages (written to the outbox
    // directory, so delivered at once).
    let names: Vec<String> = (0..10).map(|i| format!("jo{i}")).collect();
    let users = futures::future::join_all(names.iter().map(|name| {
        let mut users = service.users();
        async move { sign_up(&mut users, name).await }
    }))
    .await;
    let conn = db.connect().await;
    count_reaches(&conn, "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL", 0, Duration::from_secs(20)).await;
    // Time travel: half of the links expired long ago. A message still waiting for its next
    // attempt, and four sign-ins with a provider, two of them expired, are set down beside them.
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let expired: Vec<String> = users[..5].iter().map(|user| format!("'{}'", user.id)).collect();
    let later = now_ms + 3_600_000;
    let scene = [
        format!("UPDATE account_tokens SET expires_at = 1 WHERE user_id IN ({})", expired.join(",")),
        format!(
            "INSERT INTO outbox (id, kind, user_id, recipient, recipient_key, created_at, attempts, next_attempt_at) \
             VALUES ('waiting', 'verify', '{}', 'jo9@example.com', 'jo9@example.com', {now_ms}, 3, {later})",
            users[9].id
        ),
        format!(
            "INSERT INTO social_states (state_hash, provider, nonce, pkce_verifier, redirect_uri, next_path, created_at, expires_at) VALUES \
             ('old-1', 'example', 'n', 'v', 'http://x/cb', '/', 1, 2), ('old-2', 'example', 'n', 'v', 'http://x/cb', '/', 1, 2), \
             ('new-1', 'example', 'n', 'v', 'http://x/cb', '/', {now_ms}, {later}), ('new-2', 'example', 'n', 'v', 'http://x/cb', '/', {now_ms}, {later})"
        ),
    ];
    for sql in &scene {
        conn.execute_unprepared(sql).await.unwrap();
    }
    for (table, left) in [("account_tokens", 5), ("outbox", 1), ("social_states", 2)] {
        count_reaches(&conn, &format!("SELECT COUNT(*) FROM {table}"), left, Duration::from_secs(20)).await;
    }
    // What is left is what is alive: the unexpired links, the waiting message, the sign-ins
    // still in progress.
    let kept = format!("SELECT COUNT(*) FROM account_tokens WHERE user_id IN ({})", expired.join(","));
    assert_eq!(count(&conn, &kept).await, 0);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM outbox WHERE id = 'waiting'").await, 1);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM social_states WHERE state_hash LIKE 'new-%'").await, 2);
    assert_eq!(metric(metrics, "identity_janitor_rows_removed_total{table=\"account_tokens\"}").await, 5);
    assert_eq!(metric(metrics, "identity_janitor_rows_removed_total{table=\"outbox\"}").await, 10);
    assert_eq!(metric(metrics, "identity_janitor_rows_removed_total{table=\"social_states\"}").await, 2);
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_sharing_a_database_take_turns_one_janitor_run_per_interval_in_all() {
    let db = TestDb::new().await;
    if !db.is_postgres() {
        return; // replicas share PostgreSQL; SQLite is one process
    }
    let interval = Duration::from_millis(400);
    let started = std::time::Instant::now();
    // Three replicas at once, each wanting to run every interval.
    let mut replicas = Vec::new();
    let mut addresses = Vec::new();
    for _ in 0..3 {
        let (config, metrics) = janitor_config(&db, interval);
        replicas.push(Service::start(config));
        addresses.push(metrics);
    }
    let replicas = futures::future::join_all(replicas).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut runs = 0;
    for metrics in &addresses {
        runs += metric(*metrics, "identity_janitor_runs_total").await;
    }
    let elapsed = started.elapsed();
    // One run per interval in all (a run may come a tenth of an interval early; plus the
    // first, and one for a tick at the edge); three replicas each on their own would have
    // run about three times as often.
    let most = (elapsed.as_millis() * 10 / (interval.as_millis() * 9)) as u64 + 2;
    assert!(runs >= 4, "the janitor hardly ran: {runs} runs in {elapsed:?}");
    assert!(runs <= most, "{runs} janitor runs in {elapsed:?} at one per {interval:?}: replicas did not take turns");
    for replica in replicas {
        replica.stop().await.unwrap();
    }
}
