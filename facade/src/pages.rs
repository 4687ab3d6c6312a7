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

/// How long relying parties may keep the JWK set and discovery document.
const WELL_KNOWN_CACHE: &str = "public, max-age=300";

/// `GET /.well-known/jwks.json`: every non-retired public key; never a private member.
#[handler]
pub async fn jwks(Data(state): Data<&Arc<AppState>>) -> Response {
    match state.discovery.get().await {
        Ok(settings) => cacheable(json(StatusCode::OK, &settings.jwks_json())),
        Err(error) => error.detail_response(),
    }
}

/// `GET /.well-known/openid-configuration`.
#[handler]
pub async fn openid_configuration(Data(state): Data<&Arc<AppState>>) -> Response {
    match state.discovery.get().await {
        Ok(settings) => cacheable(json(StatusCode::OK, &settings.openid_configuration())),
        Err(error) => error.detail_response(),
    }
}

fn cacheable(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static(WELL_KNOWN_CACHE));
    response
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

/// `GET /`: the demo page, under a CSP that allows its own inline script and style (by hash)
/// and nothing else: no other script, no framing, requests to this origin only.
pub struct Demo {
    policy: String,
}

impl Demo {
    pub fn new() -> Self {
        let hashes = |open: &str, close: &str| -> String {
            DEMO.split(open)
                .skip(1)
                .filter_map(|rest| rest.split_once('>').and_then(|(_, body)| body.split_once(close)))
                .map(|(body, _)| format!("'sha256-{}'", STANDARD.encode(Sha256::digest(body.as_bytes()))))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let policy = format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            hashes("<script", "</script>"),
            hashes("<style", "</style>"),
        );
        Demo { policy }
    }
}

impl Default for Demo {
    fn default() -> Self {
        Self::new()
    }
}

impl poem::Endpoint for Demo {
    type Output = Response;

    async fn call(&self, _request: poem::Request) -> poem::Result<Response> {
        Ok(Response::builder()
            .content_type("text/html; charset=utf-8")
            .header("content-security-policy", self.policy.as_str())
            .header("x-frame-options", "DENY")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(DEMO)
            .into_response())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_policy_names_its_inline_script_and_style() {
        let policy = Demo::new().policy;
        assert!(policy.contains("script-src 'sha256-"), "{policy}");
        assert!(policy.contains("style-src 'sha256-"), "{policy}");
        assert!(!policy.contains("unsafe-inline"));
    }
}
