//! Browsers: the Django REST Framework-style cookie flow (`/api/csrf`, `/api/login`,
//! `/api/me`, `/api/logout`), the GraphQL `login`/`logout` mutations, CSRF, and the same flow
//! driven by a real headless Chromium on the demo page, with a cross-site attack.

use e2e::*;
use identity_proto::pb;
use serde_json::json;

const WHOAMI: &str = "{ whoami { id username email } }";

fn attribute(set_cookie: &str, name: &str) -> bool {
    set_cookie.split(';').skip(1).any(|part| part.trim().eq_ignore_ascii_case(name))
}

fn attribute_value<'a>(set_cookie: &'a str, name: &str) -> Option<&'a str> {
    set_cookie.split(';').skip(1).find_map(|part| {
        let (key, value) = part.trim().split_once('=')?;
        key.eq_ignore_ascii_case(name).then_some(value)
    })
}

#[tokio::test]
async fn the_cookie_flow_logs_in_reads_me_and_logs_out() {
    let stack = Stack::start().await;
    sign_up(&mut stack.identity.users(), "ann").await;
    let mut browser = Browser::new(&stack.facade);

    let (status, _, body) = browser.get("/api/csrf").await;
    assert_eq!((status, &body["detail"]), (200, &json!("CSRF cookie set")));
    let csrf = browser.set_cookie("csrftoken").expect("csrftoken set").to_owned();
    // The body shows the token the cookie holds (for clients that cannot read cookies).
    assert_eq!(body["csrfToken"], browser.csrf(), "{body}");
    assert!(!attribute(&csrf, "HttpOnly"), "script must read the CSRF cookie: {csrf}");
    assert_eq!(attribute_value(&csrf, "SameSite"), Some("Lax"));
    assert_eq!(attribute_value(&csrf, "Path"), Some("/"));
    // A second visit keeps the token the page already read, and shows it again.
    let token = browser.csrf();
    let (_, _, again) = browser.get("/api/csrf").await;
    assert_eq!(browser.csrf(), token);
    assert_eq!(again["csrfToken"], token);

    let (status, _, body) = browser.post("/api/login", json!({"username": "ann", "password": PASSWORD}), true).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["detail"], "success");
    assert_eq!(body["user"]["username"], "ann");
    assert_eq!(body["user"]["isActive"], true);
    let session = browser.set_cookie("sessionid").expect("sessionid set").to_owned();
    assert!(attribute(&session, "HttpOnly"), "{session}");
    assert_eq!(attribute_value(&session, "SameSite"), Some("Lax"));
    assert_eq!(attribute_value(&session, "Path"), Some("/"));
    // The default issuer is plain-http localhost: `auto` leaves Secure off.
    assert!(!attribute(&session, "Secure"), "{session}");
    let max_age: u64 = attribute_value(&session, "Max-Age").unwrap().parse().unwrap();
    assert!(max_age > 6 * 24 * 3600 && max_age <= 7 * 24 * 3600, "lives as long as the session: {max_age}");
    assert_ne!(browser.csrf(), token, "login rotates the CSRF token");
    let sessionid = browser.cookies["sessionid"].clone();

    let (status, _, me) = browser.get("/api/me").await;
    assert_eq!((status, me["username"].as_str()), (200, Some("ann")));
    let (status, body) = browser.graphql(WHOAMI, false).await;
    assert_eq!((status, &body["data"]["whoami"]["username"]), (200, &json!("ann")), "{body}");

    let (status, _, body) = browser.post("/api/logout", json!({}), true).await;
    assert_eq!(status, 200, "{body}");
    let cleared = browser.set_cookie("sessionid").expect("sessionid cleared");
    assert_eq!(attribute_value(cleared, "Max-Age"), Some("0"), "{cleared}");
    assert_eq!(attribute_value(cleared, "Path"), Some("/"));

    // The old cookie is dead on the server, not only forgotten by the browser.
    browser.cookies.insert("sessionid".into(), sessionid.clone());
    let (status, _, body) = browser.get("/api/me").await;
    assert_eq!(status, 401, "{body}");
    let refused = stack.identity.auth().authenticate(session_token(&sessionid)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn every_login_starts_a_new_session_and_ends_the_one_before() {
    let stack = Stack::start().await;
    sign_up(&mut stack.identity.users(), "bob").await;
    let mut browser = Browser::new(&stack.facade);
    browser.log_in("bob", PASSWORD).await;
    let first = browser.cookies["sessionid"].clone();
    browser.log_in("bob", PASSWORD).await;
    let second = browser.cookies["sessionid"].clone();
    assert_ne!(first, second);
    stack.identity.auth().authenticate(session_token(&second)).await.unwrap();
    let refused = stack.identity.auth().authenticate(session_token(&first)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "the replaced session still lives");
}

#[tokio::test]
async fn anonymous_and_dead_credentials_get_401_from_me() {
    let stack = Stack::start().await;
    let mut browser = Browser::new(&stack.facade);
    let (status, _, body) = browser.get("/api/me").await;
    assert_eq!((status, body), (401, json!({"detail": "Authentication credentials were not provided."})));
    browser.cookies.insert("sessionid".into(), "forged".into());
    let (status, _, body) = browser.get("/api/me").await;
    assert_eq!(status, 401);
    assert!(body["detail"].is_string(), "{body}");
}

#[tokio::test]
async fn failed_logins_share_one_message_and_bad_bodies_are_400() {
    let stack = Stack::start().await;
    sign_up(&mut stack.identity.users(), "cat").await;
    let mut browser = Browser::new(&stack.facade);
    browser.get("/api/csrf").await;
    let (status, _, wrong) = browser.post("/api/login", json!({"username": "cat", "password": "nope"}), true).await;
    assert_eq!(status, 401);
    let (status, _, unknown) =
        browser.post("/api/login", json!({"username": "nobody", "password": "nope"}), true).await;
    assert_eq!(status, 401);
    assert_eq!(wrong, unknown, "no user enumeration");
    assert!(browser.set_cookie("sessionid").is_none());

    for body in [json!({"username": "cat"}), json!([1]), json!({"username": ["ann"], "password": "x"})] {
        let (status, headers, answer) = browser.post("/api/login", body.clone(), true).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert!(headers["content-type"].to_str().unwrap().starts_with("application/json"));
        assert!(answer["detail"].is_string(), "{answer}");
    }
}

#[tokio::test]
async fn too_many_failed_logins_are_429_with_retry_after() {
    let db = TestDb::new().await;
    let mut identity = config(&db);
    identity.login_max_failures = 2;
    let stack = Stack::start_with(db, identity, |_| {}).await;
    sign_up(&mut stack.identity.users(), "dan").await;
    let mut browser = Browser::new(&stack.facade);
    browser.get("/api/csrf").await;
    let mut last = (0, None);
    for _ in 0..4 {
        let (status, headers, _) = browser.post("/api/login", json!({"username": "dan", "password": "x"}), true).await;
        last = (status, headers.get("retry-after").map(|value| value.to_str().unwrap().parse::<u64>().unwrap()));
    }
    assert_eq!(last.0, 429);
    assert!(last.1.is_some_and(|seconds| seconds >= 1), "{last:?}");
    let metrics = scrape(stack.facade.addr).await;
    assert_eq!(sample(&metrics, "facade_logins_total{result=\"failed\"}"), Some(2.0), "{metrics}");
    assert_eq!(sample(&metrics, "facade_logins_total{result=\"throttled\"}"), Some(2.0), "{metrics}");
}

#[tokio::test]
async fn cookie_writes_need_the_csrf_token_and_bearer_writes_do_not() {
    let stack = Stack::start().await;
    sign_up(&mut stack.identity.users(), "eve").await;
    let mut browser = Browser::new(&stack.facade);

    // Login itself needs the token (login CSRF).
    browser.get("/api/csrf").await;
    let credentials = json!({"username": "eve", "password": PASSWORD});
    let (status, _, body) = browser.post("/api/login", credentials.clone(), false).await;
    assert_eq!((status, body), (403, json!({"detail": "CSRF Failed: CSRF token missing."})));
    let good = browser.csrf();
    browser.cookies.insert("csrftoken".into(), new_token());
    let request =
        browser.http.post(format!("{}/api/login", browser.base)).json(&credentials).header("x-csrftoken", good);
    let (status, _, body) = browser.send(request).await;
    assert_eq!((status, body), (403, json!({"detail": "CSRF Failed: CSRF token incorrect."})));
    browser.log_in("eve", PASSWORD).await;

    // A cookie-authenticated mutation without the header changes nothing. (An email change
    // mails a link to the new address.)
    let update = |email: &str| {
        format!(
            r#"mutation {{ requestEmailChange(newEmail: "{email}", password: "{PASSWORD}") {{ success errors }} }}"#
        )
    };
    let (status, body) = browser.graphql(&update("evil@example.com"), false).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_code(&body), "FORBIDDEN");
    let (_, body) = browser.graphql(WHOAMI, false).await;
    assert_eq!(body["data"]["whoami"]["email"], "eve@example.com", "queries need no token; nothing changed");
    let (status, _, _) = browser.post("/api/logout", json!({}), false).await;
    assert_eq!(status, 403);
    let (status, _, _) = browser.get("/api/me").await;
    assert_eq!(status, 200, "a refused logout leaves the session alone");

    // With the header it goes through: the link to the new address is written, and none was
    // for the refused one (it would have been sent first).
    let (status, body) = browser.graphql(&update("eve@new.example.com"), true).await;
    assert_eq!((status, &body["data"]["requestEmailChange"]["success"]), (200, &json!(true)), "{body}");
    let dir = stack.db.outbox_dir();
    let link_to = |address: &'static str| {
        let dir = dir.clone();
        move || {
            outbox(&dir)
                .into_iter()
                .find(|mail| mail.subject == "Confirm your new email address" && mail.is_to(address))
        }
    };
    eventually(std::time::Duration::from_secs(30), || std::future::ready(link_to("eve@new.example.com")())).await;
    assert!(link_to("evil@example.com")().is_none(), "the refused mutation asked for an email change");

    // Bearer requests need no CSRF token, even with a stale cookie around.
    let (token, _) = stack.client().token_auth("eve", PASSWORD).await;
    let body = stack.client().as_user(&token, &update("eve@bearer.example.com"), json!({})).await;
    assert_eq!(body["data"]["requestEmailChange"]["success"], true, "{body}");
    eventually(std::time::Duration::from_secs(30), || std::future::ready(link_to("eve@bearer.example.com")())).await;
}

