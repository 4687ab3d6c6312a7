//! TLS between the parts: the identity service's gRPC port with TLS refuses plaintext, serves
//! clients that verify it (the facade, grpcurl), and under mutual TLS lets in only callers with
//! a certificate from its client CA, naming them in its log. Certificates are made in the test.

use std::time::Duration;

use e2e::*;
use tonic::transport::{ClientTlsConfig, Endpoint};

/// What grpcurl printed, and whether it succeeded.
fn grpcurl(args: &[&str]) -> (bool, String) {
    let program = std::env::var("E2E_GRPCURL").unwrap_or_else(|_| "grpcurl".into());
    let output = std::process::Command::new(&program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error} (set E2E_GRPCURL; .ci/test installs grpcurl)"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

async fn grpcurl_async(args: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || grpcurl(&args.iter().map(String::as_str).collect::<Vec<_>>())).await.unwrap()
}

/// Whether a health check over `endpoint` (with `tls`, if any) gets an answer.
async fn answers(url: String, tls: Option<ClientTlsConfig>) -> Result<(), String> {
    let mut endpoint = Endpoint::from_shared(url).unwrap().connect_timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).unwrap();
    }
    let channel = endpoint.timeout(Duration::from_secs(5)).connect_lazy();
    pb_health::health_client::HealthClient::new(channel)
        .check(pb_health::HealthCheckRequest { service: String::new() })
        .await
        .map(drop)
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
}

/// `GET /readyz` of a facade: 200 when it reaches a serving identity service.
async fn ready(facade: &Facade) -> u16 {
    reqwest::get(format!("http://{}/readyz", facade.addr)).await.unwrap().status().as_u16()
}

