//! Logging in and out through a browser, whatever the transport (REST `/api/login`, the
//! GraphQL `login` and `logout` mutations, a provider's sign-in): the identity service's session handed over in the
//! `sessionid` cookie, and ended with it.

use std::time::Duration;

use identity_proto::pb;

use crate::{
    browser::BrowserContext,
    context::{Caller, RequestContext},
    credential::{Credential, SESSION_COOKIE},
    error::ApiError,
};

/// Logs in and hands the new session to the browser: the session cookie set, the CSRF token
/// rotated, and the session the browser held before (if any) ended — every login is a new
/// session. The caller has checked the CSRF verdict.
pub async fn log_in(
    request: &RequestContext,
    browser: &BrowserContext,
    username: String,
    password: String,
) -> Result<pb::User, ApiError> {
    let login = request.identity.login(request.anonymous(pb::LoginRequest { username, password })).await?;
    hand_over(request, browser, login).await
}

/// Hands a new session (from a password login or a provider's sign-in) to the browser: the
/// session cookie set, the CSRF token rotated, the session the browser held before ended.
pub async fn hand_over(
    request: &RequestContext,
    browser: &BrowserContext,
    login: pb::LoginResponse,
) -> Result<pb::User, ApiError> {
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
    login.user.ok_or_else(ApiError::internal)
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
        if request.credential.as_ref().is_some_and(Credential::is_bearer)
            && let Some(cookie) = browser.jar.get(SESSION_COOKIE).filter(|cookie| !cookie.value_str().is_empty())
        {
            let mut message = request.anonymous(pb::LogoutRequest {});
            if Credential::Session(cookie.value_str().to_owned()).attach(message.metadata_mut()) {
                end(request, message).await?;
            }
        }
        browser.cookies.clear_session(&browser.jar);
    }
    Ok(())
}

/// `Logout`; a session that ended meanwhile is logged out all the same.
pub(crate) async fn end(request: &RequestContext, message: tonic::Request<pb::LogoutRequest>) -> Result<(), ApiError> {
    match request.identity.auth().logout(message).await {
        Ok(_) => Ok(()),
        Err(status) if status.code() == tonic::Code::Unauthenticated => Ok(()),
        Err(status) => Err(status.into()),
    }
}
