//! Browsers: the `sessionid` cookie and Django-style CSRF protection (double submit: a
//! cookie-authenticated write must carry `X-CSRFToken` equal to the `csrftoken` cookie, which
//! only same-site script can read). Cookies are read and written through poem's cookie jar.
//!
//! Written here rather than with poem's `Csrf` middleware: that one keeps an encrypted token
//! in its cookie and expects a different value in the request, while the contract (and every
//! Django/DRF front end) sends the cookie's own value back in `X-CSRFToken`.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use poem::{
    Request,
    web::cookie::{Cookie, CookieJar, SameSite},
};
use rand::RngCore;
use subtle::ConstantTimeEq;

use identity_proto::pb;

use crate::{
    context::{Caller, Credential, RequestContext, credential},
    discovery::Discovery,
    error::{ApiError, ErrorKind},
};

pub const SESSION_COOKIE: &str = "sessionid";
pub const CSRF_COOKIE: &str = "csrftoken";
pub const CSRF_HEADER: &str = "x-csrftoken";
/// Django's CSRF cookie age: a year.
const CSRF_MAX_AGE: Duration = Duration::from_secs(365 * 24 * 3600);

/// `FACADE_COOKIE_SECURE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CookieSecure {
    /// Secure unless the issuer (`IDENTITY_ISSUER`) is plain-http localhost.
    Auto,
    Always,
    Never,
}

/// Writes the cookies, with the attributes of the contract.
#[derive(Clone, Debug)]
pub struct Cookies {
    secure: CookieSecure,
    discovery: Discovery,
}

impl Cookies {
    pub fn new(secure: CookieSecure, discovery: Discovery) -> Self {
        Cookies { secure, discovery }
    }

    async fn secure(&self) -> Result<bool, ApiError> {
        match self.secure {
            CookieSecure::Always => Ok(true),
            CookieSecure::Never => Ok(false),
            CookieSecure::Auto => Ok(!self.discovery.get().await?.issuer_is_local_http()),
        }
    }

    fn build(name: &str, value: &str, max_age: Duration, http_only: bool, secure: bool) -> Cookie {
        let mut cookie = Cookie::new_with_str(name, value);
        cookie.set_path("/");
        cookie.set_same_site(SameSite::Lax);
        cookie.set_http_only(http_only);
        cookie.set_secure(secure);
        cookie.set_max_age(max_age);
        cookie
    }

    /// The session cookie for a new session, living as long as the session may.
    pub async fn set_session(&self, jar: &CookieJar, token: &str, max_age: Duration) -> Result<(), ApiError> {
        jar.add(Self::build(SESSION_COOKIE, token, max_age, true, self.secure().await?));
        Ok(())
    }

    /// Clears the session cookie (`Max-Age=0`, same path and attributes).
    pub async fn clear_session(&self, jar: &CookieJar) {
        // Attributes matter little on a removal; without the identity service, use the last
        // known answer.
        let secure = match self.secure {
            CookieSecure::Auto => self.discovery.last().is_some_and(|settings| !settings.issuer_is_local_http()),
            other => other == CookieSecure::Always,
        };
        jar.add(Self::build(SESSION_COOKIE, "", Duration::ZERO, true, secure));
    }

    /// Sets a fresh CSRF token (readable by script), as on first visit and after each login.
    pub async fn rotate_csrf(&self, jar: &CookieJar) -> Result<String, ApiError> {
        let token = new_csrf_token();
        jar.add(Self::build(CSRF_COOKIE, &token, CSRF_MAX_AGE, false, self.secure().await?));
        Ok(token)
    }

    /// Keeps a well-formed CSRF cookie the client already has; sets one otherwise.
    pub async fn ensure_csrf(&self, jar: &CookieJar) -> Result<(), ApiError> {
        let present = jar.get(CSRF_COOKIE).is_some_and(|cookie| well_formed(cookie.value_str()));
        if !present {
            self.rotate_csrf(jar).await?;
        }
        Ok(())
    }
}

/// 256 random bits, URL-safe base64 (43 characters).
pub fn new_csrf_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn well_formed(token: &str) -> bool {
    token.len() == 43 && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Why a write was refused by the CSRF check (DRF's wording).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrfFailure {
    CookieMissing,
    TokenMissing,
    TokenIncorrect,
}

impl CsrfFailure {
    pub fn into_error(self) -> ApiError {
        let message = match self {
            CsrfFailure::CookieMissing => "CSRF Failed: CSRF cookie not set.",
            CsrfFailure::TokenMissing => "CSRF Failed: CSRF token missing.",
            CsrfFailure::TokenIncorrect => "CSRF Failed: CSRF token incorrect.",
        };
        ApiError { reason: Some("CSRF_FAILED".into()), ..ApiError::new(ErrorKind::Forbidden, message) }
    }
}

/// The double-submit check: `X-CSRFToken` equals the `csrftoken` cookie, compared in constant
/// time.
pub fn check_csrf(request: &Request) -> Result<(), CsrfFailure> {
    double_submit(request.cookie(), request.header(CSRF_HEADER))
}

fn double_submit(jar: &CookieJar, header: Option<&str>) -> Result<(), CsrfFailure> {
    let cookie = jar.get(CSRF_COOKIE).ok_or(CsrfFailure::CookieMissing)?;
    let cookie = cookie.value_str();
    if !well_formed(cookie) {
        return Err(CsrfFailure::CookieMissing);
    }
    let header = header.filter(|value| !value.is_empty()).ok_or(CsrfFailure::TokenMissing)?;
    if bool::from(header.as_bytes().ct_eq(cookie.as_bytes())) { Ok(()) } else { Err(CsrfFailure::TokenIncorrect) }
}

/// Whether the request is authenticated by the session cookie (no bearer token): only such
/// requests can be forged cross-site.
pub fn cookie_authenticated(request: &Request) -> bool {
    matches!(credential(request), Some(Credential::Session(_)))
}

/// The browser side of a request, for resolvers that set or clear cookies (`login`, `logout`).
#[derive(Clone)]
pub struct BrowserContext {
    pub jar: CookieJar,
    pub cookies: Cookies,
    /// The request passed the CSRF check, or needs none (bearer).
    pub csrf: Result<(), CsrfFailure>,
}

impl std::fmt::Debug for BrowserContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the cookies' values.
        f.debug_struct("BrowserContext").field("csrf", &self.csrf).finish_non_exhaustive()
    }
}

