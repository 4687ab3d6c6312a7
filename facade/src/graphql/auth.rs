//! Tokens the django-graphql-jwt way: `tokenAuth`, `verifyToken`, `refreshToken`,
//! `revokeToken`, and `whoami`. The token operations are public: they never send the
//! request's credential, so a stale token in the header cannot block them.

use async_graphql::{Context, Object, Result};
use identity_proto::pb;

use super::types::{GenericScalar, LoginResult, LogoutResult, ObtainJsonWebToken, Refresh, Revoke, User, Verify};
use crate::{
    context::RequestContext,
    error::{ApiError, ErrorKind, GraphqlResult},
    login,
};

#[derive(Default)]
pub struct AuthQuery;

#[Object]
impl AuthQuery {
    /// The caller. UNAUTHENTICATED (with the reason: expired, revoked, ...) when anonymous.
    async fn whoami(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        let request = ctx.data::<RequestContext>()?;
        let principal = request.principal().graphql()?;
        Ok(principal.user.clone().map(User::from))
    }
}

/// Logs in on the identity service as nobody in particular (a public operation).
pub(super) async fn login(request: &RequestContext, username: String, password: String) -> Result<pb::LoginResponse> {
    request.identity.login(request.anonymous(pb::LoginRequest { username, password })).await.graphql()
}

/// Logs in with credentials just set (a sign-up, a password change): `None` when the address
/// must be verified first.
pub(super) async fn first_login(
    request: &RequestContext,
    username: String,
    password: String,
) -> Result<Option<pb::LoginResponse>, ApiError> {
    match request.identity.login(request.anonymous(pb::LoginRequest { username, password })).await {
        Ok(login) => Ok(Some(login)),
        Err(error) if error.kind == ErrorKind::EmailNotVerified => Ok(None),
        Err(error) => Err(error),
    }
}

#[derive(Default)]
pub struct AuthMutation;

#[Object]
impl AuthMutation {
    /// Log in with username (or email) and password: an access token and a refresh token.
    async fn token_auth(&self, ctx: &Context<'_>, username: String, password: String) -> Result<ObtainJsonWebToken> {
        let request = ctx.data::<RequestContext>()?;
        let login = login(request, username, password).await?;
        let user = login.user.ok_or_else(ApiError::unauthenticated).graphql()?;
        Ok(ObtainJsonWebToken {
            payload: GenericScalar::of_issued_token(&login.access_token),
            refresh_expires_in: login.refresh_expires_at.map(|t| t.seconds).unwrap_or_default(),
            token: login.access_token,
            refresh_token: login.refresh_token,
            user: User::from(user),
        })
    }

    /// Browser login: a new session in the HttpOnly `sessionid` cookie (no token in the
    /// response). Needs `X-CSRFToken` equal to the `csrftoken` cookie (`GET /api/csrf`), unless
    /// the request carries a bearer token.
    async fn login(&self, ctx: &Context<'_>, username: String, password: String) -> Result<LoginResult> {
        let request = ctx.data::<RequestContext>()?;
        let browser = request
            .browser
            .as_ref()
            .ok_or_else(|| ApiError::new(ErrorKind::BadUserInput, "login sets a cookie: send it as POST /graphql"))
            .graphql()?;
        browser.require_csrf().graphql()?;
        let user = login::log_in(request, browser, username, password).await.graphql()?;
        Ok(LoginResult { success: true, user: User::from(user) })
    }

    /// Ends the caller's session (cookie or bearer) and clears the `sessionid` cookie.
    async fn logout(&self, ctx: &Context<'_>) -> Result<LogoutResult> {
        let request = ctx.data::<RequestContext>()?;
        login::log_out(request).await.graphql()?;
        Ok(LogoutResult { success: true })
    }

    /// The verified claims of an access token whose session is alive.
    async fn verify_token(&self, ctx: &Context<'_>, token: String) -> Result<Verify> {
        let request = ctx.data::<RequestContext>()?;
        let verified = request
            .identity
            .auth()
            .verify_token(request.anonymous(pb::VerifyTokenRequest { token }))
            .await
            .graphql()?;
        Ok(Verify { payload: GenericScalar::from(verified.into_inner().claims) })
    }

    /// A new access token and a new refresh token; the one sent is spent. Using a refresh
    /// token twice revokes its session.
    async fn refresh_token(&self, ctx: &Context<'_>, refresh_token: String) -> Result<Refresh> {
        let request = ctx.data::<RequestContext>()?;
        let pair = request
            .identity
            .auth()
            .refresh_token(request.anonymous(pb::RefreshTokenRequest { refresh_token }))
            .await
            .graphql()?
            .into_inner();
        Ok(Refresh {
            payload: GenericScalar::from(pair.claims),
            refresh_expires_in: pair.refresh_expires_at.map(|t| t.seconds).unwrap_or_default(),
            token: pair.access_token,
            refresh_token: pair.refresh_token,
        })
    }

    /// Ends the session of a refresh token, and with it every access token it issued.
    async fn revoke_token(&self, ctx: &Context<'_>, refresh_token: String) -> Result<Revoke> {
        let request = ctx.data::<RequestContext>()?;
        let revoked = request
            .identity
            .auth()
            .revoke_token(request.anonymous(pb::RevokeTokenRequest { refresh_token }))
            .await
            .graphql()?
            .into_inner();
        Ok(Revoke { revoked: revoked.revoked_at.map(|t| t.seconds).unwrap_or_default() })
    }
}
