//! Signing in with a provider, end to end against a real OpenID provider (panva's
//! `oidc-provider`) and a GitHub-shaped OAuth2 server (tests/node/social_providers.mjs): the
//! browser redirect flow, the single-page app's REST and GraphQL flows, the linking rules, and
//! every refusal the issue names, each its own test; single use and throttling under bursts.

use std::time::Duration;

use e2e::{smtp::outbox, social::Providers, *};
use futures::future::join_all;
use identity_core::Secret;
use identity_proto::pb::{self, social_service_client::SocialServiceClient};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tonic::Code;
use tonic_types::StatusExt;

/// Both servers with both providers configured, and the providers.
struct Social {
    stack: Stack,
    providers: Providers,
    /// Between the identity service and GitHub's token endpoint and API.
    github_link: Proxy,
    /// Kept alive: the providers file and its secret.
    _dir: tempfile::TempDir,
}

impl Social {
    /// The facade's `/auth/{provider}/callback`.
    fn callback(&self, provider: &str) -> String {
        format!("{}/auth/{provider}/callback", self.stack.facade.base())
    }

    /// The single-page app's redirect URI (listed in the providers file).
    fn spa_redirect(&self) -> String {
        format!("{}/spa/callback", self.stack.facade.base())
    }

    /// A browser that does not follow redirects (the tests follow them).
    fn browser(&self) -> Browser {
        let mut browser = Browser::new(&self.stack.facade);
        browser.http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        browser
    }

    fn social(&self) -> SocialServiceClient<tonic::transport::Channel> {
        SocialServiceClient::new(self.stack.identity.channel())
    }

    async fn users(&self) -> i64 {
        count(&self.stack.db.connect().await, "SELECT COUNT(*) FROM users").await
    }

    async fn identities(&self) -> i64 {
        count(&self.stack.db.connect().await, "SELECT COUNT(*) FROM external_identities").await
    }

    /// A user signed up with a password (`{name}@example.com`), who then verified the address
    /// with the link the service wrote to its outbox.
    async fn verified_user(&self, name: &str) -> pb::User {
        let user = sign_up(&mut self.stack.identity.users(), name).await;
        self.verify(&format!("{name}@example.com")).await;
        user
    }

    /// The message with `subject` written to `address` (the service has no SMTP server: its
    /// outbox directory), once it is there.
    async fn mail(&self, address: &str, subject: &str) -> e2e::smtp::Mail {
        let dir = self.stack.db.outbox_dir();
        eventually(Duration::from_secs(30), || {
            let dir = dir.clone();
            async move { outbox(&dir).into_iter().find(|mail| mail.to == [address] && mail.subject == subject) }
        })
        .await
    }

    /// Follows the verification link written to `address`.
    async fn verify(&self, address: &str) {
        let mail = self.mail(address, crate::email::VERIFY).await;
        let key = crate::email::verify_key(&mail, &self.stack.facade.base());
        let request = pb::VerifyEmailRequest { token: key };
        self.stack.identity.accounts().verify_email(request).await.unwrap();
    }

    /// Links the provider account the provider signs in next to `browser`'s user, over the
    /// browser flow; the callback's (status, Location or page).
    async fn link(&self, browser: &mut Browser, provider: &str) -> (u16, String) {
        let request = browser.http.get(format!("{}/auth/{provider}/link", browser.base));
        let (status, headers, page) = browser.send_text(request).await;
        if status != 302 {
            return (status, page);
        }
        let url = social::authorize(headers["location"].to_str().unwrap(), &self.callback(provider)).await;
        callback(browser, &url).await
    }
}

/// A fresh stack whose providers file names `example` (OpenID) and `github`, with a manager
/// `boss@example.com` (the bootstrap manager's address counts as verified).
async fn social_stack(change: impl FnOnce(&mut identity_service::Config)) -> Social {
    social_stack_with(change, |_| {}).await
}

/// `social_stack`, the facade's configuration changed by `change_facade` too.
async fn social_stack_with(
    change: impl FnOnce(&mut identity_service::Config),
    change_facade: impl FnOnce(&mut graphql_facade::Config),
) -> Social {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let spa = format!("{base}/spa/callback");
    let redirects = [format!("{base}/auth/example/callback"), format!("{base}/auth/github/callback"), spa.clone()];
    let providers = Providers::start(&redirects).await;
    let github_link = Proxy::start(providers.github.trim_start_matches("http://").to_owned()).await;
    let dir = tempfile::tempdir().unwrap();
    let backchannel = github_link.url_through(&providers.github);
    let file = providers.write_file(dir.path(), &spa, backchannel.trim_end_matches('/'));
    let db = TestDb::new().await;
    let mut config = config(&db);
    config.public_url = Some(base);
    config.providers_file = Some(file);
    config.bootstrap_manager = Some(Secret::new(format!("boss@example.com:{PASSWORD}")));
    change(&mut config);
    let identity = Service::start(config).await;
    let mut facade_config = facade_config(&identity);
    change_facade(&mut facade_config);
    let facade = Facade::start_on(facade_config, listener);
    Social { stack: Stack { facade, identity, db }, providers, github_link, _dir: dir }
}

fn account(sub: &str, email: &str, verified: bool, username: &str) -> Value {
    json!({"sub": sub, "email": email, "email_verified": verified, "preferred_username": username, "name": username})
}

/// The browser flow up to the provider's redirect back: GET /auth/{provider}/login, then the
/// provider. The callback URL (with `code` and `state`).
async fn to_callback(social: &Social, browser: &mut Browser, provider: &str, next: &str) -> String {
    let request = browser.http.get(format!("{}/auth/{provider}/login?next={next}", browser.base));
    let (status, headers, body) = browser.send_text(request).await;
    assert_eq!(status, 302, "{body}");
    let cookie = browser.set_cookie("social_binding").expect("the sign-in is bound to the browser").to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains(&format!("Path=/auth/{provider}/callback")), "{cookie}");
    let location = headers["location"].to_str().unwrap().to_owned();
    social::authorize(&location, &social.callback(provider)).await
}

