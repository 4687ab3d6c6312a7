//! Hasura's auth webhook (https://hasura.io/docs/latest/auth/authentication/webhook/): Hasura
//! forwards the client's headers — as the request's own headers (GET mode) or as
//! `{"headers": {...}, "request": {...}}` (POST mode) — and gets 200 with the session
//! variables, or 401. The answer may be cached by Hasura for `Cache-Control: max-age`, never
//! longer than the credential lives nor than `FACADE_HASURA_CACHE_MAX_AGE`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use poem::{
    Body, Request, Response, handler,
    http::{StatusCode, header},
    web::Data,
};

use crate::{
    context::{Caller, RequestContext},
    credential::{ClientInfo, Credential},
    error::{ApiError, ErrorKind, json_response as json},
    state::AppState,
};

/// GET mode: the client's headers are this request's headers.
#[handler]
pub async fn get(request: &Request, Data(state): Data<&Arc<AppState>>) -> Response {
    answer(state, Credential::of_request(request), ClientInfo::of_request(request, &state.proxies)).await
}

/// POST mode: `{"headers": {name: value}, "request": {...}}`.
#[handler]
pub async fn post(request: &Request, body: Body, Data(state): Data<&Arc<AppState>>) -> Response {
    let forwarded = match body.into_bytes_limit(state.max_body_bytes).await {
        Ok(bytes) => forwarded_headers(&bytes),
        Err(_) => Err("the body is too large or unreadable"),
    };
    match forwarded {
        Ok(headers) => {
            answer(state, Credential::of_forwarded(&headers), ClientInfo::of_request(request, &state.proxies)).await
        }
        Err(message) => ApiError::new(ErrorKind::BadUserInput, message).detail_response(),
    }
}

/// The forwarded headers, names lowercased.
fn forwarded_headers(body: &[u8]) -> Result<HashMap<String, String>, &'static str> {
    #[derive(serde::Deserialize)]
    struct WebhookRequest {
        #[serde(default)]
        headers: HashMap<String, serde_json::Value>,
    }
    let parsed: WebhookRequest =
        serde_json::from_slice(body).map_err(|_| "expected {\"headers\": {...}, \"request\": {...}}")?;
    Ok(parsed
        .headers
        .into_iter()
        .filter_map(|(name, value)| value.as_str().map(|value| (name.to_ascii_lowercase(), value.to_owned())))
        .collect())
}

async fn answer(state: &AppState, credential: Option<Credential>, client: ClientInfo) -> Response {
    let max_age = state.hasura.cache_max_age;
    let Some(credential) = credential else {
        return match &state.hasura.anonymous_role {
            Some(role) => variables(None, role, max_age),
            None => unauthorized(ApiError::new(ErrorKind::Unauthenticated, "no credential")),
        };
    };
    let context = match RequestContext::resolve(state.identity.clone(), Some(credential), client).await {
        Ok(context) => context,
        Err(error) => return error.detail_response(),
    };
    match &context.caller {
        Caller::User(principal) => {
            let now = chrono::Utc::now().timestamp();
            let mut left = principal.session_expires_at.as_ref().map_or(0, |at| at.seconds - now);
            if let Some(exp) = &principal.access_expires_at {
                left = left.min(exp.seconds - now);
            }
            let left = Duration::from_secs(u64::try_from(left).unwrap_or_default());
            let user_id = principal.user.as_ref().map(|user| user.id.as_str()).unwrap_or_default();
            variables(Some(user_id), &principal.role, max_age.min(left))
        }
        Caller::Rejected(error) => unauthorized(error.clone()),
        Caller::Anonymous => unauthorized(ApiError::unauthenticated()),
    }
}

fn variables(user_id: Option<&str>, role: &str, max_age: Duration) -> Response {
    let cache = format!("max-age={}", max_age.as_secs());
    let mut body = serde_json::json!({ "X-Hasura-Role": role, "Cache-Control": cache });
    if let Some(user_id) = user_id {
        body["X-Hasura-User-Id"] = user_id.into();
    }
    let mut response = json(StatusCode::OK, &body);
    if let Ok(value) = header::HeaderValue::from_str(&cache) {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    response
}

fn unauthorized(error: ApiError) -> Response {
    let mut response = ApiError { kind: ErrorKind::Unauthenticated, ..error }.detail_response();
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_headers_are_read_case_insensitively() {
        let body = br#"{"headers": {"Authorization": "Bearer abc", "X-Other": 1}, "request": {"query": "{x}"}}"#;
        let headers = forwarded_headers(body).unwrap();
        assert_eq!(Credential::of_forwarded(&headers), Some(Credential::Bearer("abc".into())));
        let body = br#"{"headers": {"Cookie": "a=b; sessionid=tok; csrftoken=x"}}"#;
        assert_eq!(
            Credential::of_forwarded(&forwarded_headers(body).unwrap()),
            Some(Credential::Session("tok".into()))
        );
        assert_eq!(Credential::of_forwarded(&forwarded_headers(br#"{"headers": {}}"#).unwrap()), None);
        assert!(forwarded_headers(b"[1]").is_err());
    }
}