fn facade_to(url: String, edit: impl FnOnce(&mut graphql_facade::Config)) -> graphql_facade::Config {
    let mut config = graphql_facade::Config::defaults();
    config.identity_url = url;
    config.identity_timeout = secs(3);
    edit(&mut config);
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn with_tls_on_the_grpc_port_plaintext_is_refused_and_clients_that_verify_it_are_served() {
    let pki = Pki::new();
    let db = TestDb::new().await;
    let manager = format!("root:{PASSWORD}");
    let env = [
        ("IDENTITY_DATABASE_URL", db.url.as_str()),
        ("IDENTITY_TLS_CERT", Pki::path(&pki.server_cert)),
        ("IDENTITY_TLS_KEY", Pki::path(&pki.server_key)),
        ("IDENTITY_BOOTSTRAP_MANAGER", manager.as_str()),
    ];
    let identity = IdentityProcess::start_tls(&env, pki.client()).await;
    log_in(&mut identity.auth(), "root").await;
    let addr = identity.addr;

    // Plaintext gets nothing, and neither does a client that does not trust the certificate.
    let plaintext = answers(format!("http://{addr}"), None).await;
    assert!(plaintext.is_err(), "a plaintext call was answered");
    let untrusting = answers(format!("https://{addr}"), Some(ClientTlsConfig::new().with_webpki_roots())).await;
    assert!(untrusting.is_err(), "a client without the CA was served");

    // grpcurl with -cacert works; without it (system roots) or in plaintext it does not.
    let ca = Pki::path(&pki.ca).to_owned();
    let (ok, listed) = grpcurl_async(vec!["-cacert".into(), ca.clone(), addr.to_string(), "list".into()]).await;
    assert!(ok && listed.contains("identity.v1.AuthService"), "{listed}");
    let (ok, refused) = grpcurl_async(vec!["-plaintext".into(), addr.to_string(), "list".into()]).await;
    assert!(!ok, "grpcurl -plaintext listed: {refused}");

    // The facade: https:// with the CA works; http:// to a TLS port, or https:// without the
    // CA, is unavailable (never silently plaintext).
    let facade = Facade::start(facade_to(format!("https://{addr}"), |config| {
        config.identity_ca = Some(pki.ca.clone());
    }))
    .await;
    assert_eq!(ready(&facade).await, 200);
    let gql = Gql { http: reqwest::Client::new(), url: facade.url() };
    gql.token_auth("root", PASSWORD).await;
    for config in [
        facade_to(format!("http://{addr}"), |_| {}),
        facade_to(format!("https://{addr}"), |_| {}),
        facade_to(format!("https://localhost:{}", addr.port()), |config| {
            // The right CA, but the certificate must carry the name asked for.
            config.identity_ca = Some(pki.ca.clone());
            config.identity_tls_name = Some("identity.example.com".into());
        }),
    ] {
        let url = config.identity_url.clone();
        let wrong = Facade::start(config).await;
        assert_eq!(ready(&wrong).await, 503, "{url}");
        wrong.stop().await;
    }
    facade.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn under_mutual_tls_only_callers_with_a_certificate_from_the_client_ca_get_in_and_are_logged() {
    let pki = Pki::new();
    let db = TestDb::new().await;
    let manager = format!("root:{PASSWORD}");
    let env = [
        ("IDENTITY_DATABASE_URL", db.url.as_str()),
        ("IDENTITY_TLS_CERT", Pki::path(&pki.server_cert)),
        ("IDENTITY_TLS_KEY", Pki::path(&pki.server_key)),
        ("IDENTITY_TLS_CLIENT_CA", Pki::path(&pki.ca)),
        ("IDENTITY_BOOTSTRAP_MANAGER", manager.as_str()),
    ];
    let identity = IdentityProcess::start_tls(&env, pki.client_with(&pki.client_cert, &pki.client_key)).await;
    let url = format!("https://{}", identity.addr);

    // A burst: callers with the certificate and callers without one (or with a stranger's), all
    // at once. Every known caller is served; no stranger is.
    let mut known = Vec::new();
    let mut strangers = Vec::new();
    for round in 0..10 {
        let mut auth = identity.auth();
        known.push(tokio::spawn(async move {
            // Each from its own address: in-flight logins hold throttle slots per address.
            let login = identity_proto::pb::LoginRequest { username: "root".into(), password: PASSWORD.into() };
            auth.login(from_address(login, &format!("192.0.2.{}", round + 1)))
                .await
                .map(drop)
                .map_err(|status| status.to_string())
        }));
        let tls = if round % 2 == 0 { pki.client() } else { pki.client_with(&pki.stranger_cert, &pki.stranger_key) };
        strangers.push(tokio::spawn(answers(url.clone(), Some(tls))));
    }
    for call in known {
        call.await.unwrap().expect("a caller with a certificate from the client CA was refused");
    }
    for call in strangers {
        assert!(call.await.unwrap().is_err(), "a caller without a known certificate was served");
    }

    // Each call's log names the caller's certificate subject. The log is read from the child's
    // stdout by a thread, so the last lines may arrive a moment after the last answer.
    let named = |logs: &[String]| {
        logs.iter().filter(|line| line.contains("\"message\":\"login\"") && line.contains(tls::CLIENT_SUBJECT)).count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while named(&identity.logs()) < 10 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let logs = identity.logs();
    assert_eq!(named(&logs), 10, "logins not attributed to {}: {logs:#?}", tls::CLIENT_SUBJECT);

    // grpcurl with the client certificate works, without it not.
    let ca = Pki::path(&pki.ca).to_owned();
    let target = identity.addr.to_string();
    let (ok, listed) = grpcurl_async(vec![
        "-cacert".into(),
        ca.clone(),
        "-cert".into(),
        Pki::path(&pki.client_cert).into(),
        "-key".into(),
        Pki::path(&pki.client_key).into(),
        target.clone(),
        "list".into(),
    ])
    .await;
    assert!(ok && listed.contains("identity.v1.UserService"), "{listed}");
    let (ok, refused) = grpcurl_async(vec!["-cacert".into(), ca, target, "list".into()]).await;
    assert!(!ok, "grpcurl without a client certificate listed: {refused}");

    // The facade presents its certificate; without one it cannot reach the service.
    let facade = Facade::start(facade_to(url.clone(), |config| {
        config.identity_ca = Some(pki.ca.clone());
        config.identity_client_cert = Some(pki.client_cert.clone());
        config.identity_client_key = Some(pki.client_key.clone());
    }))
    .await;
    assert_eq!(ready(&facade).await, 200);
    Gql { http: reqwest::Client::new(), url: facade.url() }.token_auth("root", PASSWORD).await;
    let anonymous = Facade::start(facade_to(url, |config| config.identity_ca = Some(pki.ca.clone()))).await;
    assert_eq!(ready(&anonymous).await, 503);
    anonymous.stop().await;
    facade.stop().await;
}

#[test]
fn the_stack_binary_speaks_tls_to_its_own_identity_service() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    // A fixed facade port: the issuer follows it.
    let http = free_address().to_string();
    let env = [
        ("FACADE_HTTP_ADDR", http.as_str()),
        ("IDENTITY_TLS_CERT", Pki::path(&pki.server_cert)),
        ("IDENTITY_TLS_KEY", Pki::path(&pki.server_key)),
        ("IDENTITY_TLS_CLIENT_CA", Pki::path(&pki.ca)),
        ("FACADE_IDENTITY_CA", Pki::path(&pki.ca)),
        ("FACADE_IDENTITY_CLIENT_CERT", Pki::path(&pki.client_cert)),
        ("FACADE_IDENTITY_CLIENT_KEY", Pki::path(&pki.client_key)),
    ];
    let (mut child, [grpc, listening]) = crate::binaries::start_stack(dir.path(), &env);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (created, discovery) = runtime.block_on(crate::binaries::sign_up_and_discover(&listening, "tess"));
    let plaintext = runtime.block_on(answers(format!("http://{grpc}"), None));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(listening, http);
    assert_eq!(created["data"]["createUser"]["user"]["username"], "tess", "{created}");
    assert_eq!(discovery["issuer"], format!("http://{http}"), "{discovery}");
    assert!(plaintext.is_err(), "the stack's gRPC port answered plaintext");
}
