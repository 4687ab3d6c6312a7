//! The REST API under `/api` (poem-openapi): the Django REST Framework-style cookie session
//! endpoints a single-page app uses, and dj-rest-auth's account routes (`accounts`). Every
//! response a route can send is in its response enum, so `/api/openapi.json` documents exactly
//! what is sent. Errors are `{"detail": "..."}`; a 400 also lists the bad fields, as
//! dj-rest-auth does.

pub mod accounts;
pub mod social;

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

/// A refused request: `detail`, and for bad fields dj-rest-auth's lists, each named as in the
/// request body (`{"detail": "...", "new_password2": ["The two password fields didn’t
/// match."]}`); `non_field_errors` for what is wrong with the request as a whole.
#[derive(Debug, Default, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct FieldErrors {
    pub detail: String,
    pub username: Option<Vec<String>>,
    pub email: Option<Vec<String>>,
    pub password: Option<Vec<String>>,
    pub password1: Option<Vec<String>>,
    pub password2: Option<Vec<String>>,
    pub old_password: Option<Vec<String>>,
    pub new_password1: Option<Vec<String>>,
    pub new_password2: Option<Vec<String>>,
    pub uid: Option<Vec<String>>,
    pub token: Option<Vec<String>>,
    pub key: Option<Vec<String>>,
    pub non_field_errors: Option<Vec<String>>,
}

impl FieldErrors {
    fn detail(message: impl Into<String>) -> Json<Box<FieldErrors>> {
        Json(Box::new(FieldErrors { detail: message.into(), ..FieldErrors::default() }))
    }
}

/// The answer of an operation to a body that is not the JSON it expects, whatever its media
/// type: a 400 (poem-openapi would answer 415 to another media type).
trait BadBody {
    /// The JSON the operation expects, for the message.
    const EXPECTED: &'static str;

    fn bad_request(body: Json<Box<FieldErrors>>) -> Self;
}

fn bad_body<T: BadBody>(error: poem::Error) -> T {
    T::bad_request(FieldErrors::detail(format!("send JSON {}: {error}", T::EXPECTED)))
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
    /// True once the user followed a link sent to `email` (GraphQL's `verified`).
    pub email_verified: bool,
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
    /// The request is malformed: a body that is not the expected JSON, a field out of bounds
    /// (named in the field lists).
    #[oai(status = 400)]
    BadRequest(Json<Box<FieldErrors>>),
    /// No credential, a dead one (the detail says why), or wrong login credentials (one
    /// message for every failed login).
    #[oai(status = 401)]
    Unauthorized(Json<Detail>),
    /// `X-CSRFToken` missing or not equal to the `csrftoken` cookie; or, for a login, the right
    /// password for an address not yet verified (`E-mail is not verified.`).
    #[oai(status = 403)]
    Forbidden(Json<Detail>),
    #[oai(status = 404)]
    NotFound(Json<Detail>),
    #[oai(status = 409)]
    Conflict(Json<Detail>),
    /// Too many failed logins, or too many requests for mail; retry after `Retry-After`
    /// seconds.
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
        let message = error.message;
        match error.kind {
            ErrorKind::BadUserInput => ErrorResponse::BadRequest(FieldErrors::detail(message)),
            ErrorKind::Unauthenticated => ErrorResponse::Unauthorized(detail(message)),
            ErrorKind::Forbidden | ErrorKind::EmailNotVerified => ErrorResponse::Forbidden(detail(message)),
            ErrorKind::NotFound => ErrorResponse::NotFound(detail(message)),
            ErrorKind::Conflict => ErrorResponse::Conflict(detail(message)),
            ErrorKind::TooManyRequests => ErrorResponse::TooManyRequests(detail(message), retry_after),
            ErrorKind::ServiceUnavailable => ErrorResponse::Unavailable(detail(message), retry_after),
            ErrorKind::Internal => ErrorResponse::Internal(detail(message)),
        }
    }
}

type Answer<T> = Result<Json<T>, ErrorResponse>;

/// A login, or a body that is not `{"username", "password"}` JSON (whatever its media type).
#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_body::<LoginAnswer>")]
pub enum LoginAnswer {
    /// Logged in: a new session in the HttpOnly `sessionid` cookie, and a new `csrftoken`.
    #[oai(status = 200)]
    Ok(Json<LoggedIn>),
    /// The body is not `{"username", "password"}` JSON.
    #[oai(status = 400)]
    BadRequest(Json<Box<FieldErrors>>),
}

