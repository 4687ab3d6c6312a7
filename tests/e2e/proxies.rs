//! Behind a reverse proxy: the facade believes `X-Forwarded-For` from `FACADE_TRUSTED_PROXIES`
//! only, taking the right-most address that is not a trusted proxy. An attacker guessing a
//! password through the proxy locks out only themself — not everyone behind the proxy — and
//! cannot slip out of their counter by prepending made-up addresses. docs/deploy.md's nginx
//! and Caddy configurations are run as written, in front of a facade, over TLS.

use e2e::*;
use futures::future::join_all;
use identity_proto::pb;
use serde_json::json;

/// A `tokenAuth` through the facade as if relayed by a proxy for `forwarded_for`; the error
/// code, or "" when it logged in.
async fn token_auth_via_proxy(facade: &Facade, forwarded_for: &str, password: &str) -> String {
    let body =
        json_of(reqwest::Client::new().post(facade.url()).header("x-forwarded-for", forwarded_for).json(&json!({
            "query": "mutation($p: String!) { tokenAuth(username: \"pia\", password: $p) { token } }",
            "variables": {"p": password},
        })))
        .await;
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

const DEPLOY: &str = include_str!("../../docs/deploy.md");

/// docs/deploy.md's first ```` ```lang ```` block with each `(from, to)` applied. Every
/// substitution must apply: a change to the docs shows here.
fn documented(lang: &str, substitutions: Vec<(&str, String)>) -> String {
    let fence = format!("```{lang}\n");
    let start = DEPLOY.find(&fence).unwrap_or_else(|| panic!("docs/deploy.md has no {lang} block")) + fence.len();
    let mut block = DEPLOY[start..start + DEPLOY[start..].find("```").unwrap()].to_owned();
    for (from, to) in substitutions {
        assert!(block.contains(from), "docs/deploy.md's {lang} block no longer has {from:?}");
        block = block.replace(from, &to);
    }
    block
}

/// A facade that trusts the proxies on 127.0.0.1 (with a user `nia`), and what a proxy in
/// front of it needs: the test's certificate, a directory of its own, and two free ports.
struct Scene {
    stack: Stack,
    pki: Pki,
    dir: tempfile::TempDir,
    tls: u16,
    plain: u16,
}

impl Scene {
    async fn start() -> Self {
        let db = TestDb::new().await;
        let identity = config(&db);
        let stack = Stack::start_with(db, identity, |facade| {
            facade.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        })
        .await;
        sign_up(&mut stack.identity.users(), "nia").await;
        let (tls, plain) = (free_address().port(), free_address().port());
        Scene { stack, pki: Pki::new(), dir: tempfile::tempdir().unwrap(), tls, plain }
    }

    /// docs/deploy.md's nginx block, pointed at the facade, on the scene's ports and
    /// certificate.
    fn documented_nginx(&self) -> String {
        let (facade, tls, plain) = (self.stack.facade.addr, self.tls, self.plain);
        documented(
            "nginx",
            vec![
                ("server 10.0.2.1:8080;\n    server 10.0.2.2:8080;", format!("server {facade};")),
                ("listen 443 ssl http2;", format!("listen 127.0.0.1:{tls} ssl http2;")),
                ("listen 80;", format!("listen 127.0.0.1:{plain};")),
                ("/etc/ssl/auth.example.com/fullchain.pem", Pki::path(&self.pki.server_cert).to_owned()),
                ("/etc/ssl/auth.example.com/privkey.pem", Pki::path(&self.pki.server_key).to_owned()),
            ],
        )
    }

    /// docs/deploy.md's Caddyfile, pointed at the facade, on the scene's ports and certificate,
    /// its state in the scene's directory.
    fn documented_caddy(&self) -> String {
        let (cert, key) = (Pki::path(&self.pki.server_cert), Pki::path(&self.pki.server_key));
        let site = format!("https://127.0.0.1:{} {{\n    tls {cert} {key}", self.tls);
        let block = documented(
            "caddyfile",
            vec![("auth.example.com {", site), ("10.0.2.1:8080 10.0.2.2:8080", self.stack.facade.addr.to_string())],
        );
        // Global options of the test's own: no admin endpoint, state in the temporary
        // directory, loopback ports instead of 80 and 443.
        let options = format!(
            "{{\n    admin off\n    storage file_system {}\n    http_port {}\n    https_port {}\n}}\n",
            self.dir.path().join("data").display(),
            self.plain,
            self.tls
        );
        options + &block
    }
}

/// A client of the proxy from its own loopback address (the proxy is 127.0.0.1), trusting the
/// test CA.
fn client_from(address: &str, pki: &Pki) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap();
    reqwest::Client::builder()
        .local_address(address.parse::<std::net::IpAddr>().unwrap())
        .add_root_certificate(ca)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn graphql_via(
    client: &reqwest::Client,
    url: &str,
    body: serde_json::Value,
    spoof: Option<&str>,
) -> serde_json::Value {
    let mut request = client.post(url).json(&body);
    if let Some(spoof) = spoof {
        request = request.header("x-forwarded-for", spoof);
    }
    json_of(request).await
}

/// Through the scene's proxy (HTTPS on `tls`, HTTP on `plain` redirected with `redirect`), for
/// clients on their own loopback addresses: an attacker's made-up X-Forwarded-For gets it
/// no further guesses, the real user logs in at once and is seen at its own address, the
/// attacker stays locked out, and plain HTTP is sent to HTTPS.
async fn clients_keep_their_own_address_and_budget(scene: &Scene, redirect: u16) {
    let (tls, plain, pki) = (scene.tls, scene.plain, &scene.pki);
    let url = format!("https://127.0.0.1:{tls}/graphql");
    let user = client_from("127.0.0.2", pki);
    eventually(std::time::Duration::from_secs(10), || async {
        user.get(format!("https://127.0.0.1:{tls}/healthz")).send().await.ok().filter(|r| r.status() == 200)
    })
    .await;

    // An attacker at 127.0.0.3 guesses at once, each guess claiming another address.
    let attacker = client_from("127.0.0.3", pki);
    let guess = |n: usize| {
        let (attacker, url) = (attacker.clone(), url.clone());
        async move {
            let body =
                json!({"query": "mutation { tokenAuth(username: \"nia\", password: \"wrong guess\") { token } }"});
            let answer = graphql_via(&attacker, &url, body, Some(&format!("203.0.113.{n}"))).await;
            error_code(&answer).to_owned()
        }
    };
    let codes = join_all((0..12).map(guess)).await;
    let throttled = codes.iter().filter(|code| *code == "TOO_MANY_REQUESTS").count();
    assert!(throttled >= 7, "a made-up X-Forwarded-For got the attacker past its budget: {codes:?}");

    // The real user, another client, logs in through the proxy at once, and is seen at its own
    // address; the attacker stays locked out even with the right password.
    let login =
        json!({"query": format!("mutation {{ tokenAuth(username: \"nia\", password: \"{PASSWORD}\") {{ token }} }}")});
    let answer = graphql_via(&user, &url, login.clone(), None).await;
    let token = answer["data"]["tokenAuth"]["token"].as_str().unwrap_or_else(|| panic!("{answer}")).to_owned();
    let sessions =
        json_of(user.post(&url).bearer_auth(&token).json(&json!({"query": "{ sessions { clientIp current } }"}))).await;
    assert_eq!(sessions["data"]["sessions"][0]["clientIp"], "127.0.0.2", "{sessions}");
    let locked = graphql_via(&attacker, &url, login, None).await;
    assert_eq!(error_code(&locked), "TOO_MANY_REQUESTS", "{locked}");

    // Plain HTTP is sent to HTTPS.
    let answer = user.get(format!("http://127.0.0.1:{plain}/graphql")).send().await.unwrap();
    assert_eq!(answer.status(), redirect);
    assert!(answer.headers()["location"].to_str().unwrap().starts_with("https://"));
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_the_documented_nginx_clients_keep_their_own_address_and_budget() {
    let nginx = std::path::Path::new("/usr/sbin/nginx");
    assert!(nginx.exists(), "nginx is not installed (.ci/tools installs Debian's nginx-light)");
    let scene = Scene::start().await;

    // nginx with the documented block, over TLS, in front of the facade.
    let root = scene.dir.path().display();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {root}/nginx.pid;\nerror_log {root}/error.log;\n\
         events {{ worker_connections 128; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {root}/body;\n  proxy_temp_path {root}/proxy;\n\
         fastcgi_temp_path {root}/fastcgi;\n  uwsgi_temp_path {root}/uwsgi;\n  scgi_temp_path {root}/scgi;\n{}\n}}\n",
        scene.documented_nginx()
    );
    let path = scene.dir.path().join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let mut proxy = tokio::process::Command::new(nginx)
        .arg("-c")
        .arg(&path)
        .arg("-e")
        .arg(scene.dir.path().join("error.log"))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    clients_keep_their_own_address_and_budget(&scene, 301).await;
    proxy.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_the_documented_caddy_clients_keep_their_own_address_and_budget() {
    let caddy = std::path::Path::new("/usr/bin/caddy");
    assert!(caddy.exists(), "Caddy is not installed (.ci/tools installs Debian's caddy)");
    let scene = Scene::start().await;

    // Caddy with the documented Caddyfile, over TLS, in front of the facade. Caddy keeps its
    // state (and looks for its configuration) under HOME and the XDG directories: the test's.
    let dir = scene.dir.path();
    let path = dir.join("Caddyfile");
    std::fs::write(&path, scene.documented_caddy()).unwrap();
    let mut proxy = tokio::process::Command::new(caddy)
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&path)
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    clients_keep_their_own_address_and_budget(&scene, 308).await;
    proxy.kill().await.unwrap();
}

#[tokio::test]
async fn over_the_identity_services_unix_socket_the_facade_still_names_the_end_user() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("identity.sock");
    let mut identity = config(&db);
    identity.grpc_uds = Some(socket.clone());
    let service = Service::start(identity).await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket is its owner's only");
    let mut facade = facade_config(&service);
    facade.identity_url = format!("unix://{}", socket.display());
    facade.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    let facade = Facade::start(facade).await;
    sign_up(&mut service.users(), "uma").await;

    // A login through the facade, relayed by a proxy for 203.0.113.9, then whoami with its token.
    let query = format!("mutation {{ tokenAuth(username: \"uma\", password: \"{PASSWORD}\") {{ token }} }}");
    let request = reqwest::Client::new().post(facade.url()).header("x-forwarded-for", "203.0.113.9");
    let body = json_of(request.json(&json!({ "query": query }))).await;
    let token = body["data"]["tokenAuth"]["token"].as_str().unwrap_or_else(|| panic!("{body}")).to_owned();
    let request = reqwest::Client::new().post(facade.url()).bearer_auth(&token);
    let body = json_of(request.json(&json!({"query": "{ whoami { username } }"}))).await;
    assert_eq!(body["data"]["whoami"]["username"], "uma", "{body}");

    // A peer on the socket counts as loopback, a trusted forwarder: the session names the end
    // user, not the facade (nor nobody).
    let sessions = service.auth().list_sessions(bearer(pb::ListSessionsRequest::default(), &token)).await;
    let sessions = sessions.unwrap().into_inner().sessions;
    assert_eq!(sessions[0].client_ip, "203.0.113.9", "{sessions:?}");

    // The socket is removed when the service stops.
    facade.stop().await;
    service.stop().await.unwrap();
    assert!(!socket.exists(), "the socket file is gone");
}
