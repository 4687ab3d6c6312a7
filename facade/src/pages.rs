//! The plain-HTTP routes outside `/api`: JWKS and OIDC discovery, probes, metrics, the demo
//! page, and the pages mail links open (`/account/...`) with their script and stylesheet.

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::STANDARD};
use poem::{
    IntoResponse, Response, handler,
    http::{StatusCode, header},
    web::Data,
};
use sha2::{Digest, Sha256};

use crate::{error::json_response as json, state::AppState};

/// `GET /.well-known/jwks.json`: the next, current and retired public keys, never a private
/// member; `Cache-Control: public, max-age` (`IDENTITY_JWKS_MAX_AGE`), a strong `ETag`, and 304
/// to an `If-None-Match` naming it.
#[handler]
pub async fn jwks(request: &poem::Request, Data(state): Data<&Arc<AppState>>) -> Response {
    match state.discovery.fresh().await {
        Ok(settings) => cacheable(request, &settings.jwks_json(), settings.max_age()),
        Err(error) => error.detail_response(),
    }
}

/// `GET /.well-known/openid-configuration`.
#[handler]
pub async fn openid_configuration(request: &poem::Request, Data(state): Data<&Arc<AppState>>) -> Response {
    match state.discovery.get().await {
        Ok(settings) => cacheable(request, &settings.openid_configuration(), settings.max_age()),
        Err(error) => error.detail_response(),
    }
}

/// A public, cacheable JSON document with a strong ETag (a hash of its bytes): 304 without a
/// body when the request's `If-None-Match` names it (or is `*`).
fn cacheable(request: &poem::Request, body: &serde_json::Value, max_age: u64) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    let tag: String = digest.iter().take(16).map(|byte| format!("{byte:02x}")).collect();
    let etag = format!("\"{tag}\"");
    let matches = request
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate == etag);
    let builder = Response::builder()
        .header(header::CACHE_CONTROL, format!("public, max-age={max_age}"))
        .header(header::ETAG, etag);
    if matches {
        builder.status(StatusCode::NOT_MODIFIED).finish()
    } else {
        builder.status(StatusCode::OK).content_type("application/json").body(bytes)
    }
}