impl BadBody for LoginAnswer {
    const EXPECTED: &'static str = r#"{"username": ..., "password": ...}"#;

    fn bad_request(body: Json<Box<FieldErrors>>) -> Self {
        LoginAnswer::BadRequest(body)
    }
}

/// Logs in and hands the new session to the browser (`login::log_in`): what `/api/login`
/// answers, and a sign-up too when the new user may log in at once. The caller has checked
/// the CSRF verdict.
async fn open_session(context: &RequestContext, username: String, password: String) -> Result<LoggedIn, ApiError> {
    let browser = context.browser.as_ref().ok_or_else(ApiError::internal)?;
    let user = login::log_in(context, browser, username, password).await?;
    Ok(LoggedIn { detail: "success".into(), user: user.into() })
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
        let Json(Credentials { username, password }) = body;
        Ok(LoginAnswer::Ok(Json(open_session(&context, username, password).await?)))
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

/// The API and its OpenAPI document.
fn service() -> poem_openapi::OpenApiService<(Api, accounts::AccountsApi, social::SocialApi), ()> {
    poem_openapi::OpenApiService::new(
        (Api, accounts::AccountsApi, social::SocialApi),
        "Identity facade REST API",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Cookie sessions for browsers, the Django REST Framework way: GET /api/csrf, then POST \
             /api/login with X-CSRFToken, then call /graphql with the sessionid cookie. Accounts by \
             email the dj-rest-auth way: /api/registration/, /api/password/reset/, \
             /api/password/change/, and /api/email/change/. Signing in with a provider from a \
             single-page app: GET /api/social/{provider}/, then POST the code and state to it. Errors are {\"detail\": \"...\"}; a 400 \
             also lists the bad fields.",
    )
    .server("/api")
}

/// The API, its OpenAPI document and its docs UI, to be nested at `/api`. A trailing slash
/// is trimmed: dj-rest-auth's routes end with one (`/api/registration/`), poem-openapi's never
/// do. poem's own errors (unknown path, wrong method) are `{"detail"}` JSON too.
pub fn routes() -> impl poem::Endpoint {
    use poem::{
        EndpointExt,
        middleware::{NormalizePath, TrailingSlash},
    };
    let service = service();
    poem::Route::new()
        .at("/openapi.json", service.spec_endpoint())
        .nest("/docs", service.swagger_ui())
        .nest("/", service)
        .with(NormalizePath::new(TrailingSlash::Trim))
        .catch_all_error(|error: poem::Error| async move { crate::error::poem_refusal(error) })
}

#[cfg(test)]
mod tests {
    use poem::{Endpoint, http::Method};

    use super::*;

    #[test]
    fn every_route_documents_each_status_it_answers() {
        let document: serde_json::Value = serde_json::from_str(&service().spec()).unwrap();
        let routes = [
            ("/registration", "201"),
            ("/registration/verify-email", "200"),
            ("/registration/resend-email", "200"),
            ("/password/reset", "200"),
            ("/password/reset/confirm", "200"),
            ("/password/change", "200"),
            ("/email/change", "200"),
            ("/email/change/confirm", "200"),
        ];
        for (path, success) in routes {
            let responses = &document["paths"][path]["post"]["responses"];
            for status in [success, "400", "401", "403", "409", "429", "500", "503"] {
                assert!(responses.get(status).is_some(), "POST {path} does not document {status}");
            }
        }
        let user = &document["components"]["schemas"]["UserView"]["properties"];
        assert!(user.get("emailVerified").is_some(), "{user}");
    }

    #[tokio::test]
    async fn dj_rest_auths_trailing_slashes_reach_the_routes() {
        let routes = routes();
        for path in ["/registration/", "/registration", "/password/reset/confirm/", "/email/change/confirm/"] {
            let request = poem::Request::builder().method(Method::POST).uri_str(path).body("not json");
            let response = routes.get_response(request).await;
            // Routed: refused for its body (this test has no state either), not a 404.
            assert_eq!(response.status(), poem::http::StatusCode::BAD_REQUEST, "{path}");
        }
        let response = routes.get_response(poem::Request::builder().uri_str("/no/such/").finish()).await;
        assert_eq!(response.status(), poem::http::StatusCode::NOT_FOUND);
    }
}
