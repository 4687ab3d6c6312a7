//! Signing in with a provider, whatever the transport: the browser redirect flow
//! (`social_http`), REST (`/api/social/{provider}/`) and GraphQL (`socialAuth`, ...) all begin
//! and complete through here; the identity service decides (state, code, ID token, linking).

use identity_proto::pb;

use crate::{
    browser::{BrowserContext, social_binding},
    context::{Caller, RequestContext},
    error::{ApiError, ErrorKind},
    login,
};

/// Begins a sign-in (with `link`, for the caller's account).
pub async fn begin(
    request: &RequestContext,
    provider: String,
    redirect_uri: String,
    next: String,
    link: bool,
) -> Result<pb::BeginSocialLoginResponse, ApiError> {
    let message = pb::BeginSocialLoginRequest { provider, redirect_uri, next, link };
    let message = if link { request.as_caller(message)? } else { request.anonymous(message) };
    Ok(request.identity.social().begin_social_login(message).await?.into_inner())
}

/// The facade's own callback for `provider`, where the browser flow completes.
pub fn callback_path(provider: &str) -> String {
    format!("/auth/{provider}/callback")
}

/// Begins a sign-in for a browser (when there is one: not over a websocket): its binding goes
/// into an HttpOnly cookie sent only to where the sign-in will complete — the facade's
/// callback when the provider returns there (which then completes it), else `own_path` (the
/// REST route, `/graphql`).
pub async fn begin_in_browser(
    request: &RequestContext,
    provider: String,
    redirect_uri: String,
    next: String,
    link: bool,
    own_path: &str,
) -> Result<pb::BeginSocialLoginResponse, ApiError> {
    let begun = begin(request, provider.clone(), redirect_uri, next, link).await?;
    if let Some(browser) = &request.browser {
        let callback = callback_path(&provider);
        let returns_to_callback = begun.redirect_uri.parse::<poem::http::Uri>().is_ok_and(|uri| uri.path() == callback);
        let path = if returns_to_callback { callback.as_str() } else { own_path };
        browser.cookies.set_social_binding(&browser.jar, path, &begun.binding).await?;
    }
    Ok(begun)
}

/// Completes a sign-in: the caller's credential goes along (a sign-in begun with `link` needs
/// it); a dead one is left behind, as a login ignores it.
pub async fn complete(
    request: &RequestContext,
    provider: String,
    code: String,
    (state, binding): (String, String),
    redirect_uri: String,
) -> Result<pb::CompleteSocialLoginResponse, ApiError> {
    let message = pb::CompleteSocialLoginRequest { provider, code, state, binding, redirect_uri };
    let message = match request.caller {
        Caller::User(_) => request.as_caller(message)?,
        _ => request.anonymous(message),
    };
    Ok(request.identity.social().complete_social_login(message).await?.into_inner())
}

/// What a completed sign-in did for a browser.
pub enum Completed {
    /// Logged in: the session handed over in the cookie.
    LoggedIn { user: pb::User, next: String },
    /// The identity linked to the caller.
    Linked { identity: pb::ExternalIdentity, next: String },
}

/// Completes a sign-in for a browser with the binding its cookie at `path` holds (the cookie is
/// removed: the sign-in is over for the browser, whatever the answer); a session goes into the
/// `sessionid` cookie (as a password login's does).
pub async fn complete_in_browser(
    request: &RequestContext,
    browser: &BrowserContext,
    provider: String,
    code: String,
    state: String,
    (redirect_uri, path): (String, &str),
) -> Result<Completed, ApiError> {
    use pb::complete_social_login_response::Outcome;
    let binding = social_binding(&browser.jar);
    browser.cookies.clear_social_binding(&browser.jar, path);
    let completed = complete(request, provider, code, (state, binding), redirect_uri).await?;
    match completed.outcome {
        Some(Outcome::Login(session)) => {
            let user = login::hand_over(request, browser, session).await?;
            Ok(Completed::LoggedIn { user, next: completed.next })
        }
        Some(Outcome::Linked(identity)) => Ok(Completed::Linked { identity, next: completed.next }),
        None => Err(ApiError::internal()),
    }
}

/// The caller's linked identities.
pub async fn identities(request: &RequestContext) -> Result<Vec<pb::ExternalIdentity>, ApiError> {
    let message = request.as_caller(pb::ListIdentitiesRequest {})?;
    Ok(request.identity.social().list_identities(message).await?.into_inner().identities)
}

pub async fn unlink(request: &RequestContext, provider: String, subject: String) -> Result<(), ApiError> {
    let message = request.as_caller(pb::UnlinkIdentityRequest { provider, subject })?;
    request.identity.social().unlink_identity(message).await?;
    Ok(())
}

pub async fn providers(request: &RequestContext) -> Result<Vec<pb::Provider>, ApiError> {
    let message = request.anonymous(pb::ListProvidersRequest {});
    Ok(request.identity.social().list_providers(message).await?.into_inner().providers)
}

/// A sign-in that needs a login (linking) asked for by an anonymous caller.
pub fn needs_login() -> ApiError {
    ApiError::new(ErrorKind::Unauthenticated, "log in first: linking adds a provider to your account")
}
