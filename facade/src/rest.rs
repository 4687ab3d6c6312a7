//! The REST API under `/api` (poem-openapi): the Django REST Framework-style cookie session
//! endpoints a single-page app uses. Every response a route can send is in its response enum,
//! so `/api/openapi.json` documents exactly what is sent. Errors are `{"detail": "..."}`.

use std::sync::Arc;

use identity_proto::pb;
use poem::{Request, web::Data};
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};

use crate::{
    browser::{self, check_csrf, cookie_authenticated},
    context::RequestContext,
    error::{ApiError, ErrorKind},
    graphql::types::time,
    state::AppState,
};

/// What DRF says to an anonymous request.
const NOT_PROVIDED: &str = "Authentication credentials were not provided.";
/// Seconds a client should wait after a 503.
const RETRY_UNAVAILABLE: u64 = 1;

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

impl From<pb::User> for UserView {
    fn from(user: pb::User) -> Self {
        UserView {
            date_joined: time(user.date_joined.as_ref()).to_rfc3339(),
            last_login: user.last_login.as_ref().map(|at| time(Some(at)).to_rfc3339()),
            id: user.id,
            username: user.username,
            email: user.email,
            role: user.role,
            is_active: user.is_active,
        }
    }
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

#[derive(ApiResponse)]
pub enum CsrfResponse {
    /// The `csrftoken` cookie is set (kept if the client already had a valid one).
    #[oai(status = 200)]
    Ok(Json<Detail>),
    /// The identity service could not be asked whether cookies must be `Secure`.
    #[oai(status = 503)]
    Unavailable(Json<Detail>, #[oai(header = "Retry-After")] u64),
    #[oai(status = 500)]
    Internal(Json<Detail>),
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_login")]
pub enum LoginResponse {
    /// Logged in: a new session in the HttpOnly `sessionid` cookie, and a new `csrftoken`.
    #[oai(status = 200)]
    Ok(Json<LoggedIn>),
    /// The body is not `{"username", "password"}` JSON.
    #[oai(status = 400)]
    BadRequest(Json<Detail>),
    /// Wrong username or password, or an inactive account (one message for all).
    #[oai(status = 401)]
    Unauthorized(Json<Detail>),
    /// `X-CSRFToken` missing or not equal to the `csrftoken` cookie.
    #[oai(status = 403)]
    Forbidden(Json<Detail>),
    /// Too many failed logins; retry after `Retry-After` seconds.
    #[oai(status = 429)]
    TooManyRequests(Json<Detail>, #[oai(header = "Retry-After")] u64),
    #[oai(status = 503)]
    Unavailable(Json<Detail>, #[oai(header = "Retry-After")] u64),
    #[oai(status = 500)]
    Internal(Json<Detail>),
}

fn bad_login(error: poem::Error) -> LoginResponse {
    LoginResponse::BadRequest(detail(format!("send JSON {{\"username\": ..., \"password\": ...}}: {error}")))
}

#[derive(ApiResponse)]
pub enum LogoutResponse {
    /// The session (if any) is ended and `sessionid` cleared with `Max-Age=0`.
    #[oai(status = 200)]
    Ok(Json<Detail>),
    /// A cookie-authenticated logout without a valid `X-CSRFToken`.
    #[oai(status = 403)]
    Forbidden(Json<Detail>),
    #[oai(status = 503)]
    Unavailable(Json<Detail>, #[oai(header = "Retry-After")] u64),
    #[oai(status = 500)]
    Internal(Json<Detail>),
}

#[derive(ApiResponse)]
pub enum MeResponse {
    #[oai(status = 200)]
    Ok(Json<UserView>),
    /// No credential, or a dead one (the detail says why).
    #[oai(status = 401)]
    Unauthorized(Json<Detail>),
    #[oai(status = 503)]
    Unavailable(Json<Detail>, #[oai(header = "Retry-After")] u64),
    #[oai(status = 500)]
    Internal(Json<Detail>),
}

/// Maps an error onto a route's response enum: the arms it has, and 500 for the rest (which
/// the route cannot produce; logged if it ever does).
macro_rules! from_api_error {
    ($response:ident { $($kind:ident => $variant:ident),* $(,)? }) => {
        impl From<ApiError> for $response {
            fn from(error: ApiError) -> Self {
                match error.kind {
                    $(ErrorKind::$kind => from_api_error!(@arm $response $variant error),)*
                    ErrorKind::ServiceUnavailable => $response::Unavailable(detail(error.message), RETRY_UNAVAILABLE),
                    _ => {
                        if error.kind != ErrorKind::Internal {
                            tracing::error!(kind = ?error.kind, "undocumented error on a REST route");
                        }
                        $response::Internal(detail("internal error"))
                    }
                }
            }
        }
    };
    (@arm $response:ident TooManyRequests $error:ident) => {
        $response::TooManyRequests(detail($error.message), $error.retry_after.unwrap_or(1))
    };
    (@arm $response:ident $variant:ident $error:ident) => {
        $response::$variant(detail($error.message))
    };
}

from_api_error!(CsrfResponse {});
from_api_error!(LoginResponse {
    BadUserInput => BadRequest,
    Unauthenticated => Unauthorized,
    Forbidden => Forbidden,
    TooManyRequests => TooManyRequests,
});
from_api_error!(LogoutResponse { Forbidden => Forbidden });
from_api_error!(MeResponse { Unauthenticated => Unauthorized });

pub struct Api;

#[OpenApi]
impl Api {
    /// Sets the `csrftoken` cookie (readable by script). Send its value back in `X-CSRFToken`
    /// on every cookie-authenticated write.
    #[oai(path = "/csrf", method = "get")]
    async fn csrf(&self, request: &Request, Data(state): Data<&Arc<AppState>>) -> CsrfResponse {
        match state.cookies.ensure_csrf(request.cookie()).await {
            Ok(()) => CsrfResponse::Ok(detail("CSRF cookie set")),
            Err(error) => error.into(),
        }
    }

    /// Logs in with username (or email) and password: a new session in the HttpOnly
    /// `sessionid` cookie (SameSite=Lax, Path=/). Needs `X-CSRFToken` (see `/api/csrf`).
    #[oai(path = "/login", method = "post")]
    async fn login(
        &self,
        request: &Request,
        Data(state): Data<&Arc<AppState>>,
        body: Json<Credentials>,
    ) -> LoginResponse {
        let result = async {
            let context = RequestContext::of_http(&state.identity, &state.cookies, request).await?;
            let browser = context.browser.as_ref().ok_or_else(ApiError::unauthenticated)?;
            browser.csrf.map_err(browser::CsrfFailure::into_error)?;
            let Json(Credentials { username, password }) = body;
            browser::log_in(&context, browser, username, password).await
        }
        .await;
        match result {
            Ok(user) => LoginResponse::Ok(Json(LoggedIn { detail: "success".into(), user: user.into() })),
            Err(error) => error.into(),
        }
    }

    /// Ends the session and clears `sessionid` (`Max-Age=0`). Succeeds also without a session.
    /// A cookie-authenticated logout needs `X-CSRFToken`.
    #[oai(path = "/logout", method = "post")]
    async fn logout(&self, request: &Request, Data(state): Data<&Arc<AppState>>) -> LogoutResponse {
        let result = async {
            if cookie_authenticated(request) {
                check_csrf(request).map_err(browser::CsrfFailure::into_error)?;
            }
            let context = RequestContext::of_http(&state.identity, &state.cookies, request).await?;
            browser::log_out(&context).await
        }
        .await;
        match result {
            Ok(()) => LogoutResponse::Ok(detail("logged out")),
            Err(error) => error.into(),
        }
    }

    /// The current user (by `sessionid` cookie or `Authorization: Bearer`).
    #[oai(path = "/me", method = "get")]
    async fn me(&self, request: &Request, Data(state): Data<&Arc<AppState>>) -> MeResponse {
        let result = async {
            let context = RequestContext::of_http(&state.identity, &state.cookies, request).await?;
            if context.credential.is_none() {
                return Err(ApiError::new(ErrorKind::Unauthenticated, NOT_PROVIDED));
            }
            let principal = context.principal()?;
            principal.user.clone().ok_or_else(|| ApiError::new(ErrorKind::Internal, "internal error"))
        }
        .await;
        match result {
            Ok(user) => MeResponse::Ok(Json(user.into())),
            Err(error) => error.into(),
        }
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
        .catch_all_error(|error: poem::Error| async move {
            crate::pages::json(error.status(), &serde_json::json!({ "detail": error.to_string() }))
        })
}
