//! Held under attack: bursts of simultaneous requests against the login budget and against one
//! refresh token, spread over two replicas sharing the database; oversized, malformed and
//! look-alike input.

use std::{collections::HashSet, time::Duration};

use e2e::*;
use futures::future::join_all;
use identity_proto::pb;
use tonic::Code;
use tonic_types::StatusExt;

/// Two replicas of the identity service on one database.
async fn two_replicas(db: &TestDb, configure: impl Fn(&mut identity_service::Config)) -> (Service, Service) {
    let mut first = config(db);
    configure(&mut first);
    let mut second = config(db);
    configure(&mut second);
    let first = Service::start(first).await;
    let second = Service::start(second).await;
    (first, second)
}

/// What a burst of logins got back.
#[derive(Debug, Default)]
struct Tally {
    logged_in: usize,
    /// Checked against the password and refused.
    wrong: usize,
    /// Refused before the password was checked.
    throttled: usize,
}

/// `count` logins at once as `username` from `ip`, alternating between the replicas; the
/// attempt at `right_at` (if any) carries the right password.
async fn burst(replicas: [&Service; 2], username: &str, ip: &str, count: usize, right_at: Option<usize>) -> Tally {
    let attempts = (0..count).map(|index| {
        let mut auth = replicas[index % 2].auth();
        let password = if Some(index) == right_at { PASSWORD.to_owned() } else { format!("guess number {index}") };
        let request = from_address(pb::LoginRequest { username: username.into(), password }, ip);
        async move { auth.login(request).await }
    });
    let mut tally = Tally::default();
    for result in join_all(attempts).await {
        match result {
            Ok(_) => tally.logged_in += 1,
            Err(status) if status.code() == Code::Unauthenticated => tally.wrong += 1,
            Err(status) if status.code() == Code::ResourceExhausted => tally.throttled += 1,
            Err(status) => panic!("unexpected answer to a login: {status:?}"),
        }
    }
    tally
}

async fn login_from(service: &Service, username: &str, ip: &str) -> Result<pb::LoginResponse, tonic::Status> {
    let request = from_address(pb::LoginRequest { username: username.into(), password: PASSWORD.into() }, ip);
    service.auth().login(request).await.map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_burst_of_guesses_is_checked_at_most_the_budget_and_then_even_the_right_password_waits() {
    let db = TestDb::new().await;
    let (a, b) = two_replicas(&db, |_| {}).await;
    sign_up(&mut a.users(), "vera").await;

    let tally = burst([&a, &b], "vera", "203.0.113.7", 60, None).await;
    assert!((1..=5).contains(&tally.wrong), "{tally:?}: the budget is 5 checked passwords");
    assert_eq!(tally.throttled, 60 - tally.wrong, "{tally:?}");

    // The budget is spent: the right password, alone or inside another burst, waits too.
    let status = login_from(&a, "vera", "203.0.113.7").await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.get_details_retry_info().and_then(|info| info.retry_delay).is_some(), "RetryInfo");
    let tally = burst([&a, &b], "vera", "203.0.113.7", 20, Some(10)).await;
    assert_eq!((tally.logged_in, tally.wrong, tally.throttled), (0, 0, 20), "{tally:?}");
}

#[tokio::test]
async fn an_attack_from_many_addresses_never_locks_the_real_user_out() {
    let db = TestDb::new().await;
    let (a, b) = two_replicas(&db, |_| {}).await;
    sign_up(&mut a.users(), "walt").await;
    let attackers = ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4", "203.0.113.5"];

    // Five addresses, forty guesses each, all at once; the real user logs in meanwhile.
    let attack = join_all(attackers.iter().map(|ip| burst([&a, &b], "walt", ip, 40, None)));
    let (tallies, during) = tokio::join!(attack, login_from(&b, "walt", "198.51.100.2"));
    during.expect("the real user was refused during the attack");
    let checked: usize = tallies.iter().map(|tally| tally.wrong).sum();
    assert!(checked <= 5 * attackers.len(), "{checked} guesses checked: {tallies:?}");

    login_from(&a, "walt", "198.51.100.3").await.expect("the real user was refused after the attack");
}