impl BrowserContext {
    /// `credential` is the request's, as `context::credential` read it.
    pub fn of(request: &Request, cookies: &Cookies, credential: Option<&Credential>) -> Self {
        let csrf = if matches!(credential, Some(Credential::Bearer(_))) { Ok(()) } else { check_csrf(request) };
        BrowserContext { jar: request.cookie().clone(), cookies: cookies.clone(), csrf }
    }
}

/// Logs in and hands the new session to the browser: the session cookie set, the CSRF token
/// rotated, and the session the browser held before (if any) ended — every login is a new
/// session.
pub async fn log_in(
    request: &RequestContext,
    browser: &BrowserContext,
    username: String,
    password: String,
) -> Result<pb::User, ApiError> {
    let login = request.identity.login(request.anonymous(pb::LoginRequest { username, password })).await?;
    if let (Some(Credential::Session(_)), Caller::User(_)) = (&request.credential, &request.caller)
        && let Ok(message) = request.as_caller(pb::LogoutRequest {})
        && let Err(status) = request.identity.auth().logout(message).await
    {
        tracing::warn!(code = ?status.code(), "could not end the session replaced by a login");
    }
    let expires = login.refresh_expires_at.map(|at| at.seconds).unwrap_or_default();
    let max_age = u64::try_from(expires - chrono::Utc::now().timestamp()).unwrap_or_default();
    browser.cookies.set_session(&browser.jar, &login.session_token, Duration::from_secs(max_age)).await?;
    browser.cookies.rotate_csrf(&browser.jar).await?;
    login.user.ok_or_else(|| ApiError::new(ErrorKind::Internal, "internal error"))
}

/// Ends the request's session, if it has a live one, and clears the session cookie. When the
/// identity service cannot be asked the cookie stays, so the user can retry and the session
/// is not left alive behind a cleared cookie.
pub async fn log_out(request: &RequestContext) -> Result<(), ApiError> {
    if let Caller::User(_) = request.caller {
        end(request, request.as_caller(pb::LogoutRequest {})?).await?;
    }
    if let Some(browser) = &request.browser {
        // A bearer request may carry a session cookie as well: that session ends too.
        if matches!(request.credential, Some(Credential::Bearer(_)))
            && let Some(cookie) = browser.jar.get(SESSION_COOKIE).filter(|cookie| !cookie.value_str().is_empty())
            && let Ok(token) = tonic::metadata::MetadataValue::try_from(cookie.value_str())
        {
            let mut message = request.anonymous(pb::LogoutRequest {});
            message.metadata_mut().insert("x-session-token", token);
            end(request, message).await?;
        }
        browser.cookies.clear_session(&browser.jar).await;
    }
    Ok(())
}

/// `Logout`; a session that ended meanwhile is logged out all the same.
async fn end(request: &RequestContext, message: tonic::Request<pb::LogoutRequest>) -> Result<(), ApiError> {
    match request.identity.auth().logout(message).await {
        Ok(_) => Ok(()),
        Err(status) if status.code() == tonic::Code::Unauthenticated => Ok(()),
        Err(status) => Err(status.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(cookie: Option<&str>, header: Option<&str>) -> Result<(), CsrfFailure> {
        let jar: CookieJar = cookie.unwrap_or_default().parse().unwrap_or_default();
        double_submit(&jar, header)
    }

    #[test]
    fn the_header_must_equal_the_cookie() {
        let token = new_csrf_token();
        let other = new_csrf_token();
        assert_eq!(token.len(), 43);
        assert_ne!(token, other);
        let cookie = format!("csrftoken={token}");
        assert_eq!(check(Some(&cookie), Some(&token)), Ok(()));
        assert_eq!(check(Some(&cookie), Some(&other)), Err(CsrfFailure::TokenIncorrect));
        assert_eq!(check(Some(&cookie), None), Err(CsrfFailure::TokenMissing));
        assert_eq!(check(None, Some(&token)), Err(CsrfFailure::CookieMissing));
        // An empty cookie matched by an empty header is no proof of anything.
        assert_eq!(check(Some("csrftoken="), Some("")), Err(CsrfFailure::CookieMissing));
    }
}