fn new_token() -> String {
    // Well-formed (43 URL-safe characters) but not the cookie's value.
    "A".repeat(43)
}

#[tokio::test]
async fn simple_cross_site_posts_to_graphql_are_refused_even_with_the_cookie() {
    let stack = Stack::start().await;
    sign_up(&mut stack.identity.users(), "fay").await;
    let mut browser = Browser::new(&stack.facade);
    browser.log_in("fay", PASSWORD).await;
    let forged = r#"{"query": "mutation { logout { success } }"}"#;
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        let request = browser
            .http
            .post(format!("{}/graphql", browser.base))
            .header("content-type", content_type)
            .header("x-csrftoken", browser.csrf())
            .body(forged);
        let (status, _, _) = browser.send(request).await;
        assert_eq!(status, 415, "{content_type}");
    }
    let (status, _, _) = browser.get("/api/me").await;
    assert_eq!(status, 200, "still logged in");
}

#[tokio::test]
async fn the_graphql_login_and_logout_mutations_set_and_clear_the_cookie() {
    let stack = Stack::start().await;
    sign_up(&mut stack.identity.users(), "gus").await;
    let mut browser = Browser::new(&stack.facade);
    let login =
        format!(r#"mutation {{ login(username: "gus", password: "{PASSWORD}") {{ success user {{ username }} }} }}"#);

    let (_, body) = browser.graphql(&login, false).await;
    assert_eq!(error_code(&body), "FORBIDDEN", "login needs the CSRF token: {body}");
    assert!(browser.set_cookie("sessionid").is_none());

    browser.get("/api/csrf").await;
    let (status, body) = browser.graphql(&login, true).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["login"], json!({"success": true, "user": {"username": "gus"}}), "{body}");
    let session = browser.set_cookie("sessionid").expect("login sets the cookie").to_owned();
    assert!(attribute(&session, "HttpOnly"));
    let sessionid = browser.cookies["sessionid"].clone();
    let (_, body) = browser.graphql(WHOAMI, false).await;
    assert_eq!(body["data"]["whoami"]["username"], "gus");

    let (status, body) = browser.graphql("mutation { logout { success } }", true).await;
    assert_eq!((status, &body["data"]["logout"]["success"]), (200, &json!(true)), "{body}");
    assert_eq!(attribute_value(browser.set_cookie("sessionid").unwrap(), "Max-Age"), Some("0"));
    let refused = stack.identity.auth().authenticate(session_token(&sessionid)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn bearer_logout_ends_the_tokens_session() {
    let stack = Stack::start().await;
    sign_up(&mut stack.identity.users(), "hal").await;
    let client = stack.client();
    let (token, _) = client.token_auth("hal", PASSWORD).await;
    let body = client.as_user(&token, "mutation { logout { success } }", json!({})).await;
    assert_eq!(body["data"]["logout"]["success"], true, "{body}");
    let body = client.as_user(&token, WHOAMI, json!({})).await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED", "{body}");
}

#[tokio::test]
async fn cookies_are_secure_unless_the_issuer_is_plain_http_localhost() {
    let db = TestDb::new().await;
    let mut identity = config(&db);
    identity.issuer = Some("https://auth.example.com".into());
    let stack = Stack::start_with(db, identity, |_| {}).await;
    sign_up(&mut stack.identity.users(), "ida").await;
    let mut browser = Browser::new(&stack.facade);
    browser.get("/api/csrf").await;
    assert!(attribute(browser.set_cookie("csrftoken").unwrap(), "Secure"));
    browser.post("/api/login", json!({"username": "ida", "password": PASSWORD}), true).await;
    assert!(attribute(browser.set_cookie("sessionid").unwrap(), "Secure"));

    let db = TestDb::new().await;
    let mut identity = config(&db);
    identity.issuer = Some("https://auth.example.com".into());
    let stack =
        Stack::start_with(db, identity, |facade| facade.cookie_secure = graphql_facade::config::CookieSecure::Never)
            .await;
    let mut browser = Browser::new(&stack.facade);
    browser.get("/api/csrf").await;
    assert!(!attribute(browser.set_cookie("csrftoken").unwrap(), "Secure"));
}

#[tokio::test]
async fn the_identity_service_down_is_503_and_login_resumes_when_it_returns() {
    let stack = Stack::start().await;
    sign_up(&mut stack.identity.users(), "jon").await;
    let mut browser = Browser::new(&stack.facade);
    browser.log_in("jon", PASSWORD).await;
    let Stack { facade, identity, db } = stack;
    let addr = identity.addr;
    identity.stop().await.unwrap();

    let (status, headers, body) = browser.get("/api/me").await;
    assert_eq!(status, 503, "{body}");
    assert!(headers.contains_key("retry-after"));
    assert!(body["detail"].is_string());
    let (status, _, _) = browser.post("/api/login", json!({"username": "jon", "password": PASSWORD}), true).await;
    assert_eq!(status, 503);
    // The CSRF endpoint works from what the facade already knows.
    let (status, _, _) = browser.get("/api/csrf").await;
    assert_eq!(status, 200);

    let _identity = Service::start_at(config(&db), addr).await;
    let (status, _, me) = browser.get("/api/me").await;
    assert_eq!((status, me["username"].as_str()), (200, Some("jon")), "the session survived the outage");
    drop(facade);
}

/// The whole flow in Debian's Chromium on the demo page, then a cross-site attack from
/// another site (`localhost` vs `127.0.0.1`). See tests/node/browser.mjs.
#[tokio::test]
async fn a_real_browser_logs_in_on_the_demo_page_and_a_cross_site_page_changes_nothing() {
    let stack = Stack::start().await;
    sign_up(&mut stack.identity.users(), "kim").await;
    let node = std::env::var("E2E_NODE").unwrap_or_else(|_| "node".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/node/browser.mjs");
    let base = format!("http://{}", stack.facade.addr);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&node).args([script, &base, "kim", PASSWORD]).output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|error| panic!("cannot run node: {error} (.ci/tools installs playwright-core and chromium)"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "browser test failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["ok"], true);
    let checks = report["checks"].as_array().unwrap();
    for check in ["document-cookie-hides-sessionid", "sessionid-httponly", "email-unchanged-after-attack"] {
        assert!(checks.contains(&json!(check)), "{check} did not run: {report}");
    }
    // The session the browser logged out of is dead on the server.
    let sessionid = report["sessionid"].as_str().unwrap();
    let refused = stack.identity.auth().authenticate(session_token(sessionid)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    // The attacker's email change (with the right password) mailed it no link: once a later
    // change's link is written, one asked for before would have been too.
    let access = log_in(&mut stack.identity.auth(), "kim").await.access_token;
    let later =
        pb::RequestEmailChangeRequest { new_email: "kim@later.example.com".into(), current_password: PASSWORD.into() };
    stack.identity.accounts().request_email_change(bearer(later, &access)).await.unwrap();
    let dir = stack.db.outbox_dir();
    let links_to = |address: &str| {
        outbox(&dir)
            .into_iter()
            .filter(|mail| mail.subject == "Confirm your new email address" && mail.is_to(address))
            .count()
    };
    eventually(std::time::Duration::from_secs(30), || {
        std::future::ready((links_to("kim@later.example.com") == 1).then_some(()))
    })
    .await;
    assert_eq!(links_to("attacker@evil.test"), 0, "a cross-site page asked for an email change");
}

#[tokio::test]
async fn an_authorization_header_that_is_not_ours_does_not_hide_the_cookie() {
    let stack = Stack::start().await;
    sign_up(&mut stack.identity.users(), "lou").await;
    let mut browser = Browser::new(&stack.facade);
    browser.log_in("lou", PASSWORD).await;
    let sessionid = browser.cookies["sessionid"].clone();
    // A basic-auth proxy in front adds its own Authorization: the request is still the
    // cookie's, so the write still needs the CSRF token.
    let logout = format!("{}/api/logout", browser.base);
    let request = browser.http.post(&logout).header("authorization", "Basic dXNlcjpwYXNz");
    let (status, _, body) = browser.send(request).await;
    assert_eq!(status, 403, "{body}");
    stack.identity.auth().authenticate(session_token(&sessionid)).await.unwrap();
    let request =
        browser.http.post(&logout).header("authorization", "Basic dXNlcjpwYXNz").header("x-csrftoken", browser.csrf());
    let (status, _, _) = browser.send(request).await;
    assert_eq!(status, 200);
    let refused = stack.identity.auth().authenticate(session_token(&sessionid)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "logout left the cookie's session alive");

    // Nor does it stand in for the CSRF token at login.
    browser.get("/api/csrf").await;
    let login = browser
        .http
        .post(format!("{}/api/login", browser.base))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .json(&json!({"username": "lou", "password": PASSWORD}));
    let (status, _, body) = browser.send(login).await;
    assert_eq!(status, 403, "{body}");
}

#[tokio::test]
async fn a_bearer_logout_also_ends_the_session_of_the_cookie_it_carries() {
    let stack = Stack::start().await;
    sign_up(&mut stack.identity.users(), "max").await;
    let mut browser = Browser::new(&stack.facade);
    browser.log_in("max", PASSWORD).await;
    let sessionid = browser.cookies["sessionid"].clone();
    let (token, _) = stack.client().token_auth("max", PASSWORD).await;
    let request = browser.http.post(format!("{}/api/logout", browser.base)).bearer_auth(&token);
    let (status, _, _) = browser.send(request).await;
    assert_eq!(status, 200);
    for credential in [session_token(&sessionid), access(&token)] {
        let refused = stack.identity.auth().authenticate(credential).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    }
}

#[tokio::test]
async fn unknown_api_paths_and_methods_answer_json_details() {
    let stack = Stack::start().await;
    let mut browser = Browser::new(&stack.facade);
    let (status, headers, body) = browser.get("/api/nothing-here").await;
    assert_eq!(status, 404);
    assert!(headers["content-type"].to_str().unwrap().starts_with("application/json"));
    assert!(body["detail"].is_string(), "{body}");
    let (status, _, body) = browser.get("/api/login").await;
    assert_eq!(status, 405);
    assert!(body["detail"].is_string(), "{body}");
}
