//! The plain-HTTP routes: JWKS and OIDC discovery, the Hasura webhook, probes, metrics, and
//! the OpenAPI document (validated, then fuzzed with schemathesis).

use std::time::Duration;

use e2e::*;
use identity_core::JwtAlg;
use serde_json::json;

async fn get(url: String) -> (u16, reqwest::header::HeaderMap, String) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

#[tokio::test]
async fn a_token_verifies_from_the_served_jwk_set_alone() {
    let db = TestDb::new().await;
    let mut identity = config(&db);
    identity.jwt_alg = JwtAlg::Rs256;
    let stack = Stack::start_with(db, identity, |_| {}).await;
    sign_up(&mut stack.identity.users(), "ann").await;
    let (token, _) = stack.client().token_auth("ann", PASSWORD).await;
    let base = format!("http://{}", stack.facade.addr);

    let (status, headers, jwks) = get(format!("{base}/.well-known/jwks.json")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["cache-control"], "public, max-age=300");
    let set: serde_json::Value = serde_json::from_str(&jwks).unwrap();
    for key in set["keys"].as_array().unwrap() {
        assert_eq!((key["use"].as_str(), key["kty"].as_str()), (Some("sig"), Some("RSA")), "{key}");
        assert!(key["kid"].is_string() && key["alg"] == "RS256", "{key}");
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(key.get(private).is_none(), "private member {private} served: {key}");
        }
    }

    let (status, headers, discovery) = get(format!("{base}/.well-known/openid-configuration")).await;
    assert_eq!(status, 200);
    assert!(headers["cache-control"].to_str().unwrap().contains("max-age"));
    let discovery: serde_json::Value = serde_json::from_str(&discovery).unwrap();
    assert_eq!(discovery["issuer"], "http://127.0.0.1:8080");
    assert_eq!(discovery["jwks_uri"], "http://127.0.0.1:8080/.well-known/jwks.json");
    assert_eq!(discovery["id_token_signing_alg_values_supported"], json!(["RS256"]));

    // PyJWT, given nothing but the served set and the discovered issuer.
    let claims = python_verify(&jwks, &token, discovery["issuer"].as_str().unwrap());
    assert_eq!(claims["username"], "ann");
}

