//! Signing in with a provider from GraphQL: `socialBegin`, then `socialAuth` with the code the
//! browser came back with (the `tokenAuth` shape); `linkIdentity` and `unlinkIdentity` for the
//! caller's account; `socialProviders` and `identities` to show them.

use async_graphql::{Context, Object, Result};
use identity_proto::pb;

use super::types::{ExternalIdentity, GenericScalar, ObtainJsonWebToken, SocialBegin, SocialProvider, User};
use crate::{
    browser::social_binding,
    context::RequestContext,
    error::{ApiError, GraphqlResult},
    social,
};

/// Where a sign-in begun over GraphQL completes, and its binding cookie goes.
const GRAPHQL_PATH: &str = "/graphql";

/// The binding to complete with: the one passed, else the browser's cookie (which is removed:
/// the sign-in is over for the browser, whatever the answer).
fn binding_of(request: &RequestContext, passed: String) -> String {
    let Some(browser) = &request.browser else { return passed };
    let cookie = social_binding(&browser.jar);
    browser.cookies.clear_social_binding(&browser.jar, GRAPHQL_PATH);
    if passed.is_empty() { cookie } else { passed }
}

#[derive(Default)]
pub struct SocialQuery;

#[Object]
impl SocialQuery {
    /// The providers users may sign in with.
    async fn social_providers(&self, ctx: &Context<'_>) -> Result<Vec<SocialProvider>> {
        let request = ctx.data::<RequestContext>()?;
        let providers = social::providers(request).await.graphql()?;
        Ok(providers.into_iter().map(SocialProvider::from).collect())
    }

    /// The caller's linked identities.
    async fn identities(&self, ctx: &Context<'_>) -> Result<Vec<ExternalIdentity>> {
        let request = ctx.data::<RequestContext>()?;
        let identities = social::identities(request).await.graphql()?;
        Ok(identities.into_iter().map(ExternalIdentity::from).collect())
    }
}

#[derive(Default)]
pub struct SocialMutation;

#[Object]
impl SocialMutation {
    /// Begins a sign-in with `provider`. `redirectUri`: a page of the app, one the provider's
    /// configuration lists, which then completes with `socialAuth` (or `linkIdentity`); empty:
    /// the facade's own `/auth/{provider}/callback`, which completes it itself. `link: true`
    /// (logged in, address verified): the sign-in will add the provider to the caller's
    /// account. The answer's `binding` completes it with the `state`; over HTTP it is in an
    /// HttpOnly cookie too.
    async fn social_begin(
        &self,
        ctx: &Context<'_>,
        provider: String,
        #[graphql(default)] redirect_uri: String,
        #[graphql(default)] next: String,
        #[graphql(default)] link: bool,
    ) -> Result<SocialBegin> {
        let request = ctx.data::<RequestContext>()?;
        if link {
            request.principal().map_err(|_| social::needs_login()).graphql()?;
        }
        let begun =
            social::begin_in_browser(request, provider, redirect_uri, next, link, GRAPHQL_PATH).await.graphql()?;
        Ok(SocialBegin {
            authorization_url: begun.authorization_url,
            state: begun.state,
            redirect_uri: begun.redirect_uri,
            binding: begun.binding,
        })
    }

    /// Completes a sign-in with the provider's `code` and the `state` it began with (and its
    /// `binding`: the one `socialBegin` gave, else the browser's cookie): an access token and a
    /// refresh token, as `tokenAuth` answers. Refusals carry `extensions.reason`
    /// (`SOCIAL_STATE_INVALID`, `SOCIAL_EMAIL_IN_USE`, ...).
    async fn social_auth(
        &self,
        ctx: &Context<'_>,
        provider: String,
        code: String,
        state: String,
        #[graphql(default)] redirect_uri: String,
        #[graphql(default)] binding: String,
    ) -> Result<ObtainJsonWebToken> {
        use pb::complete_social_login_response::Outcome;
        let request = ctx.data::<RequestContext>()?;
        let binding = binding_of(request, binding);
        // A public operation: the request's credential (if any) does not go along, so a
        // sign-in begun to link cannot be completed here.
        let message = pb::CompleteSocialLoginRequest { provider, code, state, binding, redirect_uri };
        let completed =
            request.identity.social().complete_social_login(request.anonymous(message)).await.graphql()?.into_inner();
        let Some(Outcome::Login(login)) = completed.outcome else {
            return Err(ApiError::internal()).graphql();
        };
        let user = login.user.ok_or_else(ApiError::internal).graphql()?;
        Ok(ObtainJsonWebToken {
            payload: GenericScalar::of_issued_token(&login.access_token),
            refresh_expires_in: login.refresh_expires_at.map(|t| t.seconds).unwrap_or_default(),
            token: login.access_token,
            refresh_token: login.refresh_token,
            user: User::from(user),
        })
    }

    /// Completes a sign-in begun with `socialBegin(link: true)` by the caller: the provider's
    /// account is linked to theirs. Linked to someone else already: `IDENTITY_LINKED_ELSEWHERE`.
    async fn link_identity(
        &self,
        ctx: &Context<'_>,
        provider: String,
        code: String,
        state: String,
        #[graphql(default)] redirect_uri: String,
        #[graphql(default)] binding: String,
    ) -> Result<ExternalIdentity> {
        use pb::complete_social_login_response::Outcome;
        let request = ctx.data::<RequestContext>()?;
        request.principal().graphql()?;
        let binding = binding_of(request, binding);
        let completed = social::complete(request, provider, code, (state, binding), redirect_uri).await.graphql()?;
        match completed.outcome {
            Some(Outcome::Linked(identity)) => Ok(ExternalIdentity::from(identity)),
            // A sign-in not begun to link logs in instead: that session is not handed out here.
            Some(Outcome::Login(_)) | None => Err(ApiError::new(
                crate::error::ErrorKind::BadUserInput,
                "this sign-in was not begun to link: use socialBegin(link: true)",
            ))
            .graphql(),
        }
    }

    /// Unlinks one of the caller's identities; refused (`LAST_LOGIN_METHOD`) when it is their
    /// last way to log in.
    async fn unlink_identity(&self, ctx: &Context<'_>, provider: String, subject: String) -> Result<bool> {
        let request = ctx.data::<RequestContext>()?;
        social::unlink(request, provider, subject).await.graphql()?;
        Ok(true)
    }
}