#[tokio::test]
async fn the_account_wide_limit_slows_only_the_addresses_that_failed() {
    let db = TestDb::new().await;
    let (a, b) = two_replicas(&db, |config| {
        config.login_max_failures = 3;
        config.login_account_max_failures = 4;
    })
    .await;
    sign_up(&mut a.users(), "xavi").await;
    let wrong = |ip: &str| from_address(pb::LoginRequest { username: "xavi".into(), password: "wrong".into() }, ip);
    for _ in 0..3 {
        assert_eq!(a.auth().login(wrong("203.0.113.1")).await.unwrap_err().code(), Code::Unauthenticated);
    }
    // The fourth failure on the account, from a second address, reaches the account's limit.
    assert_eq!(b.auth().login(wrong("203.0.113.2")).await.unwrap_err().code(), Code::Unauthenticated);
    // That address has failed: the account-wide lock holds it back, whatever it sends.
    let status = a.auth().login(wrong("203.0.113.2")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(login_from(&b, "xavi", "203.0.113.2").await.unwrap_err().code(), Code::ResourceExhausted);
    // An address that never failed is still heard: a wrong password is checked (and counted)...
    assert_eq!(a.auth().login(wrong("203.0.113.3")).await.unwrap_err().code(), Code::Unauthenticated);
    // ...and the right one gets in.
    login_from(&b, "xavi", "198.51.100.7").await.expect("the real user was locked out");
}

#[tokio::test]
async fn twenty_simultaneous_refreshes_of_one_token_get_one_successor_and_a_late_reuse_is_theft() {
    let db = TestDb::new().await;
    let (a, b) = two_replicas(&db, |config| config.refresh_reuse_grace = secs(3)).await;
    sign_up(&mut a.users(), "xena").await;
    let login = log_in(&mut a.auth(), "xena").await;
    let refresh = |token: &str| pb::RefreshTokenRequest { refresh_token: token.into() };

    let refreshes = (0..20).map(|index| {
        let mut auth = [&a, &b][index % 2].auth();
        let request = refresh(&login.refresh_token);
        async move { auth.refresh_token(request).await.map(tonic::Response::into_inner) }
    });
    let pairs: Vec<pb::RefreshTokenResponse> =
        join_all(refreshes).await.into_iter().map(|result| result.expect("a refresh within the grace")).collect();
    let successors: HashSet<&str> = pairs.iter().map(|pair| pair.refresh_token.as_str()).collect();
    assert_eq!(successors.len(), 1, "one token forked into {} successors", successors.len());
    let successor = pairs[0].refresh_token.clone();
    assert_ne!(successor, login.refresh_token);
    for pair in &pairs {
        a.auth().authenticate(access(&pair.access_token)).await.unwrap();
    }
    // A retry within the grace gets the same successor again; nothing else was ever stored.
    let again = b.auth().refresh_token(refresh(&login.refresh_token)).await.unwrap().into_inner();
    assert_eq!(again.refresh_token, successor);
    let conn = db.connect().await;
    let family = format!("SELECT COUNT(*) FROM refresh_tokens WHERE session_id = '{}'", login.session_id);
    assert_eq!(count(&conn, &family).await, 2, "the original and its one successor");

    // The successor rotates as usual.
    let next = a.auth().refresh_token(refresh(&successor)).await.unwrap().into_inner();

    // After the grace, the first token is only evidence of theft: the session dies with it.
    let status = eventually(Duration::from_secs(15), || {
        let mut auth = a.auth();
        let request = refresh(&login.refresh_token);
        async move { auth.refresh_token(request).await.err() }
    })
    .await;
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.get_details_error_info().unwrap().reason, "REFRESH_TOKEN_REUSED");
    let status = b.auth().refresh_token(refresh(&next.refresh_token)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(a.auth().authenticate(access(&next.access_token)).await.unwrap_err().code(), Code::Unauthenticated);

    // Successors are kept (sealed) only for the grace: once it closes, none is left.
    let sealed = "SELECT COUNT(*) FROM refresh_tokens WHERE successor_sealed IS NOT NULL";
    count_reaches(&conn, sealed, 0, Duration::from_secs(15)).await;
}

#[tokio::test]
async fn oversized_input_is_refused_before_anything_is_stored() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    sign_up(&mut service.users(), "yuri").await;
    let (mut users, mut auth) = (service.users(), service.auth());
    let megabyte = "a".repeat(1024 * 1024);

    let status = users
        .create_user(pb::CreateUserRequest {
            username: megabyte.clone(),
            email: "big@example.com".into(),
            password: PASSWORD.into(),
            role: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(status.get_details_bad_request().unwrap().field_violations[0].field, "request");
    let status = auth.login(pb::LoginRequest { username: megabyte, password: "x".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // Under the message limit, each field has its own, named in the answer.
    let status = auth.login(pb::LoginRequest { username: "b".repeat(60_000), password: "x".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let violation = &status.get_details_bad_request().unwrap().field_violations[0];
    assert_eq!(
        (violation.field.as_str(), violation.description.as_str()),
        ("username", "must be at most 254 characters")
    );
    let status =
        auth.login(pb::LoginRequest { username: "yuri".into(), password: "p".repeat(2000) }).await.unwrap_err();
    assert_eq!(status.get_details_bad_request().unwrap().field_violations[0].field, "password");
    let status = auth.refresh_token(pb::RefreshTokenRequest { refresh_token: "r".repeat(1000) }).await.unwrap_err();
    assert_eq!(status.get_details_bad_request().unwrap().field_violations[0].field, "refresh_token");

    let conn = db.connect().await;
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM login_attempts").await, 0);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM users").await, 1);

    // A failed login stores hashes, never what was typed.
    let typed = "nobody-by-this-name";
    auth.login(pb::LoginRequest { username: typed.into(), password: "wrong password".into() }).await.unwrap_err();
    assert!(count(&conn, "SELECT COUNT(*) FROM login_attempts").await > 0);
    let leaked = format!("SELECT COUNT(*) FROM login_attempts WHERE throttle_key LIKE '%{typed}%'");
    assert_eq!(count(&conn, &leaked).await, 0);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM login_attempts WHERE LENGTH(throttle_key) > 72").await, 0);
}

#[tokio::test]
async fn look_alike_usernames_and_non_addresses_are_refused() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    let mut users = service.users();
    sign_up(&mut users, "root").await;
    let create = |username: &str, email: &str| pb::CreateUserRequest {
        username: username.into(),
        email: email.into(),
        password: PASSWORD.into(),
        role: String::new(),
    };
    let violation = |status: tonic::Status| {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let violation = status.get_details_bad_request().unwrap().field_violations[0].clone();
        (violation.field, violation.description)
    };

    // Latin r and t around Cyrillic о: it would pass for "root" on any screen.
    let status = users.create_user(create("r\u{43e}\u{43e}t", "cyrillic@example.com")).await.unwrap_err();
    let (field, reason) = violation(status);
    assert_eq!(field, "username");
    assert!(reason.contains("scripts"), "{reason}");
    // Full-width letters are the same name after NFKC: taken.
    let status = users.create_user(create("ｒｏｏｔ", "fullwidth@example.com")).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    for email in ["<script>@x.com", "Root <root2@example.com>", "root2@localhost"] {
        let status = users.create_user(create("root2", email)).await.unwrap_err();
        assert_eq!(violation(status).0, "email", "{email}");
    }
    // Whole-script names of other languages are welcome, and found whatever their case.
    let created = users.create_user(create("Дмитрий", "dmitry@example.com")).await.unwrap().into_inner();
    assert_eq!(created.user.unwrap().username, "Дмитрий");
    let mut auth = service.auth();
    auth.login(pb::LoginRequest { username: "ДМИТРИЙ".into(), password: PASSWORD.into() }).await.unwrap();
    auth.login(pb::LoginRequest { username: "ＲＯＯＴ".into(), password: PASSWORD.into() }).await.unwrap();
}

#[tokio::test]
async fn undecodable_and_oversized_messages_are_the_callers_fault() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    for (path, body) in [
        ("/identity.v1.AuthService/Login", vec![0xff, 0xff, 0xff, 0xff]),
        ("/identity.v1.UserService/CreateUser", vec![0x0a, 0x7f]),
        ("/identity.v1.AuthService/Authenticate", vec![0x0a; 200 * 1024]),
    ] {
        let status = raw::call(service.channel(), path, body).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{path}: {status:?}");
        assert_eq!(status.get_details_bad_request().unwrap().field_violations[0].field, "request");
    }
    // The server is none the worse.
    sign_up(&mut service.users(), "zora").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nul_bytes_are_bad_input_and_never_take_the_service_out_of_rotation() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    sign_up(&mut service.users(), "nora").await;
    let access = log_in(&mut service.auth(), "nora").await.access_token;
    // A burst of strings with NUL and other control bytes where they would reach the
    // database (PostgreSQL refuses a NUL in any string): a login, a user id, a session id.
    let calls = (0..30).map(|n| {
        let (mut auth, mut users, access) = (service.auth(), service.users(), access.clone());
        async move {
            match n % 3 {
                0 => auth
                    .login(pb::LoginRequest { username: format!("nora\0{n}"), password: PASSWORD.into() })
                    .await
                    .map(drop),
                1 => users.get_user(bearer(pb::GetUserRequest { id: format!("\0{n}") }, &access)).await.map(drop),
                _ => {
                    let request = pb::RevokeSessionRequest { session_id: format!("x\u{1}{n}\0") };
                    auth.revoke_session(bearer(request, &access)).await.map(drop)
                }
            }
        }
    });
    for result in join_all(calls).await {
        let status = result.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.get_details_bad_request().is_some(), "{status:?}");
    }
    // Health never wavered, and the user logs in.
    let health = pb_health::health_client::HealthClient::new(service.channel())
        .check(pb_health::HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, pb_health::health_check_response::ServingStatus::Serving as i32);
    log_in(&mut service.auth(), "nora").await;
}