#[tokio::test]
async fn the_hasura_webhook_answers_in_get_and_post_modes() {
    let stack = Stack::start().await;
    let user = sign_up(&mut stack.identity.users(), "bea").await;
    let (token, _) = stack.client().token_auth("bea", PASSWORD).await;
    let mut browser = Browser::new(&stack.facade);
    browser.log_in("bea", PASSWORD).await;
    let url = format!("http://{}/hasura/webhook", stack.facade.addr);
    let http = reqwest::Client::new();
    let expect_user = |body: &serde_json::Value| {
        assert_eq!(body["X-Hasura-User-Id"], user.id.as_str(), "{body}");
        assert_eq!(body["X-Hasura-Role"], "user", "{body}");
    };
    let max_age = |headers: &reqwest::header::HeaderMap| -> u64 {
        let value = headers["cache-control"].to_str().unwrap();
        value.strip_prefix("max-age=").unwrap().parse().unwrap()
    };

    // GET mode: the client's headers arrive as the webhook request's own.
    let response = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let age = max_age(response.headers());
    assert!(age <= 5, "no longer than FACADE_HASURA_CACHE_MAX_AGE: {age}");
    expect_user(&response.json().await.unwrap());
    let response = http.get(&url).header("cookie", browser.cookie_header()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    expect_user(&response.json().await.unwrap());

    // POST mode: {headers, request}.
    let request = json!({"query": "{ x }", "variables": {}, "operationName": null});
    for headers in [json!({"Authorization": format!("Bearer {token}")}), json!({"Cookie": browser.cookie_header()})] {
        let response = http.post(&url).json(&json!({"headers": headers, "request": request})).send().await.unwrap();
        assert_eq!(response.status(), 200, "{headers}");
        expect_user(&response.json().await.unwrap());
    }

    // No credential, a forged one, a bad body.
    let response = http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let response = http.get(&url).bearer_auth("forged").send().await.unwrap();
    assert_eq!(response.status(), 401);
    let response = http.post(&url).json(&json!({"headers": {}})).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let response = http.post(&url).body("not json").send().await.unwrap();
    assert_eq!(response.status(), 400);

    // A revoked session is refused at once.
    let body = stack.client().as_user(&token, "mutation { logout { success } }", json!({})).await;
    assert_eq!(body["data"]["logout"]["success"], true);
    let response = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn the_hasura_webhook_cache_never_outlives_the_access_token() {
    let db = TestDb::new().await;
    let mut identity = config(&db);
    identity.access_ttl = secs(3);
    let stack = Stack::start_with(db, identity, |facade| {
        facade.hasura_cache_max_age = secs(600);
        facade.hasura_anonymous_role = Some("anonymous".into());
    })
    .await;
    sign_up(&mut stack.identity.users(), "cy").await;
    let (token, _) = stack.client().token_auth("cy", PASSWORD).await;
    let url = format!("http://{}/hasura/webhook", stack.facade.addr);
    let response = reqwest::Client::new().get(&url).bearer_auth(&token).send().await.unwrap();
    let cache = response.headers()["cache-control"].to_str().unwrap().to_owned();
    let age: u64 = cache.strip_prefix("max-age=").unwrap().parse().unwrap();
    assert!(age <= 3, "{cache}");

    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["X-Hasura-Role"], "anonymous");
    assert!(body.get("X-Hasura-User-Id").is_none());
}

#[tokio::test]
async fn readiness_follows_the_identity_service_and_liveness_does_not() {
    let stack = Stack::start().await;
    let base = format!("http://{}", stack.facade.addr);
    assert_eq!(get(format!("{base}/healthz")).await.0, 200);
    assert_eq!(get(format!("{base}/readyz")).await.0, 200);
    let Stack { facade, identity, db } = stack;
    let addr = identity.addr;
    identity.stop().await.unwrap();
    let (status, headers, body) = get(format!("{base}/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert!(headers.contains_key("retry-after"));
    assert!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["detail"].is_string());
    assert_eq!(get(format!("{base}/healthz")).await.0, 200);

    let _identity = Service::start_at(config(&db), addr).await;
    eventually(Duration::from_secs(10), || async { (get(format!("{base}/readyz")).await.0 == 200).then_some(()) })
        .await;
    drop(facade);
}

#[tokio::test]
async fn metrics_count_requests_operations_authentications_and_logins() {
    let stack = Stack::start().await;
    sign_up(&mut stack.identity.users(), "dee").await;
    let client = stack.client();
    let (token, _) = client.token_auth("dee", PASSWORD).await;
    client.as_user(&token, "{ whoami { id } }", json!({})).await;
    client.anonymous("mutation { tokenAuth(username: \"dee\", password: \"no\") { token } }", json!({})).await;
    client.anonymous("{ nosuchfield }", json!({})).await;
    let (status, headers, text) = get(format!("http://{}/metrics", stack.facade.addr)).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    for (name, value) in [
        ("facade_logins_total{result=\"succeeded\"}", 1.0),
        ("facade_logins_total{result=\"failed\"}", 1.0),
        ("facade_graphql_operations_total{operation=\"whoami\",outcome=\"ok\"}", 1.0),
        ("facade_graphql_operations_total{operation=\"tokenAuth\",outcome=\"UNAUTHENTICATED\"}", 1.0),
        ("facade_graphql_operations_total{operation=\"(not run)\",outcome=\"BAD_USER_INPUT\"}", 1.0),
        ("facade_http_requests_total{route=\"/graphql\",method=\"POST\",status=\"200\"}", 4.0),
    ] {
        assert_eq!(sample(&text, name), Some(value), "{name} in\n{text}");
    }
    assert!(text.contains("# TYPE facade_http_request_duration_seconds histogram"), "{text}");
    // Authentications are timed per identity-service replica.
    let upstream = format!(
        "facade_identity_authenticate_duration_seconds_count{{result=\"ok\",upstream=\"http://{}\"}}",
        stack.identity.addr
    );
    assert_eq!(sample(&text, &upstream), Some(1.0), "{upstream} in\n{text}");
    // Client-chosen paths do not make new series.
    get(format!("http://{}/no/such/path/{}", stack.facade.addr, uuid::Uuid::new_v4())).await;
    let (_, _, text) = get(format!("http://{}/metrics", stack.facade.addr)).await;
    assert!(text.contains("route=\"other\",method=\"GET\",status=\"404\""), "{text}");
    assert!(!text.contains("/no/such/path"));
}

#[tokio::test]
async fn the_demo_page_is_served_with_a_strict_content_security_policy() {
    let stack = Stack::start().await;
    let (status, headers, body) = get(format!("http://{}/", stack.facade.addr)).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("frame-ancestors 'none'") && !policy.contains("unsafe-inline"), "{policy}");
    assert!(body.contains("id=\"login-form\""));
    assert_eq!(headers["x-content-type-options"], "nosniff");
}

/// The OpenAPI document is valid OpenAPI 3, and schemathesis (property-based, from the
/// document alone) finds no 5xx and no response that breaks the documented schema, status
/// codes, content types or headers.
#[tokio::test]
async fn the_openapi_document_is_valid_and_holds_under_fuzzing() {
    let stack = Stack::start().await;
    sign_up(&mut stack.identity.users(), "eli").await;
    let base = format!("http://{}", stack.facade.addr);
    let (status, _, text) = get(format!("{base}/api/openapi.json")).await;
    assert_eq!(status, 200);
    let document: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    // dj-rest-auth's routes end in a slash; the document names them without (both are served).
    let documented = [
        "/csrf",
        "/login",
        "/logout",
        "/me",
        "/registration",
        "/registration/verify-email",
        "/registration/resend-email",
        "/password/reset",
        "/password/reset/confirm",
        "/password/change",
        "/email/change",
        "/email/change/confirm",
    ];
    for path in documented {
        assert!(document["paths"].get(path).is_some(), "{path} undocumented");
    }
    // Every write declares the X-CSRFToken header it needs, so that Swagger UI sends it.
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            if method == "get" {
                continue;
            }
            let parameters = operation["parameters"].as_array().map(Vec::as_slice).unwrap_or_default();
            let declared =
                parameters.iter().any(|parameter| parameter["in"] == "header" && parameter["name"] == "X-CSRFToken");
            assert!(declared, "{method} {path} does not declare X-CSRFToken: {operation}");
        }
    }
    // Every documented operation is fuzzed.
    let operations: usize =
        document["paths"].as_object().unwrap().values().map(|path| path.as_object().unwrap().len()).sum();
    let (status, _, docs) = get(format!("{base}/api/docs")).await;
    assert_eq!(status, 200);
    assert!(docs.to_lowercase().contains("swagger"));

    let python = std::env::var("E2E_PYTHON").unwrap_or_else(|_| "python3".into());
    let file = tempfile::NamedTempFile::with_suffix(".json").unwrap();
    std::fs::write(file.path(), &text).unwrap();
    let validate = std::process::Command::new(&python)
        .args(["-m", "openapi_spec_validator", file.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        validate.status.success(),
        "{}{}",
        String::from_utf8_lossy(&validate.stdout),
        String::from_utf8_lossy(&validate.stderr)
    );

    // Twice: anonymous, then as a logged-in browser (cookie and CSRF token), so that login
    // bodies reach the identity service and `/me` answers 200.
    let mut browser = Browser::new(&stack.facade);
    browser.log_in("eli", PASSWORD).await;
    let logged_in = vec![
        // Logging out would end the session the rest of the run relies on.
        "--exclude-path".to_owned(),
        "/logout".to_owned(),
        "-H".to_owned(),
        format!("Cookie: {}", browser.cookie_header()),
        "-H".to_owned(),
        format!("X-CSRFToken: {}", browser.csrf()),
    ];
    for (authenticated, headers) in [(false, Vec::new()), (true, logged_in)] {
        let schemathesis = std::path::Path::new(&python).with_file_name("schemathesis");
        let url = format!("{base}/api/openapi.json");
        let api = format!("{base}/api");
        let run = tokio::task::spawn_blocking(move || {
            std::process::Command::new(schemathesis)
                .current_dir(std::env::temp_dir())
                .args(["run", &url, "--url", &api, "--max-examples", "100", "--no-color", "--checks"])
                .arg(
                    "not_a_server_error,status_code_conformance,content_type_conformance,\
                     response_schema_conformance,response_headers_conformance",
                )
                .args(headers)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let report = String::from_utf8_lossy(&run.stdout);
        println!("{report}");
        assert!(
            run.status.success(),
            "schemathesis found failures:\n{report}\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(report.contains(&format!("selected / {operations} total")), "{report}");
        assert!(!report.contains("Authentication failed") || !authenticated, "{report}");
    }
}

/// One raw HTTP/1.1 request (bytes as given, no client fixing them up): status and body.
async fn raw_request(addr: std::net::SocketAddr, head: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn malformed_headers_unknown_routes_and_wrong_methods_answer_json_details() {
    let stack = Stack::start().await;
    let addr = stack.facade.addr;
    let cases: [(&[u8], u16); 4] = [
        // Control bytes in a cookie: the header line is dropped, the request answered as any other.
        (b"GET /api/me HTTP/1.1\r\nHost: x\r\nCookie: sessionid=\x01abc\x7f\r\nConnection: close\r\n\r\n", 401),
        (b"GET /api/me HTTP/1.1\r\nHost: x\r\nX-Junk: \x1b[31m\r\nConnection: close\r\n\r\n", 401),
        (b"GET /no/such/page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404),
        (b"DELETE /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405),
    ];
    for (head, expected) in cases {
        let (status, body) = raw_request(addr, head).await;
        assert_eq!(status, expected, "{}: {body}", String::from_utf8_lossy(head));
        let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
        assert!(body["detail"].as_str().is_some_and(|detail| !detail.is_empty()), "{body}");
    }
}
