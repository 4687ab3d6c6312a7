//! Sessions: refresh rotation and theft, revocation, expiry, listing, watching.

use std::time::Duration;

use e2e::*;
use identity_core::Secret;
use identity_proto::pb;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_types::StatusExt;

fn refresh(token: &str) -> pb::RefreshTokenRequest {
    pb::RefreshTokenRequest { refresh_token: token.into() }
}

fn reason(status: &tonic::Status) -> String {
    status.get_details_error_info().map(|info| info.reason).unwrap_or_default()
}

#[tokio::test]
async fn refresh_rotates_both_tokens() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    sign_up(&mut service.users(), "amy").await;
    let login = log_in(&mut service.auth(), "amy").await;
    let mut auth = service.auth();
    let pair = auth.refresh_token(refresh(&login.refresh_token)).await.unwrap().into_inner();
    assert_ne!(pair.refresh_token, login.refresh_token);
    assert_ne!(pair.access_token, login.access_token);
    assert_eq!(pair.claims.unwrap().sid, login.session_id);
    let principal = auth.authenticate(access(&pair.access_token)).await.unwrap().into_inner().principal.unwrap();
    assert_eq!(principal.session_id, login.session_id);
    auth.refresh_token(refresh(&pair.refresh_token)).await.unwrap();
    let status = auth.refresh_token(refresh("never-issued")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(auth.refresh_token(refresh("")).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn refresh_token_reuse_revokes_the_session_and_only_that_session() {
    let db = TestDb::new().await;
    let mut config = config(&db);
    config.refresh_reuse_grace = secs(0);
    let service = Service::start(config).await;
    sign_up(&mut service.users(), "ben").await;
    let stolen = log_in(&mut service.auth(), "ben").await;
    let other = log_in(&mut service.auth(), "ben").await;
    let mut auth = service.auth();

    let rotated = auth.refresh_token(refresh(&stolen.refresh_token)).await.unwrap().into_inner();
    let status = auth.refresh_token(refresh(&stolen.refresh_token)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(reason(&status), "REFRESH_TOKEN_REUSED");
    // The whole session is dead: its access tokens and its newest refresh token...
    let status = auth.authenticate(access(&rotated.access_token)).await.unwrap_err();
    assert_eq!(reason(&status), "SESSION_REVOKED");
    assert_eq!(auth.authenticate(access(&stolen.access_token)).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(auth.refresh_token(refresh(&rotated.refresh_token)).await.unwrap_err().code(), Code::Unauthenticated);
    // ...but the user's other session lives on.
    auth.authenticate(access(&other.access_token)).await.unwrap();
    auth.refresh_token(refresh(&other.refresh_token)).await.unwrap();
}

#[tokio::test]
async fn a_refresh_retried_within_the_grace_is_not_theft() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    sign_up(&mut service.users(), "cat").await;
    let login = log_in(&mut service.auth(), "cat").await;
    let mut auth = service.auth();
    // Two tabs refreshing at once with the same token.
    let (mut tab1, mut tab2) = (auth.clone(), auth.clone());
    let (first, second) = tokio::join!(
        tab1.refresh_token(refresh(&login.refresh_token)),
        tab2.refresh_token(refresh(&login.refresh_token)),
    );
    let (first, second) = (first.unwrap().into_inner(), second.unwrap().into_inner());
    auth.authenticate(access(&first.access_token)).await.unwrap();
    auth.authenticate(access(&second.access_token)).await.unwrap();
    auth.refresh_token(refresh(&first.refresh_token)).await.unwrap();
}

#[tokio::test]
async fn revoking_a_session_kills_its_access_token_on_the_next_call() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    sign_up(&mut service.users(), "dan").await;
    let login = log_in(&mut service.auth(), "dan").await;
    let mut auth = service.auth();
    auth.authenticate(access(&login.access_token)).await.unwrap();
    auth.revoke_session(bearer(pb::RevokeSessionRequest { session_id: login.session_id.clone() }, &login.access_token))
        .await
        .unwrap();
    for request in [access(&login.access_token), session_token(&login.session_token)] {
        let status = auth.authenticate(request).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (Code::Unauthenticated, "session revoked"));
    }
    let status = auth.verify_token(pb::VerifyTokenRequest { token: login.access_token.clone() }).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(auth.refresh_token(refresh(&login.refresh_token)).await.unwrap_err().code(), Code::Unauthenticated);
}

#[tokio::test]
async fn logout_revokes_the_callers_session() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    sign_up(&mut service.users(), "eli").await;
    let login = log_in(&mut service.auth(), "eli").await;
    let other = log_in(&mut service.auth(), "eli").await;
    let mut auth = service.auth();
    assert_eq!(auth.logout(pb::LogoutRequest {}).await.unwrap_err().code(), Code::Unauthenticated);
    auth.logout(session(pb::LogoutRequest {}, &login.session_token)).await.unwrap();
    assert_eq!(reason(&auth.authenticate(access(&login.access_token)).await.unwrap_err()), "SESSION_REVOKED");
    auth.authenticate(access(&other.access_token)).await.unwrap();
    // A second logout with the dead credential is refused, not an error of ours.
    assert_eq!(
        auth.logout(session(pb::LogoutRequest {}, &login.session_token)).await.unwrap_err().code(),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn revoke_token_ends_the_session_of_a_refresh_token() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    sign_up(&mut service.users(), "fay").await;
    let login = log_in(&mut service.auth(), "fay").await;
    let mut auth = service.auth();
    let revoked =
        auth.revoke_token(pb::RevokeTokenRequest { refresh_token: login.refresh_token.clone() }).await.unwrap();
    assert!(revoked.into_inner().revoked_at.unwrap().seconds > 0);
    assert_eq!(auth.authenticate(access(&login.access_token)).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(auth.refresh_token(refresh(&login.refresh_token)).await.unwrap_err().code(), Code::Unauthenticated);
    let status = auth.revoke_token(pb::RevokeTokenRequest { refresh_token: "unknown".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn sessions_are_listed_and_revoked_by_their_owner_or_a_manager() {
    let db = TestDb::new().await;
    let mut config = config(&db);
    config.bootstrap_manager = Some(Secret::new(format!("root:{PASSWORD}")));
    let service = Service::start(config).await;
    let (mut users, mut auth) = (service.users(), service.auth());
    let gus = sign_up(&mut users, "gus").await;
    sign_up(&mut users, "hal").await;
    let first = log_in(&mut auth, "gus").await;
    let second = log_in(&mut auth, "gus").await;
    let hal = log_in(&mut auth, "hal").await;

    let list =
        auth.list_sessions(bearer(pb::ListSessionsRequest::default(), &first.access_token)).await.unwrap().into_inner();
    assert_eq!(list.sessions.len(), 2);
    let current: Vec<_> = list.sessions.iter().filter(|s| s.current).map(|s| s.id.as_str()).collect();
    assert_eq!(current, [first.session_id.as_str()]);
    assert!(list.sessions.iter().all(|s| s.user_id == gus.id && s.expires_at.is_some() && s.idle_expires_at.is_some()));

    // Another user's sessions: not listable, and not even found.
    let status = auth
        .list_sessions(bearer(pb::ListSessionsRequest { user_id: gus.id.clone() }, &hal.access_token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = auth
        .revoke_session(bearer(pb::RevokeSessionRequest { session_id: second.session_id.clone() }, &hal.access_token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let root = log_in(&mut auth, "root").await;
    let list = auth
        .list_sessions(bearer(pb::ListSessionsRequest { user_id: gus.id.clone() }, &root.access_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.sessions.len(), 2);
    auth.revoke_session(bearer(pb::RevokeSessionRequest { session_id: second.session_id.clone() }, &root.access_token))
        .await
        .unwrap();
    assert_eq!(auth.authenticate(access(&second.access_token)).await.unwrap_err().code(), Code::Unauthenticated);
    let list =
        auth.list_sessions(bearer(pb::ListSessionsRequest::default(), &first.access_token)).await.unwrap().into_inner();
    assert_eq!(list.sessions.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), [first.session_id.as_str()]);
}

#[tokio::test]
async fn an_idle_session_dies_and_a_used_one_lives() {
    let db = TestDb::new().await;
    let mut config = config(&db);
    config.session_idle_ttl = secs(2);
    let service = Service::start(config).await;
    sign_up(&mut service.users(), "ivy").await;
    let used = log_in(&mut service.auth(), "ivy").await;
    let idle = log_in(&mut service.auth(), "ivy").await;
    let mut auth = service.auth();
    // Keep one session busy for longer than the idle lifetime; leave the other alone.
    for _ in 0..8 {
        auth.authenticate(session_token(&used.session_token)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let status = auth.authenticate(session_token(&idle.session_token)).await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::Unauthenticated, "session expired"));
    assert_eq!(auth.refresh_token(refresh(&idle.refresh_token)).await.unwrap_err().code(), Code::Unauthenticated);
    auth.authenticate(access(&used.access_token)).await.unwrap();
}

#[tokio::test]
async fn a_session_dies_at_its_absolute_expiry_however_busy() {
    let db = TestDb::new().await;
    let mut config = config(&db);
    config.refresh_ttl = secs(2);
    let service = Service::start(config).await;
    sign_up(&mut service.users(), "jay").await;
    let login = log_in(&mut service.auth(), "jay").await;
    let mut auth = service.auth();
    assert!(login.refresh_expires_at.unwrap().seconds - login.access_expires_at.unwrap().seconds <= 0);
    let status = eventually(Duration::from_secs(10), || {
        let mut auth = auth.clone();
        let token = login.session_token.clone();
        async move { auth.authenticate(session_token(&token)).await.err() }
    })
    .await;
    assert_eq!((status.code(), status.message()), (Code::Unauthenticated, "session expired"));
    assert_eq!(auth.refresh_token(refresh(&login.refresh_token)).await.unwrap_err().code(), Code::Unauthenticated);
}

#[tokio::test]
async fn an_expired_access_token_says_so_and_the_session_refreshes() {
    let db = TestDb::new().await;
    let mut config = config(&db);
    config.access_ttl = secs(1);
    let service = Service::start(config).await;
    sign_up(&mut service.users(), "kay").await;
    let login = log_in(&mut service.auth(), "kay").await;
    let mut auth = service.auth();
    let status = eventually(Duration::from_secs(10), || {
        let mut auth = auth.clone();
        let token = login.access_token.clone();
        async move { auth.authenticate(access(&token)).await.err() }
    })
    .await;
    assert_eq!((status.code(), reason(&status).as_str()), (Code::Unauthenticated, "TOKEN_EXPIRED"));
    auth.authenticate(session_token(&login.session_token)).await.unwrap();
    let pair = auth.refresh_token(refresh(&login.refresh_token)).await.unwrap().into_inner();
    auth.authenticate(access(&pair.access_token)).await.unwrap();
}

async fn next_event(stream: &mut tonic::Streaming<pb::WatchSessionResponse>) -> pb::WatchSessionResponse {
    tokio::time::timeout(Duration::from_secs(15), stream.next())
        .await
        .expect("an event")
        .expect("an open stream")
        .unwrap()
}

#[tokio::test]
async fn watch_session_reports_role_changes_then_revocation_then_ends() {
    let db = TestDb::new().await;
    let mut config = config(&db);
    config.bootstrap_manager = Some(Secret::new(format!("root:{PASSWORD}")));
    let service = Service::start(config).await;
    let (mut users, mut auth) = (service.users(), service.auth());
    let lou = sign_up(&mut users, "lou").await;
    let login = log_in(&mut auth, "lou").await;
    let status = auth.watch_session(pb::WatchSessionRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut stream =
        auth.watch_session(bearer(pb::WatchSessionRequest {}, &login.access_token)).await.unwrap().into_inner();

    let root = log_in(&mut auth, "root").await;
    let promote = pb::UpdateUserRequest {
        user: Some(pb::User { id: lou.id.clone(), role: "manager".into(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["role".into()] }),
    };
    users.update_user(bearer(promote, &root.access_token)).await.unwrap();
    let event = next_event(&mut stream).await;
    assert_eq!(event.kind(), pb::SessionEventKind::RoleChanged);
    assert_eq!((event.role.as_str(), event.session_id.as_str()), ("manager", login.session_id.as_str()));

    auth.revoke_session(bearer(pb::RevokeSessionRequest { session_id: login.session_id.clone() }, &root.access_token))
        .await
        .unwrap();
    let event = next_event(&mut stream).await;
    assert_eq!((event.kind(), event.reason.as_str()), (pb::SessionEventKind::Revoked, "revoked"));
    let end = tokio::time::timeout(Duration::from_secs(15), stream.next()).await.expect("the stream ends");
    assert!(end.is_none(), "{end:?}");
}

#[tokio::test]
async fn watch_session_reports_expiry() {
    let db = TestDb::new().await;
    let mut config = config(&db);
    config.session_idle_ttl = secs(2);
    let service = Service::start(config).await;
    sign_up(&mut service.users(), "max").await;
    let login = log_in(&mut service.auth(), "max").await;
    let mut stream = service
        .auth()
        .watch_session(session(pb::WatchSessionRequest {}, &login.session_token))
        .await
        .unwrap()
        .into_inner();
    let event = next_event(&mut stream).await;
    assert_eq!(event.kind(), pb::SessionEventKind::Expired);
}

#[tokio::test]
async fn refresh_token_theft_is_announced_to_the_session_watcher() {
    let db = TestDb::new().await;
    let mut config = config(&db);
    config.refresh_reuse_grace = secs(0);
    let service = Service::start(config).await;
    sign_up(&mut service.users(), "ned").await;
    let login = log_in(&mut service.auth(), "ned").await;
    let mut auth = service.auth();
    let mut stream =
        auth.watch_session(bearer(pb::WatchSessionRequest {}, &login.access_token)).await.unwrap().into_inner();
    auth.refresh_token(refresh(&login.refresh_token)).await.unwrap();
    auth.refresh_token(refresh(&login.refresh_token)).await.unwrap_err();
    let event = next_event(&mut stream).await;
    assert_eq!((event.kind(), event.reason.as_str()), (pb::SessionEventKind::Revoked, "refresh_token_reuse"));
}

#[tokio::test]
async fn shutting_down_ends_open_watch_streams_instead_of_waiting_for_them() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    sign_up(&mut service.users(), "ola").await;
    let login = log_in(&mut service.auth(), "ola").await;
    let mut stream = service
        .auth()
        .watch_session(bearer(pb::WatchSessionRequest {}, &login.access_token))
        .await
        .unwrap()
        .into_inner();
    // stop() fails the test if graceful shutdown hangs on the open stream.
    service.stop().await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(15), stream.next()).await.expect("the stream ends");
    assert!(!matches!(end, Some(Ok(_))), "{end:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn log_out_everywhere_else_ends_every_other_session_once_even_when_two_devices_ask_at_once() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    sign_up(&mut service.users(), "elle").await;
    let mut auth = service.auth();
    let mut logins = Vec::new();
    for _ in 0..8 {
        logins.push(log_in(&mut auth, "elle").await);
    }
    // Two devices ask at once while the others keep calling.
    let ask = |login: &pb::LoginResponse| {
        let (mut auth, token) = (service.auth(), login.access_token.clone());
        async move {
            match auth.revoke_other_sessions(bearer(pb::RevokeOtherSessionsRequest {}, &token)).await {
                Ok(answer) => answer.into_inner().revoked_sessions,
                // The other device was faster and ended this one first.
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
                    0
                }
            }
        }
    };
    let busy = logins[2..].iter().map(|login| {
        let (mut auth, token) = (service.auth(), login.session_token.clone());
        async move {
            for _ in 0..5 {
                let _ = auth.authenticate(session_token(&token)).await;
            }
        }
    });
    let (first, second, _) = tokio::join!(ask(&logins[0]), ask(&logins[1]), futures::future::join_all(busy));
    let mut dead = 0;
    for login in &logins {
        if service.auth().authenticate(session_token(&login.session_token)).await.is_err() {
            dead += 1;
        }
    }
    // Every session but (at most) the two askers ended, each counted by exactly one answer.
    assert!(dead >= 6, "{dead} of 8 sessions ended");
    assert_eq!(first + second, dead, "revocations counted {first} + {second}, {dead} sessions ended");
    for login in &logins[2..] {
        let refused = service.auth().authenticate(session_token(&login.session_token)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    }
}
