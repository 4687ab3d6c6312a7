//! Providers to sign in with, for the tests (tests/node/social_providers.mjs): panva's
//! `oidc-provider` (an OpenID-certified provider) with a test client whose logins and consents
//! complete by themselves, and a GitHub-shaped OAuth2 server; each can be told whom the next
//! login is, and the OpenID provider to spoil its next ID token (wrong nonce, audience,
//! issuer, `alg: none`, expired, bad signature).

use std::{path::PathBuf, process::Stdio, time::Duration};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

pub const CLIENT_ID: &str = "identity-test-client";
pub const CLIENT_SECRET: &str = "identity-test-secret";

pub struct Providers {
    /// The OpenID provider's issuer (`http://127.0.0.1:port`).
    pub issuer: String,
    /// The GitHub-shaped server's base (`/login/oauth/...`, `/api/...`).
    pub github: String,
    http: reqwest::Client,
    /// Kept open: the script's output would otherwise go to a closed pipe.
    _process: (Child, tokio::io::Lines<BufReader<tokio::process::ChildStdout>>),
}

impl Providers {
    /// Both providers, allowing exactly `redirect_uris`.
    pub async fn start(redirect_uris: &[String]) -> Self {
        let node = std::env::var("E2E_NODE").unwrap_or_else(|_| "node".into());
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/node/social_providers.mjs");
        let mut child = Command::new(&node)
            .arg(script)
            .env("CLIENT_ID", CLIENT_ID)
            .env("CLIENT_SECRET", CLIENT_SECRET)
            .env("REDIRECT_URIS", serde_json::to_string(redirect_uris).unwrap())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot run {node}: {error} (set E2E_NODE; .ci/tools installs the modules)")
            });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the providers did not listen within 30 s")
            .unwrap()
            .expect("the providers exited before listening (is oidc-provider installed? .ci/tools installs it)");
        let ready: Value = serde_json::from_str(&first).unwrap();
        Providers {
            issuer: ready["issuer"].as_str().unwrap().to_owned(),
            github: ready["github"].as_str().unwrap().to_owned(),
            http: reqwest::Client::new(),
            _process: (child, lines),
        }
    }

    async fn control(&self, url: String, body: Value) {
        let response = self.http.post(url).json(&body).send().await.unwrap();
        assert!(response.status().is_success(), "control call: {}", response.status());
    }

    /// Who the OpenID provider's next login is: `{"sub", "email", "email_verified",
    /// "preferred_username", "name"}`.
    pub async fn oidc_account(&self, account: Value) {
        self.control(format!("{}/test/account", self.issuer), account).await;
    }

    /// Spoils the OpenID provider's next ID token: `nonce`, `audience`, `issuer`, `expired`,
    /// `none` or `signature`; or leaves the address out of it (`no-email`, the address then only
    /// at UserInfo), and answers the UserInfo call after it about someone else
    /// (`no-email-foreign-userinfo`).
    pub async fn tamper(&self, mode: &str) {
        self.control(format!("{}/test/tamper", self.issuer), serde_json::json!({ "mode": mode })).await;
    }

    /// Who the GitHub server's next login is: `{"id", "login", "name", "emails": [{"email",
    /// "primary", "verified", "visibility"}]}`.
    pub async fn github_account(&self, account: Value) {
        self.control(format!("{}/test/account", self.github), account).await;
    }

    /// A providers file in `dir` naming both: `example` (OpenID Connect) and `github`, each
    /// also accepting `extra_redirect` (a single-page app's). The service reaches GitHub's
    /// token endpoint and API at `github_backchannel` (this server, or a proxy in front of it);
    /// browsers its authorization page directly.
    pub fn write_file(&self, dir: &std::path::Path, extra_redirect: &str, github_backchannel: &str) -> PathBuf {
        let path = dir.join("providers.toml");
        let secret = dir.join("example.secret");
        std::fs::write(&secret, format!("{CLIENT_SECRET}\n")).unwrap();
        let github = &self.github;
        let text = format!(
            r#"
[[provider]]
name = "example"
kind = "oidc"
display_name = "Example ID"
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret_file = "example.secret"
scopes = ["openid", "email", "profile"]
redirect_uris = ["{extra_redirect}"]

[[provider]]
name = "github"
kind = "github"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
authorize_url = "{github}/login/oauth/authorize"
token_url = "{github_backchannel}/login/oauth/access_token"
api_url = "{github_backchannel}/api"
redirect_uris = ["{extra_redirect}"]
"#,
            issuer = self.issuer,
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// Follows a provider's redirects from `url` (keeping its cookies, as a browser would) until
/// one leads to `redirect_prefix`; that URL, with the `code` and `state`.
pub async fn authorize(url: &str, redirect_prefix: &str) -> String {
    let http =
        reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut next = url.to_owned();
    for _ in 0..10 {
        let response = http.get(&next).send().await.unwrap();
        let status = response.status();
        let location = response.headers().get("location").map(|value| value.to_str().unwrap().to_owned());
        let Some(location) = location else {
            panic!("{next} answered {status} without a redirect: {}", response.text().await.unwrap_or_default());
        };
        let location = reqwest::Url::parse(&next).unwrap().join(&location).unwrap().to_string();
        if location.starts_with(redirect_prefix) {
            return location;
        }
        next = location;
    }
    panic!("{url} did not lead to {redirect_prefix} in ten redirects");
}