/// GETs the callback: (status, Location or the page).
async fn callback(browser: &mut Browser, url: &str) -> (u16, String) {
    let (status, headers, body) = browser.send_text(browser.http.get(url)).await;
    match headers.get("location") {
        Some(location) => (status, location.to_str().unwrap().to_owned()),
        None => (status, body),
    }
}

/// The whole browser flow; the callback's (status, Location or page).
async fn browser_sign_in(social: &Social, browser: &mut Browser, provider: &str, next: &str) -> (u16, String) {
    let url = to_callback(social, browser, provider, next).await;
    callback(browser, &url).await
}

/// GET /api/me with the browser's cookies.
async fn me(browser: &mut Browser) -> (u16, Value) {
    let (status, _, body) = browser.get("/api/me").await;
    (status, body)
}

/// The SPA flow's first half: GET /api/social/{provider}/ and the provider; (code, state).
async fn spa_code(social: &Social, browser: &mut Browser, provider: &str) -> (String, String) {
    let redirect = social.spa_redirect();
    let (status, _, begun) = browser.get(&format!("/api/social/{provider}/?redirect_uri={redirect}")).await;
    assert_eq!(status, 200, "{begun}");
    assert_eq!(begun["redirect_uri"], redirect.as_str());
    let url = social::authorize(begun["authorization_url"].as_str().unwrap(), &redirect).await;
    let state = query_param(&url, "state");
    assert_eq!(state, begun["state"].as_str().unwrap(), "the provider returns the state");
    (query_param(&url, "code"), state)
}

async fn spa_complete(browser: &mut Browser, provider: &str, code: &str, state: &str) -> (u16, Value) {
    let (status, _, body) =
        browser.post(&format!("/api/social/{provider}/"), json!({"code": code, "state": state}), true).await;
    (status, body)
}

/// GraphQL's first half: `socialBegin` and the provider; (code, state, binding).
async fn graphql_code(social: &Social, gql: &Gql) -> (String, String, String) {
    let redirect = social.spa_redirect();
    let begun = gql
        .anonymous(
            "mutation($r: String!) { socialBegin(provider: \"example\", redirectUri: $r) \
             { authorizationUrl state binding } }",
            json!({"r": redirect}),
        )
        .await;
    let begun = &begun["data"]["socialBegin"];
    let url = social::authorize(begun["authorizationUrl"].as_str().unwrap(), &redirect).await;
    let field = |name: &str| begun[name].as_str().unwrap().to_owned();
    (query_param(&url, "code"), field("state"), field("binding"))
}

const SOCIAL_AUTH: &str = "mutation($c: String!, $s: String!, $b: String!) \
    { socialAuth(provider: \"example\", code: $c, state: $s, binding: $b) { token refreshToken payload user { username } } }";

/// Sends every request of `requests` (method, path, JSON body) at once with the browser's
/// cookies and CSRF token; their (status, body), in order.
async fn burst(browser: &Browser, requests: Vec<(reqwest::Method, String, Option<Value>)>) -> Vec<(u16, Value)> {
    let (cookie, csrf) = (browser.cookie_header(), browser.csrf());
    join_all(requests.into_iter().map(|(method, path, body)| {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", browser.base))
            .header("cookie", cookie.clone())
            .header("x-csrftoken", csrf.clone());
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or_default())
        }
    }))
    .await
}

/// A refused sign-in's page names its reason.
fn assert_refused_page(status: u16, page: &str, expected_status: u16, reason: &str) {
    assert_eq!(status, expected_status, "{page}");
    assert!(page.contains(&format!("<code id=\"reason\">{reason}</code>")), "{reason} not in {page}");
}

// === The flows ===

#[tokio::test]
async fn the_browser_flow_creates_the_user_logs_in_and_returns_to_next() {
    let social = social_stack(|_| {}).await;
    social.providers.oidc_account(account("alice-sub", "alice@example.com", true, "alice")).await;
    let mut browser = social.browser();
    let (status, location) = browser_sign_in(&social, &mut browser, "example", "/account?tab=1").await;
    assert_eq!((status, location.as_str()), (302, "/account?tab=1"));
    assert!(browser.set_cookie("sessionid").is_some_and(|c| c.contains("HttpOnly")), "{:?}", browser.set_cookies);
    assert!(browser.set_cookie("social_binding").is_some_and(|c| c.contains("Max-Age=0")), "the binding is spent");
    let (status, user) = me(&mut browser).await;
    assert_eq!(status, 200, "{user}");
    assert_eq!((user["username"].as_str(), user["email"].as_str()), (Some("alice"), Some("alice@example.com")));
    assert_eq!(user["emailVerified"], true, "the provider verified the address");

    // Again, from another browser: the same user, no new one.
    let users = social.users().await;
    let mut again = social.browser();
    let (status, _) = browser_sign_in(&social, &mut again, "example", "/").await;
    assert_eq!(status, 302);
    assert_eq!(me(&mut again).await.1["id"], user["id"]);
    assert_eq!(social.users().await, users);

    // A name taken locally: the next user gets another one.
    social.providers.oidc_account(account("other-sub", "other@example.com", true, "alice")).await;
    let mut third = social.browser();
    browser_sign_in(&social, &mut third, "example", "/").await;
    assert_eq!(me(&mut third).await.1["username"], "alice2");

    // The identity is listed, over gRPC and REST.
    let (_, _, listed) = browser.get("/api/identities/").await;
    assert_eq!(listed[0]["provider"], "example", "{listed}");
    assert_eq!(listed[0]["subject"], "alice-sub", "{listed}");
}

