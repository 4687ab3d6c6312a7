//! The REST API under `/api` (poem-openapi): the Django REST Framework-style cookie session
//! endpoints a single-page app uses. Every response a route can send is in its response enum,
//! so `/api/openapi.json` documents exactly what is sent. Errors are `{"detail": "..."}`.

use std::sync::Arc;

use poem::{Request, web::Data};
use poem_openapi::{ApiResponse, Object, OpenApi, param::Header, payload::Json};

use crate::{
    context::{CsrfRule, RequestContext},
    error::{ApiError, ErrorKind},
    login,
    state::AppState,
};

/// What DRF says to an anonymous request.
const NOT_PROVIDED: &str = "Authentication credentials were not provided.";

/// An error, or a one-line confirmation.
#[derive(Debug, Object)]
pub struct Detail {
    pub detail: String,
}

fn detail(message: impl Into<String>) -> Json<Detail> {
    Json(Detail { detail: message.into() })
}

/// A user as the REST API shows it (the GraphQL `User` fields).
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub email: String,
    /// `user` or `manager`.
    pub role: String,
    pub is_active: bool,
    /// RFC 3339.
    pub date_joined: String,
    /// RFC 3339; null before the first login.
    pub last_login: Option<String>,
}

/// The CSRF token, as the `csrftoken` cookie also holds it (for clients that cannot read
/// cookies, such as this API's Swagger UI: paste it into `X-CSRFToken`).
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct CsrfToken {
    /// `CSRF cookie set`.
    pub detail: String,
    pub csrf_token: String,
}

#[derive(Debug, Object)]
pub struct Credentials {
    /// Username or email.
    #[oai(validator(min_length = 1, max_length = 254))]
    pub username: String,
    #[oai(validator(min_length = 1, max_length = 1024))]
    pub password: String,
}

#[derive(Debug, Object)]
pub struct LoggedIn {
    /// `success`.
    pub detail: String,
    pub user: UserView,
}

