//! `identity.v1.AuthService`: login, authenticate, verify, keys, throttling, restarts.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use e2e::*;
use identity_core::{JwtAlg, Secret};
use identity_proto::pb;
use tonic::Code;
use tonic_types::StatusExt;

/// The JSON of a JWT part.
fn part(token: &str, index: usize) -> serde_json::Value {
    let bytes = URL_SAFE_NO_PAD.decode(token.split('.').nth(index).unwrap()).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn login_by_username_or_email_issues_every_token_and_claim() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    let user = sign_up(&mut service.users(), "olga").await;
    let by_email = pb::LoginRequest { username: "OLGA@example.com".into(), password: PASSWORD.into() };
    let login = service.auth().login(by_email).await.unwrap().into_inner();
    assert_eq!(login.user.as_ref().unwrap().id, user.id);
    assert!(login.user.unwrap().last_login.is_some());
    assert!(!login.session_id.is_empty() && !login.session_token.is_empty() && !login.refresh_token.is_empty());
    assert_eq!(URL_SAFE_NO_PAD.decode(&login.refresh_token).unwrap().len(), 32);
    assert!(login.access_expires_at.unwrap().seconds < login.refresh_expires_at.unwrap().seconds);

    let header = part(&login.access_token, 0);
    assert_eq!(header["alg"], "ES256");
    assert!(header["kid"].is_string());
    let claims = part(&login.access_token, 1);
    for name in ["iss", "aud", "sub", "exp", "iat", "jti", "sid", "username", "email", "role"] {
        assert!(!claims[name].is_null(), "missing claim {name}");
    }
    assert_eq!(claims["iss"], "http://127.0.0.1:8080");
    assert_eq!(claims["aud"], "identity");
    assert_eq!(claims["sub"], user.id.as_str());
    assert_eq!(claims["sid"], login.session_id.as_str());
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 300);
    let hasura = &claims["https://hasura.io/jwt/claims"];
    assert_eq!(hasura["x-hasura-allowed-roles"], serde_json::json!(["user"]));
    assert_eq!(hasura["x-hasura-default-role"], "user");
    assert_eq!(hasura["x-hasura-user-id"], user.id.as_str());

    // A new session on every login.
    let again = log_in(&mut service.auth(), "olga").await;
    assert_ne!(again.session_id, login.session_id);
}

#[tokio::test]
async fn authenticate_may_omit_the_claims_and_always_says_when_the_token_expires() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    sign_up(&mut service.users(), "otto").await;
    let login = log_in(&mut service.auth(), "otto").await;
    let full = service.auth().authenticate(access(&login.access_token)).await.unwrap().into_inner().principal.unwrap();
    let exp = full.claims.as_ref().unwrap().exp;
    assert_eq!(full.access_expires_at.unwrap().seconds, exp);
    let lean = pb::AuthenticateRequest { omit_claims: true, ..access(&login.access_token) };
    let lean = service.auth().authenticate(lean).await.unwrap().into_inner().principal.unwrap();
    assert_eq!(lean.claims, None);
    assert_eq!(lean.access_expires_at.unwrap().seconds, exp);
    assert_eq!((lean.user, lean.session_id), (full.user, full.session_id));
    let by_session = service.auth().authenticate(session_token(&login.session_token)).await.unwrap().into_inner();
    assert_eq!(by_session.principal.unwrap().access_expires_at, None);
}