#[tokio::test]
async fn the_single_page_app_flow_answers_like_api_login_and_graphql_like_token_auth() {
    let social = social_stack(|_| {}).await;
    social.providers.oidc_account(account("spa-sub", "spa@example.com", true, "spa")).await;
    let mut browser = social.browser();
    browser.get("/api/csrf").await;
    let (code, state) = spa_code(&social, &mut browser, "example").await;
    let (status, body) = spa_complete(&mut browser, "example", &code, &state).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["detail"], "success");
    assert_eq!(body["user"]["username"], "spa");
    assert!(browser.set_cookie("sessionid").is_some(), "the session is in the cookie");
    assert_eq!(me(&mut browser).await.1["username"], "spa");

    // Without X-CSRFToken: 403, nothing done.
    let (code, state) = spa_code(&social, &mut browser, "example").await;
    let (status, _, _) = browser.post("/api/social/example/", json!({"code": code, "state": state}), false).await;
    assert_eq!(status, 403);

    // GraphQL: socialBegin, the provider, socialAuth (tokenAuth's shape), whoami with the token.
    let gql = social.stack.client();
    let (code, state, binding) = graphql_code(&social, &gql).await;
    // The state and code alone (leaked from the redirect's URL, say) complete nothing.
    let body = gql.anonymous(SOCIAL_AUTH, json!({"c": code, "s": state, "b": "not-the-binding"})).await;
    assert_eq!(body["errors"][0]["extensions"]["reason"], "SOCIAL_STATE_INVALID", "{body}");
    let body = gql.anonymous(SOCIAL_AUTH, json!({"c": code, "s": state, "b": binding})).await;
    let auth = &body["data"]["socialAuth"];
    assert_eq!(auth["user"]["username"], "spa", "{body}");
    assert_eq!(auth["payload"]["username"], "spa", "{body}");
    let whoami = gql.as_user(auth["token"].as_str().unwrap(), "{ whoami { username } }", json!({})).await;
    assert_eq!(whoami["data"]["whoami"]["username"], "spa", "{whoami}");

    // A redirect URI nobody configured is refused before anything is stored.
    let (status, _, body) = browser.get("/api/social/example/?redirect_uri=https://evil.example/cb").await;
    assert_eq!(status, 400, "{body}");
    // An unknown provider: 404.
    let (status, _, _) = browser.get("/api/social/nobody/").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_single_page_app_sign_in_without_a_redirect_uri_completes_at_the_facades_callback() {
    let social = social_stack(|_| {}).await;
    social.providers.oidc_account(account("ivy-sub", "ivy@example.com", true, "ivy")).await;
    let mut browser = social.browser();
    let (status, _, begun) = browser.get("/api/social/example/?next=/welcome").await;
    assert_eq!(status, 200, "{begun}");
    assert_eq!(begun["redirect_uri"], social.callback("example").as_str());
    let cookie = browser.set_cookie("social_binding").expect("the sign-in is bound to the browser").to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("Path=/auth/example/callback"), "{cookie}");
    let url = social::authorize(begun["authorization_url"].as_str().unwrap(), &social.callback("example")).await;
    let (status, location) = callback(&mut browser, &url).await;
    assert_eq!((status, location.as_str()), (302, "/welcome"));
    assert_eq!(me(&mut browser).await.1["username"], "ivy");
}

#[tokio::test]
async fn github_signs_in_with_its_verified_address_only() {
    let social = social_stack(|_| {}).await;
    social
        .providers
        .github_account(json!({"id": 4242, "login": "octocat", "name": "The Octocat", "emails": [
            {"email": "octo-unverified@example.com", "primary": true, "verified": false, "visibility": "public"},
            {"email": "octo@example.com", "primary": false, "verified": true, "visibility": "private"},
        ]}))
        .await;
    let mut browser = social.browser();
    let (status, location) = browser_sign_in(&social, &mut browser, "github", "/").await;
    assert_eq!((status, location.as_str()), (302, "/"));
    let (_, user) = me(&mut browser).await;
    assert_eq!(user["username"], "octocat");
    assert_eq!(user["email"], "octo@example.com", "GitHub's verified address, not its unverified primary");
    assert_eq!(user["emailVerified"], true);

    // Providers are listed for the buttons, over REST and gRPC.
    let (_, _, listed) = browser.get("/api/social/").await;
    assert_eq!(listed[0]["name"], "example");
    assert_eq!(listed[0]["displayName"], "Example ID");
    assert_eq!(listed[1]["kind"], "github");
    assert_eq!(listed[1]["loginUrl"], "/auth/github/login");
    let grpc = social.social().list_providers(pb::ListProvidersRequest {}).await.unwrap().into_inner();
    assert_eq!(grpc.providers.len(), 2);
}

#[tokio::test]
async fn a_verified_address_links_to_a_verified_local_account_but_never_to_a_managers() {
    let social = social_stack(|_| {}).await;
    let hal = social.verified_user("hal").await;
    social.providers.oidc_account(account("hal-sub", "hal@example.com", true, "someone")).await;
    let mut browser = social.browser();
    let (status, _) = browser_sign_in(&social, &mut browser, "example", "/").await;
    assert_eq!(status, 302);
    let (_, user) = me(&mut browser).await;
    assert_eq!(user["id"], hal.id.as_str(), "linked to the local account: {user}");
    assert_eq!(social.identities().await, 1);

    // The manager's address, verified on both sides: a privileged account is linked by its
    // holder, logged in, never automatically.
    social.providers.oidc_account(account("boss-sub", "boss@example.com", true, "someone")).await;
    let mut other = social.browser();
    let (status, page) = browser_sign_in(&social, &mut other, "example", "/").await;
    assert_refused_page(status, &page, 400, "SOCIAL_EMAIL_IN_USE");
    assert_eq!(me(&mut other).await.0, 401, "not logged in as the manager");
    assert_eq!(social.identities().await, 1);
}

// === Refusals, each its own test ===