/// Every error a route of `/api` answers, rendered from the error table. (A body that is not
/// the JSON a route expects is refused by poem-openapi before the route runs: a 400 of the
/// same shape.)
#[derive(ApiResponse)]
pub enum ErrorResponse {
    /// The request is malformed: a body that is not the expected JSON, a field out of bounds.
    #[oai(status = 400)]
    BadRequest(Json<Detail>),
    /// No credential, a dead one (the detail says why), or wrong login credentials (one
    /// message for every failed login).
    #[oai(status = 401)]
    Unauthorized(Json<Detail>),
    /// `X-CSRFToken` missing or not equal to the `csrftoken` cookie.
    #[oai(status = 403)]
    Forbidden(Json<Detail>),
    #[oai(status = 404)]
    NotFound(Json<Detail>),
    #[oai(status = 409)]
    Conflict(Json<Detail>),
    /// Too many failed logins; retry after `Retry-After` seconds.
    #[oai(status = 429)]
    TooManyRequests(Json<Detail>, #[oai(header = "Retry-After")] u64),
    /// The identity service cannot be reached; retry after `Retry-After` seconds.
    #[oai(status = 503)]
    Unavailable(Json<Detail>, #[oai(header = "Retry-After")] u64),
    #[oai(status = 500)]
    Internal(Json<Detail>),
}

impl From<ApiError> for ErrorResponse {
    fn from(error: ApiError) -> Self {
        let retry_after = error.retry_after().unwrap_or(1);
        let body = detail(error.message);
        match error.kind {
            ErrorKind::BadUserInput => ErrorResponse::BadRequest(body),
            ErrorKind::Unauthenticated => ErrorResponse::Unauthorized(body),
            ErrorKind::Forbidden => ErrorResponse::Forbidden(body),
            ErrorKind::NotFound => ErrorResponse::NotFound(body),
            ErrorKind::Conflict => ErrorResponse::Conflict(body),
            ErrorKind::TooManyRequests => ErrorResponse::TooManyRequests(body, retry_after),
            ErrorKind::ServiceUnavailable => ErrorResponse::Unavailable(body, retry_after),
            ErrorKind::Internal => ErrorResponse::Internal(body),
        }
    }
}

type Answer<T> = Result<Json<T>, ErrorResponse>;

/// A login, or a body that is not `{"username", "password"}` JSON (whatever its media type).
#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_login")]
pub enum LoginAnswer {
    /// Logged in: a new session in the HttpOnly `sessionid` cookie, and a new `csrftoken`.
    #[oai(status = 200)]
    Ok(Json<LoggedIn>),
    /// The body is not `{"username", "password"}` JSON.
    #[oai(status = 400)]
    BadRequest(Json<Detail>),
}

fn bad_login(error: poem::Error) -> LoginAnswer {
    LoginAnswer::BadRequest(detail(format!("send JSON {{\"username\": ..., \"password\": ...}}: {error}")))
}

/// `X-CSRFToken`, declared so that the document (and Swagger UI's "Try it out") shows it; the
/// request context reads and checks it, with the other credential rules, so a missing one is
/// the same 403 everywhere.
type CsrfHeader = Header<Option<String>>;

pub struct Api;

#[OpenApi]
impl Api {
    /// Sets the `csrftoken` cookie (readable by script) unless it is already set, and shows
    /// its value. Send it back in `X-CSRFToken` on every cookie-authenticated write.
    #[oai(path = "/csrf", method = "get")]
    async fn csrf(&self, request: &Request, Data(state): Data<&Arc<AppState>>) -> Answer<CsrfToken> {
        let csrf_token = state.cookies.ensure_csrf(request.cookie()).await?;
        Ok(Json(CsrfToken { detail: "CSRF cookie set".into(), csrf_token }))
    }

    /// Logs in with username (or email) and password: a new session in the HttpOnly
    /// `sessionid` cookie (SameSite=Lax, Path=/), and a new `csrftoken`. Needs `X-CSRFToken`
    /// (see `/api/csrf`).
    #[oai(path = "/login", method = "post")]
    async fn login(
        &self,
        request: &Request,
        Data(state): Data<&Arc<AppState>>,
        body: Json<Credentials>,
        #[oai(name = "X-CSRFToken")] _csrf: CsrfHeader,
    ) -> Result<LoginAnswer, ErrorResponse> {
        let context =
            RequestContext::of_http(&state.identity, (&state.cookies, &state.proxies), request, CsrfRule::Always)
                .await?;
        let browser = context.browser.as_ref().ok_or_else(ApiError::internal)?;
        let Json(Credentials { username, password }) = body;
        let user = login::log_in(&context, browser, username, password).await?;
        Ok(LoginAnswer::Ok(Json(LoggedIn { detail: "success".into(), user: user.into() })))
    }

    /// Ends the session and clears `sessionid` (`Max-Age=0`). Succeeds also without a session.
    /// A cookie-authenticated logout needs `X-CSRFToken`.
    #[oai(path = "/logout", method = "post")]
    async fn logout(
        &self,
        request: &Request,
        Data(state): Data<&Arc<AppState>>,
        #[oai(name = "X-CSRFToken")] _csrf: CsrfHeader,
    ) -> Answer<Detail> {
        let context =
            RequestContext::of_http(&state.identity, (&state.cookies, &state.proxies), request, CsrfRule::CookieWrites)
                .await?;
        login::log_out(&context).await?;
        Ok(detail("logged out"))
    }

    /// The current user (by `sessionid` cookie or `Authorization: Bearer`).
    #[oai(path = "/me", method = "get")]
    async fn me(&self, request: &Request, Data(state): Data<&Arc<AppState>>) -> Answer<UserView> {
        let context =
            RequestContext::of_http(&state.identity, (&state.cookies, &state.proxies), request, CsrfRule::NotNeeded)
                .await?;
        if context.credential.is_none() {
            return Err(ApiError::new(ErrorKind::Unauthenticated, NOT_PROVIDED).into());
        }
        let user = context.principal()?.user.clone().ok_or_else(ApiError::internal)?;
        Ok(Json(user.into()))
    }
}

/// The API, its OpenAPI document and its docs UI, to be nested at `/api`. poem's own errors
/// (unknown path, wrong method) are `{"detail"}` JSON too.
pub fn routes() -> impl poem::Endpoint {
    use poem::EndpointExt;
    let service = poem_openapi::OpenApiService::new(Api, "Identity facade REST API", env!("CARGO_PKG_VERSION"))
        .description(
            "Cookie sessions for browsers, the Django REST Framework way: GET /api/csrf, then POST \
             /api/login with X-CSRFToken, then call /graphql with the sessionid cookie. Errors are \
             {\"detail\": \"...\"}.",
        )
        .server("/api");
    poem::Route::new()
        .at("/openapi.json", service.spec_endpoint())
        .nest("/docs", service.swagger_ui())
        .nest("/", service)
        .catch_all_error(|error: poem::Error| async move { crate::error::poem_refusal(error) })
}
