//! Signing in with a provider from a single-page app (the walkthrough's
//! `/api/social/{provider}/`): begin with `GET` (the provider's URL and the `state`; the
//! sign-in's binding goes into an HttpOnly cookie), send the browser there, then `POST` the
//! `code` and `state` it comes back with — answered like `/api/login`, the session in the
//! `sessionid` cookie. Linked identities under `/api/identities/`.

use std::sync::Arc;

use poem::{Request, web::Data};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};

use super::{Answer, BadBody, CsrfHeader, Detail, ErrorResponse, FieldErrors, LoggedIn, bad_body, detail};
use crate::{
    context::{CsrfRule, RequestContext},
    error::ApiError,
    social::{self, Completed},
    state::AppState,
};

/// A provider users may sign in with.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct SocialProviderView {
    /// The `{provider}` of the routes.
    pub name: String,
    pub display_name: String,
    /// `oidc` or `github`.
    pub kind: String,
    /// The browser flow's start: `/auth/{provider}/login`.
    pub login_url: String,
}

/// A begun sign-in. Its binding is in the HttpOnly `social_binding` cookie, sent only to where
/// it completes (this route, or the facade's callback).
#[derive(Debug, Object)]
pub struct SocialBegin {
    /// Send the browser here.
    pub authorization_url: String,
    /// It comes back with the code; send both.
    pub state: String,
    pub redirect_uri: String,
}

/// The provider's answer, as the browser brought it back.
#[derive(Debug, Object)]
pub struct SocialCode {
    #[oai(validator(min_length = 1, max_length = 2048))]
    pub code: String,
    #[oai(default, validator(max_length = 128))]
    pub state: String,
    /// When sent, the one the sign-in began with.
    #[oai(default, validator(max_length = 2048))]
    pub redirect_uri: String,
}

/// A provider's account linked to the user.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct IdentityView {
    pub provider: String,
    pub subject: String,
    pub email: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; null if never used to log in.
    pub last_login_at: Option<String>,
}

/// A completed sign-in, or a body that is not `{"code", "state"}` JSON.
#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_body::<SocialAnswer>")]
pub enum SocialAnswer {
    /// `success`: logged in, the session in the HttpOnly `sessionid` cookie and a new
    /// `csrftoken`; or `linked`: the provider was added to the caller's account.
    #[oai(status = 200)]
    Ok(Json<LoggedIn>),
    #[oai(status = 400)]
    BadRequest(Json<Box<FieldErrors>>),
}

impl BadBody for SocialAnswer {
    const EXPECTED: &'static str = r#"{"code": ..., "state": ...}"#;

    fn bad_request(body: Json<Box<FieldErrors>>) -> Self {
        SocialAnswer::BadRequest(body)
    }
}

async fn context(state: &AppState, request: &Request, rule: CsrfRule) -> Result<RequestContext, ErrorResponse> {
    Ok(RequestContext::of_http(&state.identity, (&state.cookies, &state.proxies), request, rule).await?)
}

pub struct SocialApi;

/// This route's path, where its sign-ins' binding cookie goes.
fn route(provider: &str) -> String {
    format!("/api/social/{provider}/")
}

#[OpenApi]
impl SocialApi {
    /// The providers users may sign in with.
    #[oai(path = "/social/", method = "get")]
    async fn providers(&self, request: &Request, Data(state): Data<&Arc<AppState>>) -> Answer<Vec<SocialProviderView>> {
        let context = context(state, request, CsrfRule::NotNeeded).await?;
        let providers = social::providers(&context).await?;
        Ok(Json(providers.into_iter().map(SocialProviderView::from).collect()))
    }

