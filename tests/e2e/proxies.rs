//! Behind a reverse proxy: the facade believes `X-Forwarded-For` from `FACADE_TRUSTED_PROXIES`
//! only, taking the right-most address that is not a trusted proxy. An attacker guessing a
//! password through the proxy locks out only themself — not everyone behind the proxy — and
//! cannot slip out of their counter by prepending made-up addresses.

use e2e::*;
use futures::future::join_all;
use serde_json::json;

/// A `tokenAuth` through the facade as if relayed by a proxy for `forwarded_for`; the error
/// code, or "" when it logged in.
async fn token_auth_via_proxy(facade: &Facade, forwarded_for: &str, password: &str) -> String {
    let body = reqwest::Client::new()
        .post(facade.url())
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({
            "query": "mutation($p: String!) { tokenAuth(username: \"pia\", password: $p) { token } }",
            "variables": {"p": password},
        }))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    if body["data"]["tokenAuth"]["token"].is_string() { String::new() } else { error_code(&body).to_owned() }
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_a_trusted_proxy_each_client_has_its_own_login_budget() {
    let db = TestDb::new().await;
    let identity = config(&db);
    // The test plays the proxy, on loopback.
    let stack = Stack::start_with(db, identity, |facade| {
        facade.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    sign_up(&mut stack.identity.users(), "pia").await;

    // A burst of 30 guesses from one client, each with a different made-up address prepended:
    // all count against the client's own address, so most are refused unchecked.
    let guesses = (0..30).map(|n| {
        let chain = format!("10.9.{n}.1, 198.51.100.7");
        let facade = &stack.facade;
        async move { token_auth_via_proxy(facade, &chain, "not the password").await }
    });
    let codes = join_all(guesses).await;
    let throttled = codes.iter().filter(|code| *code == "TOO_MANY_REQUESTS").count();
    assert!(throttled >= 25, "only {throttled} of 30 guesses from one client were throttled: {codes:?}");

    // Meanwhile the real user, another client behind the same proxy, logs in at once.
    assert_eq!(token_auth_via_proxy(&stack.facade, "203.0.113.20", PASSWORD).await, "");
    // And the guessing client is still locked out, whatever it prepends.
    assert_eq!(token_auth_via_proxy(&stack.facade, "203.0.113.20, 198.51.100.7", PASSWORD).await, "TOO_MANY_REQUESTS");
}