/// `GET /healthz`: the process is up (says nothing of its dependencies).
#[handler]
pub fn healthz() -> Response {
    json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: the identity service answers and its database is reachable.
#[handler]
pub async fn readyz(Data(state): Data<&Arc<AppState>>) -> Response {
    match state.identity.ready().await {
        Ok(()) => json(StatusCode::OK, &serde_json::json!({ "status": "ready" })),
        Err(error) => error.detail_response(),
    }
}

/// `GET /metrics`: Prometheus (OpenMetrics) text.
#[handler]
pub fn metrics(Data(state): Data<&Arc<AppState>>) -> Response {
    Response::builder()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(state.metrics.render())
}

/// The demo page: the whole cookie flow in a few lines of script.
const DEMO: &str = include_str!("../static/index.html");

/// The pages mail links open, and what they load.
const VERIFY_EMAIL: &str = include_str!("../static/account/verify-email.html");
const CONFIRM_EMAIL: &str = include_str!("../static/account/confirm-email.html");
const RESET_PASSWORD: &str = include_str!("../static/account/reset-password.html");
const ACCOUNT_SCRIPT: &[u8] = include_bytes!("../static/account/account.js");
const ACCOUNT_STYLE: &[u8] = include_bytes!("../static/account/account.css");

/// An HTML page of ours, served under a Content-Security-Policy that names each of its inline
/// scripts and styles by hash: no other inline script runs, no framing, requests to this
/// origin only.
pub struct HtmlPage {
    body: &'static str,
    policy: String,
    /// The page's URL carries a secret (a mail link's token): the response is never stored,
    /// and the URL never sent as a referrer.
    secret_url: bool,
}

impl HtmlPage {
    /// `sources`: what the page may load besides its inline blocks, per directive (e.g.
    /// `("script-src", "'self'")`).
    pub fn new(body: &'static str, sources: &[(&str, &str)]) -> Self {
        // Inline blocks by hash; an empty one (`<script src=...></script>`) runs nothing.
        let hashes = |open: &str, close: &str| -> String {
            body.split(open)
                .skip(1)
                .filter_map(|rest| rest.split_once('>').and_then(|(_, block)| block.split_once(close)))
                .filter(|(block, _)| !block.is_empty())
                .map(|(block, _)| format!("'sha256-{}'", STANDARD.encode(Sha256::digest(block.as_bytes()))))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let extra = |directive: &str| -> String {
            sources.iter().filter(|(name, _)| *name == directive).map(|(_, source)| format!(" {source}")).collect()
        };
        let allowed = |hashes: String, extra: String| -> String {
            let list = format!("{hashes}{extra}").trim().to_owned();
            if list.is_empty() { "'none'".to_owned() } else { list }
        };
        let policy = format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self'{}; \
             font-src 'self'{}; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            allowed(hashes("<script", "</script>"), extra("script-src")),
            allowed(hashes("<style", "</style>"), extra("style-src")),
            extra("img-src"),
            extra("font-src"),
        );
        HtmlPage { body, policy, secret_url: false }
    }

    /// The demo page at `/`: inline script and style only.
    pub fn demo() -> Self {
        Self::new(DEMO, &[])
    }

    /// A page a mail link opens: no inline script or style, only `/account/account.js` and
    /// `/account/account.css`. Opening it changes nothing (mail scanners fetch links): only a
    /// click posts the link's token.
    fn link(body: &'static str) -> Self {
        HtmlPage { secret_url: true, ..Self::new(body, &[("script-src", "'self'"), ("style-src", "'self'")]) }
    }

    /// `GET /account/verify-email?key=…`: posts the key to `/api/registration/verify-email/`.
    pub fn verify_email() -> Self {
        Self::link(VERIFY_EMAIL)
    }

    /// `GET /account/confirm-email?key=…`: posts the key to `/api/email/change/confirm/`.
    pub fn confirm_email() -> Self {
        Self::link(CONFIRM_EMAIL)
    }

    /// `GET /account/reset-password?uid=…&token=…`: a new password, twice, posted with the
    /// link's uid and token to `/api/password/reset/confirm/`.
    pub fn reset_password() -> Self {
        Self::link(RESET_PASSWORD)
    }

    pub fn response(&self) -> Response {
        let builder = Response::builder()
            .content_type("text/html; charset=utf-8")
            .header("content-security-policy", self.policy.as_str())
            .header("x-frame-options", "DENY");
        let builder = if self.secret_url {
            builder.header(header::CACHE_CONTROL, "no-store").header(header::REFERRER_POLICY, "no-referrer")
        } else {
            builder.header(header::CACHE_CONTROL, "no-cache")
        };
        builder.body(self.body)
    }
}

impl poem::Endpoint for HtmlPage {
    type Output = Response;

    async fn call(&self, _request: poem::Request) -> poem::Result<Response> {
        Ok(self.response().into_response())
    }
}

/// A static file of our pages. Not versioned: revalidated on each use.
pub struct Asset {
    media_type: &'static str,
    bytes: &'static [u8],
}

impl Asset {
    /// `GET /account/account.js`.
    pub const ACCOUNT_SCRIPT: Asset = Asset { media_type: "text/javascript; charset=utf-8", bytes: ACCOUNT_SCRIPT };
    /// `GET /account/account.css`.
    pub const ACCOUNT_STYLE: Asset = Asset { media_type: "text/css; charset=utf-8", bytes: ACCOUNT_STYLE };
}

impl poem::Endpoint for Asset {
    type Output = Response;

    async fn call(&self, _request: poem::Request) -> poem::Result<Response> {
        Ok(Response::builder().content_type(self.media_type).header(header::CACHE_CONTROL, "no-cache").body(self.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_policy_names_its_inline_script_and_style() {
        let policy = HtmlPage::demo().policy;
        assert!(policy.contains("script-src 'sha256-"), "{policy}");
        assert!(policy.contains("style-src 'sha256-"), "{policy}");
        assert!(!policy.contains("unsafe-inline"));
    }

    #[test]
    fn the_link_pages_run_no_inline_script_and_load_only_our_files() {
        for (page, ids) in [
            (VERIFY_EMAIL, &["confirm-submit", "confirm-result"][..]),
            (CONFIRM_EMAIL, &["confirm-submit", "confirm-result"][..]),
            (RESET_PASSWORD, &["reset-form", "new-password1", "new-password2", "reset-submit", "reset-result"][..]),
        ] {
            let html = HtmlPage::link(page);
            assert!(html.policy.contains("script-src 'self'; style-src 'self';"), "{}", html.policy);
            assert!(!html.policy.contains("sha256") && !html.policy.contains("unsafe-inline"), "{}", html.policy);
            for script in page.split("<script").skip(1) {
                assert!(script.starts_with(" src=\"/account/account.js\"></script>"), "an inline script: {script}");
            }
            for source in page.split("src=\"").skip(1).chain(page.split("href=\"").skip(1)) {
                let path = source.split('"').next().unwrap_or_default();
                assert!(["/account/account.js", "/account/account.css"].contains(&path), "{path} is not served");
            }
            for id in ids {
                assert!(page.contains(&format!("id=\"{id}\"")), "{id} missing");
            }
            let response = html.response();
            assert_eq!(response.headers()[header::REFERRER_POLICY], "no-referrer");
            assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        }
        for id in ["forgot-link", "forgot-form", "forgot-email", "forgot-submit", "forgot-result"] {
            assert!(DEMO.contains(&format!("id=\"{id}\"")), "{id} missing from the demo page");
        }
    }
}