    /// Begins a sign-in with `provider`: the URL to send the browser to and the `state` to send
    /// back with the code; the sign-in's binding goes into the HttpOnly `social_binding`
    /// cookie, which the completion needs. `redirect_uri`: a page of the app, one the
    /// provider's configuration lists — the app then posts the code here; empty: the facade's
    /// own `/auth/{provider}/callback`, which completes the sign-in itself and redirects to
    /// `next`. With `link=true` (logged in, address verified), the sign-in adds the provider
    /// to the caller's account.
    #[oai(path = "/social/:provider/", method = "get")]
    async fn begin(
        &self,
        request: &Request,
        Data(state): Data<&Arc<AppState>>,
        provider: Path<String>,
        #[oai(default)] redirect_uri: Query<String>,
        #[oai(default)] next: Query<String>,
        #[oai(default)] link: Query<bool>,
    ) -> Answer<SocialBegin> {
        let context = context(state, request, CsrfRule::NotNeeded).await?;
        if link.0 {
            context.principal().map_err(|_| social::needs_login())?;
        }
        let path = route(&provider.0);
        let begun = social::begin_in_browser(&context, provider.0, redirect_uri.0, next.0, link.0, &path).await?;
        Ok(Json(SocialBegin {
            authorization_url: begun.authorization_url,
            state: begun.state,
            redirect_uri: begun.redirect_uri,
        }))
    }

    /// Completes a sign-in with the provider's `code` and the `state` it began with (and the
    /// binding cookie the begin set), answered as `/api/login` is. Refusals name their reason
    /// in `detail`: the state or binding (401), the code or
    /// the provider's ID token (401), an address the provider did not verify or that a local
    /// account has and cannot be linked automatically (400: log in and link instead), an
    /// identity linked to someone else (409), too many failures from this client (429),
    /// a provider that cannot be reached (503). Needs `X-CSRFToken` (see `/api/csrf`).
    #[oai(path = "/social/:provider/", method = "post")]
    async fn complete(
        &self,
        request: &Request,
        Data(state): Data<&Arc<AppState>>,
        provider: Path<String>,
        body: Json<SocialCode>,
        #[oai(name = "X-CSRFToken")] _csrf: CsrfHeader,
    ) -> Result<SocialAnswer, ErrorResponse> {
        let context = context(state, request, CsrfRule::Always).await?;
        let browser = context.browser.as_ref().ok_or_else(ApiError::internal)?;
        let Json(SocialCode { code, state: social_state, redirect_uri }) = body;
        let path = route(&provider.0);
        let completed =
            social::complete_in_browser(&context, browser, provider.0, code, social_state, (redirect_uri, &path))
                .await?;
        let answer = match completed {
            Completed::LoggedIn { user, .. } => LoggedIn { detail: "success".into(), user: user.into() },
            Completed::Linked { .. } => {
                let user = context.principal()?.user.clone().ok_or_else(ApiError::internal)?;
                LoggedIn { detail: "linked".into(), user: user.into() }
            }
        };
        Ok(SocialAnswer::Ok(Json(answer)))
    }

    /// The caller's linked identities.
    #[oai(path = "/identities/", method = "get")]
    async fn identities(&self, request: &Request, Data(state): Data<&Arc<AppState>>) -> Answer<Vec<IdentityView>> {
        let context = context(state, request, CsrfRule::NotNeeded).await?;
        let identities = social::identities(&context).await?;
        Ok(Json(identities.into_iter().map(IdentityView::from).collect()))
    }

    /// Unlinks one of the caller's identities; refused (400, `LAST_LOGIN_METHOD`) when it is
    /// their last way to log in. A cookie-authenticated request needs `X-CSRFToken`.
    #[oai(path = "/identities/:provider/:subject/", method = "delete")]
    async fn unlink(
        &self,
        request: &Request,
        Data(state): Data<&Arc<AppState>>,
        provider: Path<String>,
        subject: Path<String>,
        #[oai(name = "X-CSRFToken")] _csrf: CsrfHeader,
    ) -> Answer<Detail> {
        let context = context(state, request, CsrfRule::CookieWrites).await?;
        social::unlink(&context, provider.0, subject.0).await?;
        Ok(detail("unlinked"))
    }
}
