//! Browsers: writing the `sessionid` and `csrftoken` cookies, and Django-style CSRF protection
//! (double submit: a cookie-authenticated write must carry `X-CSRFToken` equal to the
//! `csrftoken` cookie, which only same-site script can read). Cookies are read and written
//! through poem's cookie jar. Logging in and out is `login`'s.
//!
//! Written here rather than with poem's `Csrf` middleware: that one keeps an encrypted token
//! in its cookie and expects a different value in the request, while the contract (and every
//! Django/DRF front end) sends the cookie's own value back in `X-CSRFToken`.

use std::{sync::OnceLock, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use poem::{
    Request,
    web::cookie::{Cookie, CookieJar, SameSite},
};
use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::{
    config::CookieSecure,
    credential::{Credential, SESSION_COOKIE},
    discovery::Discovery,
    error::{ApiError, ErrorKind},
};

pub const CSRF_COOKIE: &str = "csrftoken";
pub const CSRF_HEADER: &str = "x-csrftoken";
/// The binding of a provider sign-in begun by this browser: HttpOnly, sent only to where the
/// sign-in completes (`/auth/{provider}/callback`, `/api/social/{provider}/` or `/graphql`).
pub const SOCIAL_BINDING_COOKIE: &str = "social_binding";
/// As long as a sign-in may take at the provider (the identity service's limit too).
const SOCIAL_STATE_MAX_AGE: Duration = Duration::from_secs(10 * 60);
/// Django's CSRF cookie age: a year.
const CSRF_MAX_AGE: Duration = Duration::from_secs(365 * 24 * 3600);

/// Writes the cookies, with the attributes of the contract.
#[derive(Clone, Debug)]
pub struct Cookies {
    discovery: Discovery,
    /// `auto`'s verdict, decided once: at the first cookie written after the identity service
    /// told us its issuer.
    decided: std::sync::Arc<OnceLock<bool>>,
}

impl Cookies {
    pub fn new(policy: CookieSecure, discovery: Discovery) -> Self {
        let decided = OnceLock::new();
        match policy {
            CookieSecure::Always => drop(decided.set(true)),
            CookieSecure::Never => drop(decided.set(false)),
            CookieSecure::Auto => {}
        }
        Cookies { discovery, decided: std::sync::Arc::new(decided) }
    }

    /// Whether cookies carry `Secure`; `auto` asks the identity service for its issuer once.
    async fn secure(&self) -> Result<bool, ApiError> {
        if let Some(secure) = self.decided.get() {
            return Ok(*secure);
        }
        let secure = !self.discovery.get().await?.issuer_is_local_http();
        Ok(*self.decided.get_or_init(|| secure))
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

    /// Clears the session cookie (`Max-Age=0`, same path and attributes). Without a verdict on
    /// `Secure` yet (the identity service never answered), the removal goes without it:
    /// attributes matter little on a removal.
    pub fn clear_session(&self, jar: &CookieJar) {
        let secure = self.decided.get().copied().unwrap_or(false);
        jar.add(Self::build(SESSION_COOKIE, "", Duration::ZERO, true, secure));
    }

    /// Sets a fresh CSRF token (readable by script), as on first visit and after each login.
    pub async fn rotate_csrf(&self, jar: &CookieJar) -> Result<String, ApiError> {
        let token = new_csrf_token();
        jar.add(Self::build(CSRF_COOKIE, &token, CSRF_MAX_AGE, false, self.secure().await?));
        Ok(token)
    }

    /// Binds a provider sign-in to this browser: its binding, HttpOnly, sent only to `path`,
    /// where the sign-in completes. SameSite=Lax: the provider's redirect back to the callback
    /// is a top-level GET.
    pub async fn set_social_binding(&self, jar: &CookieJar, path: &str, binding: &str) -> Result<(), ApiError> {
        let mut cookie = Self::build(SOCIAL_BINDING_COOKIE, binding, SOCIAL_STATE_MAX_AGE, true, self.secure().await?);
        cookie.set_path(path);
        jar.add(cookie);
        Ok(())
    }

    /// Removes the binding cookie of `path`: the sign-in is over for this browser. Read the
    /// binding first (`social_binding`): the jar answers with the removal once it holds it.
    pub fn clear_social_binding(&self, jar: &CookieJar, path: &str) {
        let secure = self.decided.get().copied().unwrap_or(false);
        let mut cookie = Self::build(SOCIAL_BINDING_COOKIE, "", Duration::ZERO, true, secure);
        cookie.set_path(path);
        jar.add(cookie);
    }

    /// Keeps a well-formed CSRF cookie the client already has; sets one otherwise. The token
    /// the client now holds.
    pub async fn ensure_csrf(&self, jar: &CookieJar) -> Result<String, ApiError> {
        match jar.get(CSRF_COOKIE).map(|cookie| cookie.value_str().to_owned()) {
            Some(token) if well_formed(&token) => Ok(token),
            _ => self.rotate_csrf(jar).await,
        }
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

/// The CSRF verdict on a request with `credential`: a bearer request needs no token (a browser
/// never adds `Authorization` by itself); any other must pass the double-submit check,
/// `X-CSRFToken` equal to the `csrftoken` cookie, compared in constant time. Whether the verdict
/// matters (a write, a login) is for the route to say.
pub fn csrf_verdict(request: &Request, credential: Option<&Credential>) -> Result<(), CsrfFailure> {
    if credential.is_some_and(Credential::is_bearer) {
        return Ok(());
    }
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

/// The binding of the provider sign-in this browser began, as its cookie holds it (empty if
/// none). The identity service compares it, by a hash of it and the state together.
pub fn social_binding(jar: &CookieJar) -> String {
    jar.get(SOCIAL_BINDING_COOKIE).map(|cookie| cookie.value_str().to_owned()).unwrap_or_default()
}

/// The browser side of a request: its cookie jar, the cookie writer, and the CSRF verdict.
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
    /// `credential` is the request's, as `Credential::of_request` read it.
    pub fn of(request: &Request, cookies: &Cookies, credential: Option<&Credential>) -> Self {
        BrowserContext {
            jar: request.cookie().clone(),
            cookies: cookies.clone(),
            csrf: csrf_verdict(request, credential),
        }
    }

    /// The CSRF verdict as an error, for routes that require it.
    pub fn require_csrf(&self) -> Result<(), ApiError> {
        self.csrf.map_err(CsrfFailure::into_error)
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