#[tokio::test]
async fn failed_logins_get_one_generic_message() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    sign_up(&mut service.users(), "pete").await;
    let mut auth = service.auth();
    let wrong_password =
        auth.login(pb::LoginRequest { username: "pete".into(), password: "wrong password".into() }).await.unwrap_err();
    let unknown_user =
        auth.login(pb::LoginRequest { username: "nobody".into(), password: PASSWORD.into() }).await.unwrap_err();
    assert_eq!(wrong_password.code(), Code::Unauthenticated);
    assert_eq!((unknown_user.code(), unknown_user.message()), (wrong_password.code(), wrong_password.message()));
    let empty = auth.login(pb::LoginRequest { username: "pete".into(), password: String::new() }).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn authenticate_accepts_access_and_session_tokens() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    sign_up(&mut service.users(), "quinn").await;
    let login = log_in(&mut service.auth(), "quinn").await;
    let mut auth = service.auth();

    let by_access = auth.authenticate(access(&login.access_token)).await.unwrap().into_inner().principal.unwrap();
    assert_eq!(by_access.session_id, login.session_id);
    assert_eq!(by_access.role, "user");
    assert_eq!(by_access.user.unwrap().username, "quinn");
    let claims = by_access.claims.unwrap();
    assert_eq!(claims.sid, login.session_id);

    let by_session =
        auth.authenticate(session_token(&login.session_token)).await.unwrap().into_inner().principal.unwrap();
    assert_eq!(by_session.session_id, login.session_id);
    // Twice more: served from what the service remembers, same answer.
    for _ in 0..2 {
        auth.authenticate(access(&login.access_token)).await.unwrap();
        auth.authenticate(session_token(&login.session_token)).await.unwrap();
    }
    let status = auth.authenticate(pb::AuthenticateRequest { credential: None, omit_claims: false }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = auth.authenticate(session_token("not-a-session")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn tampered_forged_and_algorithm_confused_tokens_are_refused() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    sign_up(&mut service.users(), "rosa").await;
    let login = log_in(&mut service.auth(), "rosa").await;
    let mut auth = service.auth();
    let [header, payload, signature]: [&str; 3] = login.access_token.split('.').collect::<Vec<_>>().try_into().unwrap();

    let mut claims = part(&login.access_token, 1);
    claims["role"] = "manager".into();
    let forged_payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let tampered = format!("{header}.{forged_payload}.{signature}");

    let kid = part(&login.access_token, 0)["kid"].as_str().unwrap().to_owned();
    let none_header = URL_SAFE_NO_PAD.encode(serde_json::json!({"alg": "none", "typ": "JWT", "kid": kid}).to_string());
    let alg_none = format!("{none_header}.{payload}.");

    // HS256 signed with public material, naming the real key: the classic confusion attack.
    let jwks = auth.get_jwks(pb::GetJwksRequest {}).await.unwrap().into_inner();
    let public = &jwks.keys[0];
    let mut hs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs_header.kid = Some(kid.clone());
    let confused = jsonwebtoken::encode(
        &hs_header,
        &part(&login.access_token, 1),
        &jsonwebtoken::EncodingKey::from_secret(format!("{}{}", public.x, public.y).as_bytes()),
    )
    .unwrap();

    let unknown_kid = {
        let mut header = part(&login.access_token, 0);
        header["kid"] = "someone-else".into();
        format!("{}.{payload}.{signature}", URL_SAFE_NO_PAD.encode(header.to_string()))
    };

    for (name, token) in [
        ("tampered", tampered),
        ("alg none", alg_none),
        ("HS256 confusion", confused),
        ("unknown kid", unknown_kid),
        ("garbage", "a.b.c".into()),
    ] {
        let status = auth.authenticate(access(&token)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{name}");
        assert_eq!(status.get_details_error_info().unwrap().reason, "INVALID_TOKEN", "{name}");
        let status = auth.verify_token(pb::VerifyTokenRequest { token }).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{name}");
    }
    auth.authenticate(access(&login.access_token)).await.unwrap();
}

#[tokio::test]
async fn verify_token_returns_the_verified_payload() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    let user = sign_up(&mut service.users(), "sam").await;
    let login = log_in(&mut service.auth(), "sam").await;
    let claims = service
        .auth()
        .verify_token(pb::VerifyTokenRequest { token: login.access_token.clone() })
        .await
        .unwrap()
        .into_inner()
        .claims
        .unwrap();
    assert_eq!(claims.sub, user.id);
    assert_eq!(claims.username, "sam");
    assert_eq!(claims.role, "user");
    assert_eq!(claims.hasura.as_ref().unwrap().user_id, user.id);
    // The payload exactly as the token carries it: integers stay integers.
    let payload: serde_json::Value = serde_json::from_str(&claims.payload_json).unwrap();
    assert_eq!(payload, part(&login.access_token, 1));
    assert_eq!(payload["exp"].as_i64(), Some(claims.exp));
    assert!(payload["https://hasura.io/jwt/claims"].is_object());
    let status = service.auth().verify_token(pb::VerifyTokenRequest { token: String::new() }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn login_throttling_locks_an_address_out_then_lets_the_user_back_in() {
    let db = TestDb::new().await;
    let mut config = config(&db);
    config.login_max_failures = 3;
    config.login_lockout = secs(1);
    config.login_lockout_max = secs(2);
    let service = Service::start(config).await;
    sign_up(&mut service.users(), "tara").await;
    let mut auth = service.auth();
    let attempt = |password: &str, ip: &str| {
        from_address(pb::LoginRequest { username: "tara".into(), password: password.into() }, ip)
    };
    // Guessing by username and by email counts against the one account.
    for login in ["tara", "tara@example.com", "TARA"] {
        let request =
            from_address(pb::LoginRequest { username: login.into(), password: "wrong password".into() }, "203.0.113.7");
        let status = auth.login(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    // Locked from that address, even with the right password...
    let status = auth.login(attempt(PASSWORD, "203.0.113.7")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    let retry = status.get_details_retry_info().and_then(|info| info.retry_delay).expect("RetryInfo");
    assert!(retry >= Duration::from_secs(1) && retry <= Duration::from_secs(2), "{retry:?}");
    // ...but the real user, elsewhere, is not locked out.
    auth.login(attempt(PASSWORD, "198.51.100.2")).await.unwrap();
    // Refused attempts do not extend the lock: retrying until it lifts gets in.
    eventually(Duration::from_secs(15), || {
        let mut auth = auth.clone();
        async move { auth.login(attempt(PASSWORD, "203.0.113.7")).await.ok() }
    })
    .await;
}

#[tokio::test]
async fn any_jwt_library_verifies_our_tokens_from_the_jwk_set_alone() {
    for alg in [JwtAlg::Rs256, JwtAlg::Es256, JwtAlg::EdDsa] {
        let db = TestDb::new().await;
        let mut config = config(&db);
        config.jwt_alg = alg;
        let service = Service::start(config).await;
        sign_up(&mut service.users(), "uma").await;
        let login = log_in(&mut service.auth(), "uma").await;
        let jwks = service.auth().get_jwks(pb::GetJwksRequest {}).await.unwrap().into_inner();
        assert_eq!(jwks.keys.len(), 1);
        let key = &jwks.keys[0];
        assert_eq!((key.alg.as_str(), key.r#use.as_str()), (alg.name(), "sig"));
        let set = serde_json::json!({"keys": jwks.keys.iter().map(|k| {
            let mut jwk = serde_json::json!({"kty": k.kty, "kid": k.kid, "use": k.r#use, "alg": k.alg});
            for (name, value) in [("n", &k.n), ("e", &k.e), ("crv", &k.crv), ("x", &k.x), ("y", &k.y)] {
                if !value.is_empty() { jwk[name] = value.clone().into(); }
            }
            jwk
        }).collect::<Vec<_>>()});
        let claims = python_verify(&set.to_string(), &login.access_token, "http://127.0.0.1:8080");
        assert_eq!(claims["sid"], login.session_id.as_str(), "{alg}");
        assert_eq!(claims["username"], "uma", "{alg}");
    }
}

#[tokio::test]
async fn hs256_tokens_verify_and_the_secret_never_appears_in_the_jwk_set() {
    let db = TestDb::new().await;
    let mut config = config(&db);
    config.jwt_alg = JwtAlg::Hs256;
    config.jwt_secret = Some(Secret::new("an HS256 secret of at least 32 bytes!"));
    let service = Service::start(config).await;
    sign_up(&mut service.users(), "vic").await;
    let login = log_in(&mut service.auth(), "vic").await;
    assert_eq!(part(&login.access_token, 0)["alg"], "HS256");
    service.auth().authenticate(access(&login.access_token)).await.unwrap();
    let jwks = service.auth().get_jwks(pb::GetJwksRequest {}).await.unwrap().into_inner();
    assert!(jwks.keys.iter().all(|key| key.kty != "oct"), "{jwks:?}");
}

#[tokio::test]
async fn a_restart_keeps_users_sessions_and_signing_keys() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    sign_up(&mut service.users(), "wes").await;
    let login = log_in(&mut service.auth(), "wes").await;
    let keys_before = service.auth().get_jwks(pb::GetJwksRequest {}).await.unwrap().into_inner();
    service.stop().await.unwrap();

    let service = Service::start(config(&db)).await;
    let keys_after = service.auth().get_jwks(pb::GetJwksRequest {}).await.unwrap().into_inner();
    assert_eq!(keys_before, keys_after);
    let mut auth = service.auth();
    auth.authenticate(access(&login.access_token)).await.unwrap();
    auth.authenticate(session_token(&login.session_token)).await.unwrap();
    auth.refresh_token(pb::RefreshTokenRequest { refresh_token: login.refresh_token }).await.unwrap();
    log_in(&mut auth, "wes").await;
}

#[tokio::test]
async fn health_reports_serving() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    let mut health = pb_health::health_client::HealthClient::new(service.channel());
    for name in ["", "identity.v1.AuthService", "identity.v1.UserService"] {
        let response = health.check(pb_health::HealthCheckRequest { service: name.into() }).await.unwrap();
        assert_eq!(
            response.into_inner().status,
            pb_health::health_check_response::ServingStatus::Serving as i32,
            "{name:?}"
        );
    }
}