#[tokio::test]
async fn a_wrong_or_missing_state_is_refused() {
    let social = social_stack(|_| {}).await;
    let mut browser = social.browser();
    let url = to_callback(&social, &mut browser, "example", "/").await;
    let code = query_param(&url, "code");
    let base = social.callback("example");
    // Another state than the browser's cookie (say, an attacker's sign-in): refused.
    let (status, page) = callback(&mut browser, &format!("{base}?code={code}&state=someone-elses")).await;
    assert_refused_page(status, &page, 401, "SOCIAL_STATE_INVALID");
    // No state at all: refused.
    let url = to_callback(&social, &mut browser, "example", "/").await;
    let code = query_param(&url, "code");
    let (status, page) = callback(&mut browser, &format!("{base}?code={code}")).await;
    assert_refused_page(status, &page, 401, "SOCIAL_STATE_INVALID");
    // The right state without the browser's cookie (another browser): refused.
    let url = to_callback(&social, &mut browser, "example", "/").await;
    let mut elsewhere = social.browser();
    let (status, page) = callback(&mut elsewhere, &url).await;
    assert_refused_page(status, &page, 401, "SOCIAL_STATE_INVALID");
    // Over REST, the right code and state posted by another browser (they leaked from the
    // redirect's URL): refused, and the sign-in is still there for the browser that began it.
    browser.get("/api/csrf").await;
    let (code, state) = spa_code(&social, &mut browser, "example").await;
    let mut thief = social.browser();
    thief.get("/api/csrf").await;
    let (status, body) = spa_complete(&mut thief, "example", &code, &state).await;
    assert_eq!((status, body["detail"].as_str()), (401, Some(STATE_INVALID)), "{body}");
    let (status, body) = spa_complete(&mut browser, "example", &code, &state).await;
    assert_eq!(status, 200, "{body}");
    browser.post("/api/logout", json!({}), true).await;
    // Over REST and gRPC, a state that was never issued: refused.
    let (status, body) = spa_complete(&mut browser, "example", "a-code", "never-issued").await;
    assert_eq!(status, 401, "{body}");
    let refused = social
        .social()
        .complete_social_login(pb::CompleteSocialLoginRequest {
            provider: "example".into(),
            code: "a-code".into(),
            state: String::new(),
            binding: String::new(),
            redirect_uri: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(refused.get_details_error_info().unwrap().reason, "SOCIAL_STATE_INVALID");
    assert_eq!(me(&mut browser).await.0, 401, "nobody is logged in");
    assert_eq!(social.users().await, 2, "the manager and the one who signed in");
}

const STATE_INVALID: &str = "the sign-in was not started here or has expired; start it again";

#[tokio::test]
async fn a_replayed_code_logs_in_once_even_in_a_burst() {
    let social = social_stack(|config| config.login_max_failures = 100).await;
    let mut browser = social.browser();
    let url = to_callback(&social, &mut browser, "example", "/").await;
    let cookies = browser.cookie_header();
    let first = callback(&mut browser, &url).await;
    assert_eq!(first.0, 302, "{first:?}");
    // The same callback again, from a browser without the state cookie: refused by the facade.
    let (status, page) = callback(&mut social.browser(), &url).await;
    assert_refused_page(status, &page, 401, "SOCIAL_STATE_INVALID");
    // With the state cookie put back: the identity service has spent the state.
    let replay = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let response = replay.get(&url).header("cookie", &cookies).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let page = response.text().await.unwrap();
    assert_refused_page(401, &page, 401, "SOCIAL_STATE_INVALID");

    // One sign-in's state with eight codes the provider issued for it (its URL followed eight
    // times), completed at once: exactly one session; the state, not the provider, decides.
    let mut browser = social.browser();
    browser.get("/api/csrf").await;
    let redirect = social.spa_redirect();
    let (_, _, begun) = browser.get(&format!("/api/social/example/?redirect_uri={redirect}")).await;
    let authorization_url = begun["authorization_url"].as_str().unwrap().to_owned();
    let state = begun["state"].as_str().unwrap().to_owned();
    let mut codes = Vec::new();
    for _ in 0..8 {
        codes.push(query_param(&social::authorize(&authorization_url, &redirect).await, "code"));
    }
    let requests = codes
        .iter()
        .map(|code| {
            (reqwest::Method::POST, "/api/social/example/".to_owned(), Some(json!({"code": code, "state": state})))
        })
        .collect();
    let answers: Vec<u16> = burst(&browser, requests).await.into_iter().map(|(status, _)| status).collect();
    assert_eq!(answers.iter().filter(|&&status| status == 200).count(), 1, "{answers:?}");
    assert!(answers.iter().all(|&status| status == 200 || status == 401), "{answers:?}");
    assert_eq!(count(&social.stack.db.connect().await, "SELECT COUNT(*) FROM sessions").await, 2, "two sign-ins");
}

/// The provider spoils its next ID token by `mode`: the sign-in is refused with
/// SOCIAL_TOKEN_INVALID, nobody is logged in and no user is made.
async fn refused_id_token(mode: &str) {
    let social = social_stack(|_| {}).await;
    let mut browser = social.browser();
    let url = to_callback(&social, &mut browser, "example", "/").await;
    social.providers.tamper(mode).await;
    let (status, page) = callback(&mut browser, &url).await;
    assert_refused_page(status, &page, 401, "SOCIAL_TOKEN_INVALID");
    assert!(browser.set_cookie("sessionid").is_none(), "{mode}: no session");
    assert_eq!(social.users().await, 1, "{mode}: no user made");
    assert_eq!(social.identities().await, 0);
    // The provider behaves again: the same browser signs in.
    let (status, _) = browser_sign_in(&social, &mut browser, "example", "/").await;
    assert_eq!(status, 302, "{mode}: a good sign-in after");
}

#[tokio::test]
async fn an_address_the_id_token_leaves_out_is_read_at_userinfo_for_the_same_subject_only() {
    let social = social_stack(|_| {}).await;
    social.providers.oidc_account(account("uri-sub", "uri@example.com", true, "uri")).await;
    // The ID token carries no address: the UserInfo endpoint's, for the same subject, counts.
    let mut browser = social.browser();
    let url = to_callback(&social, &mut browser, "example", "/").await;
    social.providers.tamper("no-email").await;
    let (status, location) = callback(&mut browser, &url).await;
    assert_eq!((status, location.as_str()), (302, "/"), "{location}");
    let (_, user) = me(&mut browser).await;
    assert_eq!((user["username"].as_str(), user["email"].as_str()), (Some("uri"), Some("uri@example.com")), "{user}");
    assert_eq!(user["emailVerified"], true, "{user}");

    // A UserInfo answer about somebody else is refused, and makes nobody.
    social.providers.oidc_account(account("ula-sub", "ula@example.com", true, "ula")).await;
    let users = social.users().await;
    let mut browser = social.browser();
    let url = to_callback(&social, &mut browser, "example", "/").await;
    social.providers.tamper("no-email-foreign-userinfo").await;
    let (status, page) = callback(&mut browser, &url).await;
    assert_refused_page(status, &page, 401, "SOCIAL_TOKEN_INVALID");
    assert_eq!(social.users().await, users);
}

#[tokio::test]
async fn an_id_token_with_a_wrong_nonce_is_refused() {
    refused_id_token("nonce").await;
}

#[tokio::test]
async fn an_id_token_for_another_audience_is_refused() {
    refused_id_token("audience").await;
}

#[tokio::test]
async fn an_id_token_from_another_issuer_is_refused() {
    refused_id_token("issuer").await;
}

#[tokio::test]
async fn an_unsigned_id_token_alg_none_is_refused() {
    refused_id_token("none").await;
}

#[tokio::test]
async fn an_expired_id_token_is_refused() {
    refused_id_token("expired").await;
}

#[tokio::test]
async fn an_id_token_with_a_bad_signature_is_refused() {
    refused_id_token("signature").await;
}

#[tokio::test]
async fn an_unverified_provider_address_never_reaches_a_local_account() {
    let social = social_stack(|_| {}).await;
    // A local account with the address, itself verified (the bootstrap manager's).
    social.providers.oidc_account(account("attacker-sub", "boss@example.com", false, "boss")).await;
    let mut browser = social.browser();
    let (status, page) = browser_sign_in(&social, &mut browser, "example", "/").await;
    assert_refused_page(status, &page, 400, "SOCIAL_EMAIL_REQUIRED");
    assert_eq!(me(&mut browser).await.0, 401, "not logged in as the manager");
    assert_eq!(social.identities().await, 0, "nothing linked");
    // The same answer as for an address nobody has here: it tells nothing about accounts.
    social.providers.oidc_account(account("attacker-sub", "nobody-here@example.com", false, "x")).await;
    let (status, nobodys) = browser_sign_in(&social, &mut browser, "example", "/").await;
    assert_eq!((status, nobodys), (400, page));

    // A verified provider address, but the local account never verified it: no link either.
    let mut users = social.stack.identity.users();
    sign_up(&mut users, "carol").await;
    social.providers.oidc_account(account("carol-sub", "carol@example.com", true, "carol")).await;
    let (status, page) = browser_sign_in(&social, &mut browser, "example", "/").await;
    assert_refused_page(status, &page, 400, "SOCIAL_EMAIL_IN_USE");
    assert_eq!(social.identities().await, 0);

    // Over GraphQL the reason travels in the extensions.
    let gql = social.stack.client();
    social.providers.oidc_account(account("attacker-sub", "boss@example.com", false, "boss")).await;
    let (code, state, binding) = graphql_code(&social, &gql).await;
    let body = gql.anonymous(SOCIAL_AUTH, json!({"c": code, "s": state, "b": binding})).await;
    assert_eq!(body["errors"][0]["extensions"]["reason"], "SOCIAL_EMAIL_REQUIRED", "{body}");
}

#[tokio::test]
async fn an_unverified_address_nobody_has_makes_no_account() {
    // Anyone may claim an address at a careless provider: an account made with it would go to
    // whoever owns the address (a password reset) with the claimant's provider still linked.
    let social = social_stack(|_| {}).await;
    social.providers.oidc_account(account("claimant-sub", "victim@example.com", false, "victim")).await;
    let mut browser = social.browser();
    let (status, page) = browser_sign_in(&social, &mut browser, "example", "/").await;
    assert_refused_page(status, &page, 400, "SOCIAL_EMAIL_REQUIRED");
    assert_eq!(social.users().await, 1, "only the manager");
    assert_eq!(social.identities().await, 0);
    // GitHub with no verified address at all: the same.
    social
        .providers
        .github_account(json!({"id": 9, "login": "nobody", "name": "No Body", "emails": [
            {"email": "nobody@example.com", "primary": true, "verified": false, "visibility": "public"}]}))
        .await;
    let (status, page) = browser_sign_in(&social, &mut browser, "github", "/").await;
    assert_refused_page(status, &page, 400, "SOCIAL_EMAIL_REQUIRED");
    assert_eq!(social.users().await, 1);
}

#[tokio::test]
async fn next_off_site_is_ignored() {
    let social = social_stack(|_| {}).await;
    for next in ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"] {
        let mut browser = social.browser();
        let encoded: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
        let (status, location) = browser_sign_in(&social, &mut browser, "example", &encoded).await;
        assert_eq!((status, location.as_str()), (302, "/"), "{next}");
    }
}

#[tokio::test]
async fn a_code_the_provider_never_issued_is_refused_as_rejected_and_a_new_sign_in_works() {
    let social = social_stack(|_| {}).await;
    social
        .providers
        .github_account(json!({"id": 77, "login": "rejected", "name": "R", "emails": [
            {"email": "rejected@example.com", "primary": true, "verified": true, "visibility": "public"},
        ]}))
        .await;
    for provider in ["example", "github"] {
        let mut browser = social.browser();
        let url = to_callback(&social, &mut browser, provider, "/").await;
        // The provider's own redirect back, with its code swapped for one it never issued: the
        // state is ours and valid, so it is the provider's token endpoint that refuses (GitHub
        // says so in a 200 answer, an OpenID provider with invalid_grant).
        let mut forged = url::Url::parse(&url).unwrap();
        let pairs: Vec<(String, String)> = forged
            .query_pairs()
            .map(|(name, value)| {
                let value = if name == "code" { "a-code-nobody-issued".to_owned() } else { value.into_owned() };
                (name.into_owned(), value)
            })
            .collect();
        forged.query_pairs_mut().clear().extend_pairs(pairs);
        let users = social.users().await;
        let (status, page) = callback(&mut browser, forged.as_str()).await;
        assert_refused_page(status, &page, 401, "SOCIAL_CODE_REJECTED");
        assert_eq!(me(&mut browser).await.0, 401, "{provider}: nobody is logged in");
        assert_eq!(social.users().await, users, "{provider}: no user made");
        // A sign-in started again goes through.
        let (status, location) = browser_sign_in(&social, &mut browser, provider, "/").await;
        assert_eq!((status, location.as_str()), (302, "/"), "{provider}");
        assert_eq!(me(&mut browser).await.0, 200, "{provider}");
        assert_eq!(social.users().await, users + 1, "{provider}");
    }
}

#[tokio::test]
async fn a_sign_in_the_user_declines_at_the_provider_is_social_denied_and_ends_there() {
    let social = social_stack(|_| {}).await;
    let mut browser = social.browser();
    let url = to_callback(&social, &mut browser, "example", "/").await;
    let state = query_param(&url, "state");
    // The provider sends the browser back with an error instead of a code (RFC 6749 §4.1.2.1),
    // here one that tries to write markup into our page.
    let error: String = url::form_urlencoded::byte_serialize(b"access_denied<script>alert(1)</script>").collect();
    let declined = format!("{}?error={error}&state={state}", social.callback("example"));
    let users = social.users().await;
    let (status, page) = callback(&mut browser, &declined).await;
    assert_refused_page(status, &page, 401, "SOCIAL_DENIED");
    assert!(page.contains("access_denied"), "{page}");
    assert!(!page.contains("<script>alert"), "the provider's words are escaped: {page}");
    let cleared = browser.set_cookie("social_binding").expect("the binding cookie is cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(me(&mut browser).await.0, 401);
    assert_eq!(social.users().await, users);
    // The code the provider would have sent cannot finish this sign-in afterwards: the browser
    // no longer holds its binding.
    let (status, page) = callback(&mut browser, &url).await;
    assert_refused_page(status, &page, 401, "SOCIAL_STATE_INVALID");
}

#[tokio::test]
async fn an_unreachable_provider_is_a_503_naming_it() {
    let dead = free_address();
    let social = social_stack(|_| {}).await;
    // A second stack whose OpenID provider is nowhere.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("providers.toml");
    std::fs::write(
        &file,
        format!(
            "[[provider]]\nname = \"gone\"\nkind = \"oidc\"\nissuer = \"http://{dead}\"\nclient_id = \"x\"\n\
             client_secret = \"y\"\n"
        ),
    )
    .unwrap();
    let db = TestDb::new().await;
    let mut config = config(&db);
    config.providers_file = Some(file);
    let stack = Stack::start_with(db, config, |_| {}).await;
    let mut browser = Browser::new(&stack.facade);
    browser.http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let (status, headers, page) =
        browser.send_text(browser.http.get(format!("{}/auth/gone/login", browser.base))).await;
    assert_refused_page(status, &page, 503, "PROVIDER_UNAVAILABLE");
    assert!(headers.contains_key("retry-after"));
    assert!(page.contains("the provider cannot be reached"), "{page}");
    drop(social);
}

#[tokio::test]
async fn sign_ins_that_queue_behind_a_failed_discovery_do_not_each_ask_the_provider_again() {
    // An OpenID provider that accepts connections and hangs up at once; it counts them.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(socket);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("providers.toml");
    let toml = format!(
        "[[provider]]\nname = \"flaky\"\nkind = \"oidc\"\nissuer = \"{issuer}\"\nclient_id = \"x\"\nclient_secret = \"y\"\n"
    );
    std::fs::write(&file, toml).unwrap();
    let db = TestDb::new().await;
    let mut config = config(&db);
    config.providers_file = Some(file);
    let stack = Stack::start_with(db, config, |_| {}).await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let begins = (0..8).map(|_| {
        let request = client.get(format!("{}/auth/flaky/login", stack.facade.base()));
        async move { request.send().await.unwrap().status().as_u16() }
    });
    let answers = join_all(begins).await;
    assert!(answers.iter().all(|&status| status == 503), "{answers:?}");
    let asked = connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(asked <= 2, "eight sign-ins at once asked the provider {asked} times");
}

#[tokio::test]
async fn a_provider_that_stops_answering_is_a_503_and_sign_ins_resume_when_it_is_back() {
    // A budget of one failure: the provider's outage is not the client's, and costs it nothing.
    let social = social_stack(|config| config.login_max_failures = 1).await;
    let mut browser = social.browser();
    social.github_link.cut();
    for _ in 0..2 {
        let (status, page) = browser_sign_in(&social, &mut browser, "github", "/").await;
        assert_refused_page(status, &page, 503, "PROVIDER_UNAVAILABLE");
    }
    assert_eq!(me(&mut browser).await.0, 401);
    social.github_link.restore();
    let (status, location) = browser_sign_in(&social, &mut browser, "github", "/").await;
    assert_eq!((status, location.as_str()), (302, "/"), "no restart needed");
    assert_eq!(me(&mut browser).await.1["username"], "octocat");
}

// === Linking and unlinking ===

#[tokio::test]
async fn an_identity_linked_to_someone_else_cannot_be_linked_again() {
    let social = social_stack(|_| {}).await;
    social.providers.oidc_account(account("alice-sub", "alice@example.com", true, "alice")).await;
    let mut alice = social.browser();
    browser_sign_in(&social, &mut alice, "example", "/").await;
    // Bob, logged in with a password, tries to link the same account at the provider.
    social.verified_user("bob").await;
    let mut bob = social.browser();
    bob.log_in("bob", PASSWORD).await;
    let request = bob.http.get(format!("{}/auth/example/link?next=/linked", bob.base));
    let (status, headers, _) = bob.send_text(request).await;
    assert_eq!(status, 302);
    let url = social::authorize(headers["location"].to_str().unwrap(), &social.callback("example")).await;
    let (status, page) = callback(&mut bob, &url).await;
    assert_refused_page(status, &page, 409, "IDENTITY_LINKED_ELSEWHERE");
    assert_eq!(me(&mut bob).await.1["username"], "bob", "bob is still bob");

    // Linking an account of his own works, and returns to `next`.
    social.providers.oidc_account(account("bob-sub", "bob-elsewhere@example.com", false, "bobby")).await;
    let request = bob.http.get(format!("{}/auth/example/link?next=/linked", bob.base));
    let (_, headers, _) = bob.send_text(request).await;
    let url = social::authorize(headers["location"].to_str().unwrap(), &social.callback("example")).await;
    let (status, location) = callback(&mut bob, &url).await;
    assert_eq!((status, location.as_str()), (302, "/linked"));
    let (_, _, listed) = bob.get("/api/identities/").await;
    assert_eq!(listed[0]["subject"], "bob-sub", "{listed}");

    // Linking needs a login.
    let mut anonymous = social.browser();
    let request = anonymous.http.get(format!("{}/auth/example/link", anonymous.base));
    let (status, _, page) = anonymous.send_text(request).await;
    assert_eq!(status, 401, "{page}");
}

#[tokio::test]
async fn the_last_way_to_log_in_cannot_be_unlinked_even_in_a_burst() {
    let social = social_stack(|_| {}).await;
    // A user made by the provider (no password), who then links GitHub too.
    social.providers.oidc_account(account("dana-sub", "dana@example.com", true, "dana")).await;
    let mut dana = social.browser();
    browser_sign_in(&social, &mut dana, "example", "/").await;
    social
        .providers
        .github_account(json!({"id": 77, "login": "dana-gh", "name": "Dana", "emails": [
            {"email": "dana@example.com", "primary": true, "verified": true, "visibility": "public"}]}))
        .await;
    let request = dana.http.get(format!("{}/auth/github/link", dana.base));
    let (_, headers, _) = dana.send_text(request).await;
    let url = social::authorize(headers["location"].to_str().unwrap(), &social.callback("github")).await;
    assert_eq!(callback(&mut dana, &url).await.0, 302);
    let (_, _, listed) = dana.get("/api/identities/").await;
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    // No password: the password login knows nothing of her.
    let gql = social.stack.client();
    let refused =
        gql.anonymous("mutation { tokenAuth(username: \"dana\", password: \"\") { token } }", json!({})).await;
    assert!(refused["errors"].is_array(), "{refused}");

    // Both identities unlinked at once, four times each: one goes, the other stays.
    let requests = (0..8)
        .map(|i| {
            let path = if i % 2 == 0 { "example/dana-sub" } else { "github/77" };
            (reqwest::Method::DELETE, format!("/api/identities/{path}/"), None)
        })
        .collect();
    let answers = burst(&dana, requests).await;
    let unlinked = answers.iter().filter(|(status, _)| *status == 200).count();
    assert_eq!(unlinked, 1, "{answers:?}");
    assert_eq!(social.identities().await, 1, "one way in is left");
    let refusal = answers.iter().find(|(status, _)| *status == 400).expect("a refusal");
    assert!(refusal.1["detail"].as_str().unwrap().contains("last way to log in"), "{refusal:?}");
    // The one left still logs her in.
    let (_, _, listed) = dana.get("/api/identities/").await;
    let left = listed[0]["provider"].as_str().unwrap().to_owned();
    let mut again = social.browser();
    let (status, _) = browser_sign_in(&social, &mut again, &left, "/").await;
    assert_eq!(status, 302);
    assert_eq!(me(&mut again).await.1["username"], "dana");

    // A user with a password may unlink their only identity.
    social.verified_user("erin").await;
    let mut erin = social.browser();
    erin.log_in("erin", PASSWORD).await;
    social.providers.oidc_account(account("erin-sub", "erin-x@example.com", false, "erin")).await;
    let request = erin.http.get(format!("{}/auth/example/link", erin.base));
    let (_, headers, _) = erin.send_text(request).await;
    let url = social::authorize(headers["location"].to_str().unwrap(), &social.callback("example")).await;
    assert_eq!(callback(&mut erin, &url).await.0, 302);
    let body = erin.graphql("mutation { unlinkIdentity(provider: \"example\", subject: \"erin-sub\") }", true).await.1;
    assert_eq!(body["data"]["unlinkIdentity"], true, "{body}");
}

#[tokio::test]
async fn failed_completions_are_throttled_per_client_in_a_burst() {
    let social = social_stack(|config| {
        config.login_max_failures = 3;
        config.login_lockout = secs(60);
    })
    .await;
    let mut browser = social.browser();
    browser.get("/api/csrf").await;
    let requests = (0..20)
        .map(|i| {
            let body = json!({"code": "guess", "state": format!("forged-{i}")});
            (reqwest::Method::POST, "/api/social/example/".to_owned(), Some(body))
        })
        .collect();
    let answers: Vec<u16> = burst(&browser, requests).await.into_iter().map(|(status, _)| status).collect();
    let evaluated = answers.iter().filter(|&&status| status == 401).count();
    let throttled = answers.iter().filter(|&&status| status == 429).count();
    assert!(evaluated <= 3, "at most the budget is evaluated: {answers:?}");
    assert_eq!(evaluated + throttled, 20, "{answers:?}");
    // The client stays throttled, even with a good code.
    let (code, state) = spa_code(&social, &mut browser, "example").await;
    let (status, _) = spa_complete(&mut browser, "example", &code, &state).await;
    assert_eq!(status, 429);
}

#[tokio::test]
async fn linking_needs_the_accounts_own_address_verified() {
    // A squatter signs up with someone else's address (nobody verified it) and tries to link a
    // provider account of theirs: the owner of the address would later claim the account with
    // the squatter's way in still attached.
    let social = social_stack(|_| {}).await;
    let mut users = social.stack.identity.users();
    let request = pb::CreateUserRequest {
        username: "squatter".into(),
        email: "victim@example.com".into(),
        password: PASSWORD.into(),
        role: String::new(),
    };
    users.create_user(request).await.unwrap();
    let mut squatter = social.browser();
    squatter.log_in("squatter", PASSWORD).await;
    social.providers.oidc_account(account("squatter-sub", "squatter@example.com", true, "sq")).await;
    let (status, page) = social.link(&mut squatter, "example").await;
    assert_refused_page(status, &page, 403, "EMAIL_NOT_VERIFIED");
    // GraphQL's socialBegin(link: true) alike.
    let body = squatter.graphql("mutation { socialBegin(provider: \"example\", link: true) { state } }", true).await.1;
    assert_eq!(body["errors"][0]["extensions"]["code"], "EMAIL_NOT_VERIFIED", "{body}");
    assert_eq!(social.identities().await, 0);

    // Once the holder proves the address, the same link works.
    social.verify("victim@example.com").await;
    let (status, location) = social.link(&mut squatter, "example").await;
    assert_eq!((status, location.as_str()), (302, "/"));
    assert_eq!(social.identities().await, 1);
}

/// An account holding the victim's address, unproven, with a provider account of the
/// squatter's linked: the squatter verified an address of theirs, linked the provider, and a
/// manager then set the account's address to the victim's (a typo, a support request).
async fn squatted(social: &Social) {
    let sq = social.verified_user("sq").await;
    let mut squatter = social.browser();
    squatter.log_in("sq", PASSWORD).await;
    social.providers.oidc_account(account("squatter-sub", "squatter@example.com", true, "sq")).await;
    assert_eq!(social.link(&mut squatter, "example").await.0, 302);
    assert_eq!(social.identities().await, 1);
    let boss = log_in(&mut social.stack.identity.auth(), "boss@example.com").await.access_token;
    let moved = pb::User { email: "victim@example.com".into(), ..Default::default() };
    let request = bearer(crate::email::update_request(&sq.id, moved, &["email"]), &boss);
    social.stack.identity.users().update_user(request).await.unwrap();
}

/// The squatter's provider account signs in again: it no longer reaches the account.
async fn assert_squatter_locked_out(social: &Social) {
    assert_eq!(social.identities().await, 0, "the squatter's provider account is no way in any more");
    let mut again = social.browser();
    let (status, _) = browser_sign_in(social, &mut again, "example", "/").await;
    assert_eq!(status, 302);
    assert_ne!(me(&mut again).await.1["username"], "sq", "a new account of the squatter's own, not the victim's");
}

#[tokio::test]
async fn verifying_the_address_drops_the_providers_linked_before() {
    let social = social_stack(|_| {}).await;
    squatted(&social).await;
    let request = pb::ResendVerificationRequest { email: "victim@example.com".into() };
    social.stack.identity.accounts().resend_verification(request).await.unwrap();
    social.verify("victim@example.com").await;
    assert_squatter_locked_out(&social).await;
}

/// POSTs a code and state to `/api/social/example/` with the browser's cookies and CSRF token,
/// as relayed by a proxy for `client`; the status.
async fn complete_as(browser: &Browser, client: &str, code: &str, state: &str) -> u16 {
    let request = reqwest::Client::new()
        .post(format!("{}/api/social/example/", browser.base))
        .header("cookie", browser.cookie_header())
        .header("x-csrftoken", browser.csrf())
        .header("x-forwarded-for", client)
        .json(&json!({"code": code, "state": state}));
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn other_clients_failures_never_lock_a_client_out() {
    // Behind a proxy the facade trusts (the test plays it): each client is its own address.
    let social = social_stack_with(
        |config| {
            config.login_max_failures = 3;
            config.login_account_max_failures = 4;
        },
        |facade| facade.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()],
    )
    .await;
    let mut user = social.browser();
    user.get("/api/csrf").await;
    // The user's own sign-in failed once (a tab left open too long).
    assert_eq!(complete_as(&user, "203.0.113.5", "stale", "stale").await, 401);
    // Twelve other clients fail three times each, all at once: each within its own budget.
    let failures = (0..36).map(|n| {
        let client = format!("198.51.100.{}", n / 3);
        let user = &user;
        async move { complete_as(user, &client, "guess", &format!("forged-{n}")).await }
    });
    let answers = join_all(failures).await;
    assert!(answers.iter().all(|&status| status == 401), "{answers:?}");
    assert_eq!(complete_as(&user, "198.51.100.0", "guess", "forged").await, 429, "a fourth: throttled");
    // The user signs in.
    let (code, state) = spa_code(&social, &mut user, "example").await;
    assert_eq!(complete_as(&user, "203.0.113.5", &code, &state).await, 200);
}

#[tokio::test]
async fn a_reset_proving_the_address_drops_the_providers_linked_before() {
    let social = social_stack(|_| {}).await;
    squatted(&social).await;
    let mut victim = social.browser();
    victim.get("/api/csrf").await;
    victim.post("/api/password/reset/", json!({"email": "victim@example.com"}), true).await;
    let mail = social.mail("victim@example.com", crate::email::RESET).await;
    let link = mail.link(&format!("{}/account/reset-password?uid=", social.stack.facade.base()));
    let new = "the victim's own passphrase";
    let body = json!({"uid": query_param(&link, "uid"), "token": query_param(&link, "token"),
        "new_password1": new, "new_password2": new});
    let (status, _, answer) = victim.post("/api/password/reset/confirm/", body, true).await;
    assert_eq!(status, 200, "{answer}");
    assert_squatter_locked_out(&social).await;
}

#[tokio::test]
async fn a_provider_user_sets_a_password_through_the_reset_flow() {
    let smtp = SmtpServer::start().await;
    let social = social_stack(|config| {
        config.smtp_url = Some(Secret::new(smtp.url()));
        config.mail_retry_max = millis(200);
    })
    .await;
    social.providers.oidc_account(account("fay-sub", "fay@example.com", true, "fay")).await;
    let mut browser = social.browser();
    browser_sign_in(&social, &mut browser, "example", "/").await;
    let (status, _, _) = browser.post("/api/password/reset/", json!({"email": "fay@example.com"}), true).await;
    assert_eq!(status, 200);
    let mail = smtp.wait_for_all("fay@example.com", Some("Reset your password"), 1, Duration::from_secs(30)).await;
    let link = mail[0].link(&format!("{}/account/reset-password?uid=", social.stack.facade.base()));
    let (uid, token) = (query_param(&link, "uid"), query_param(&link, "token"));
    let body = json!({"uid": uid, "token": token, "new_password1": "fay's new passphrase", "new_password2": "fay's new passphrase"});
    let (status, _, answer) = browser.post("/api/password/reset/confirm/", body, true).await;
    assert_eq!(status, 200, "{answer}");
    let gql = social.stack.client();
    let (token, _) = gql.token_auth("fay", "fay's new passphrase").await;
    assert!(!token.is_empty());
}

// === In a browser ===

#[tokio::test]
async fn chromium_signs_in_from_the_account_pages_button() {
    let social = social_stack(|_| {}).await;
    social.providers.oidc_account(account("gina-sub", "gina@example.com", true, "gina")).await;
    let node = std::env::var("E2E_NODE").unwrap_or_else(|_| "node".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/node/social.mjs");
    let shots = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/e2e-screenshots");
    std::fs::create_dir_all(shots).unwrap();
    let base = social.stack.facade.base();
    let output = tokio::process::Command::new(node)
        .args([script, base.as_str(), "example", "gina", shots])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "node failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["whoami"], "gina", "{report}");
}
