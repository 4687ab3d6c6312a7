//! The plain-HTTP routes outside `/api`: JWKS and OIDC discovery, probes, metrics, and the
//! demo page.

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

/// An HTML page of ours, served under a Content-Security-Policy that names each of its inline
/// scripts and styles by hash: no other inline script runs, no framing, requests to this
/// origin only.
pub struct HtmlPage {
    body: &'static str,
    policy: String,
}

impl HtmlPage {
    /// `sources`: what the page may load besides its inline blocks, per directive (e.g.
    /// `("script-src", "'self'")`).
    pub fn new(body: &'static str, sources: &[(&str, &str)]) -> Self {
        let hashes = |open: &str, close: &str| -> String {
            body.split(open)
                .skip(1)
                .filter_map(|rest| rest.split_once('>').and_then(|(_, block)| block.split_once(close)))
                .map(|(block, _)| format!("'sha256-{}'", STANDARD.encode(Sha256::digest(block.as_bytes()))))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let extra = |directive: &str| -> String {
            sources.iter().filter(|(name, _)| *name == directive).map(|(_, source)| format!(" {source}")).collect()
        };
        let policy = format!(
            "default-src 'none'; script-src {}{}; style-src {}{}; connect-src 'self'; img-src 'self'{}; \
             font-src 'self'{}; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            hashes("<script", "</script>"),
            extra("script-src"),
            hashes("<style", "</style>"),
            extra("style-src"),
            extra("img-src"),
            extra("font-src"),
        );
        HtmlPage { body, policy }
    }

    /// The demo page at `/`: inline script and style only.
    pub fn demo() -> Self {
        Self::new(DEMO, &[])
    }

    pub fn response(&self) -> Response {
        Response::builder()
            .content_type("text/html; charset=utf-8")
            .header("content-security-policy", self.policy.as_str())
            .header("x-frame-options", "DENY")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(self.body)
    }
}

impl poem::Endpoint for HtmlPage {
    type Output = Response;

    async fn call(&self, _request: poem::Request) -> poem::Result<Response> {
        Ok(self.response().into_response())
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
}
