//! The browser's redirect flow of a provider sign-in:
//!
//! - `GET /auth/{provider}/login?next=/path` begins a sign-in, binds it to the browser (its
//!   binding in an HttpOnly cookie sent only to the callback) and redirects to the provider;
//! - `GET /auth/{provider}/link?next=/path` does the same for a logged-in user, to add the
//!   provider to their account;
//! - `GET /auth/{provider}/callback?code&state` has the identity service complete the sign-in
//!   of the `state` and the cookie's binding (a code and state from another browser complete
//!   nothing here), sets the session cookie (or links) and redirects to `next` (a path on this
//!   origin; anything else was replaced by `/` when it began). Sign-ins begun over REST or
//!   GraphQL with this callback as their redirect URI complete here too.
//!
//! A refusal is a small page naming the reason (`SOCIAL_STATE_INVALID`, ...), with the status
//! of the error table.

use std::sync::Arc;

use poem::{
    Request, Response, handler,
    http::{StatusCode, header},
    web::{Data, Path, Query},
};
use serde::Deserialize;

use crate::{
    browser::social_binding,
    context::{CsrfRule, RequestContext},
    error::{ApiError, ErrorKind},
    social::{self, Completed},
    state::AppState,
};

#[derive(Debug, Deserialize)]
pub struct BeginQuery {
    #[serde(default)]
    next: String,
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    #[serde(default)]
    code: String,
    #[serde(default)]
    state: String,
    /// The provider's refusal (`access_denied`: the user said no).
    error: Option<String>,
}

#[handler]
pub async fn login(
    request: &Request,
    Path(provider): Path<String>,
    Query(query): Query<BeginQuery>,
    Data(state): Data<&Arc<AppState>>,
) -> Response {
    begin(request, provider, query.next, false, state).await.unwrap_or_else(|error| refusal(&error))
}

#[handler]
pub async fn link_account(
    request: &Request,
    Path(provider): Path<String>,
    Query(query): Query<BeginQuery>,
    Data(state): Data<&Arc<AppState>>,
) -> Response {
    begin(request, provider, query.next, true, state).await.unwrap_or_else(|error| refusal(&error))
}

async fn begin(
    request: &Request,
    provider: String,
    next: String,
    for_link: bool,
    state: &AppState,
) -> Result<Response, ApiError> {
    let context =
        RequestContext::of_http(&state.identity, (&state.cookies, &state.proxies), request, CsrfRule::NotNeeded)
            .await?;
    if for_link {
        context.principal().map_err(|_| social::needs_login())?;
    }
    let path = social::callback_path(&provider);
    let begun = social::begin_in_browser(&context, provider, String::new(), next, for_link, &path).await?;
    Ok(redirect(&begun.authorization_url))
}

#[handler]
pub async fn callback(
    request: &Request,
    Path(provider): Path<String>,
    Query(query): Query<CallbackQuery>,
    Data(state): Data<&Arc<AppState>>,
) -> Response {
    let context =
        match RequestContext::of_http(&state.identity, (&state.cookies, &state.proxies), request, CsrfRule::NotNeeded)
            .await
        {
            Ok(context) => context,
            Err(error) => return refusal(&error),
        };
    let Some(browser) = context.browser.as_ref() else { return refusal(&ApiError::internal()) };
    let path = social::callback_path(&provider);
    let bound = !social_binding(&browser.jar).is_empty();
    if let Some(error) = query.error {
        // The provider said no: this sign-in is over for the browser.
        browser.cookies.clear_social_binding(&browser.jar, &path);
        let error: String = error.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
        return refusal(&ApiError {
            reason: Some("SOCIAL_DENIED".into()),
            ..ApiError::new(ErrorKind::Unauthenticated, format!("the provider did not sign you in ({error})"))
        });
    }
    // Login CSRF: a code and state another browser obtained do not log this one in (without
    // this browser's binding the identity service finds no sign-in either).
    if query.state.is_empty() || !bound {
        tracing::info!(%provider, "social login refused: the state is not this browser's");
        return refusal(&ApiError {
            reason: Some("SOCIAL_STATE_INVALID".into()),
            ..ApiError::new(
                ErrorKind::Unauthenticated,
                "the sign-in was not started here or has expired; start it again",
            )
        });
    }
    let completed =
        social::complete_in_browser(&context, browser, provider, query.code, query.state, (String::new(), &path)).await;
    match completed {
        Ok(Completed::LoggedIn { next, .. } | Completed::Linked { next, .. }) => redirect(&next),
        Err(error) => refusal(&error),
    }
}

fn redirect(location: &str) -> Response {
    Response::builder().status(StatusCode::FOUND).header(header::LOCATION, location).finish()
}

/// A refused sign-in, as a page a person reads: what went wrong, the reason code, a way back.
fn refusal(error: &ApiError) -> Response {
    let reason = error.reason.as_deref().unwrap_or(error.kind.graphql_code());
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign-in failed</title></head>\
         <body><h1>Sign-in failed</h1><p>{}</p><p><code id=\"reason\">{}</code></p>\
         <p><a href=\"/\">Back to the start</a></p></body></html>\n",
        escape(&error.message),
        escape(reason)
    );
    let mut response = Response::builder()
        .status(error.kind.http_status())
        .content_type("text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(body);
    if let Some(seconds) = error.retry_after()
        && let Ok(value) = header::HeaderValue::from_str(&seconds.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
