//! Accounts by email the django-graphql-auth way: `register`, `verifyAccount`,
//! `resendActivationEmail`, `sendPasswordResetEmail`, `passwordReset`, `passwordChange`, and
//! ours in the same shape, `requestEmailChange` and `confirmEmailChange`. Each answers `success`
//! and `errors`: what is wrong with the form (bad fields, a taken name, an invalid or expired
//! link) is in `errors` with `success: false`, and so is a missing caller for the two that need
//! one (`nonFieldErrors` `unauthenticated`, as django-graphql-auth's `login_required`); a
//! failure that is not the form's (throttled, unavailable) is a GraphQL error with its
//! `extensions.code`, as everywhere. Only `passwordChange` and `requestEmailChange` send the
//! caller's credential.

use async_graphql::{Context, ErrorExtensions, Object, Result};
use identity_proto::pb;

use super::types::{
    ConfirmEmailChange, ExpectedErrorType, PasswordChange, PasswordReset, Register, RequestEmailChange,
    ResendActivationEmail, SendPasswordResetEmail, VerifyAccount,
};
use crate::{
    accounts::{FieldNames, FormErrors},
    context::RequestContext,
    credential::Credential,
    error::{ApiError, ErrorKind, GraphqlResult},
    login,
};

// How each mutation names the identity service's fields (camelCased in `errors`). A link's
// token is the form's as a whole (`nonFieldErrors`), as in django-graphql-auth.
const REGISTER: FieldNames = &[("username", "username"), ("email", "email"), ("password", "password1")];
const EMAIL: FieldNames = &[("email", "email")];
const LINK: FieldNames = &[];
const PASSWORD_RESET: FieldNames = &[("new_password", "new_password1")];
const PASSWORD_CHANGE: FieldNames = &[("current_password", "old_password"), ("new_password", "new_password1")];
const EMAIL_CHANGE: FieldNames =
    &[("new_email", "new_email"), ("email", "new_email"), ("current_password", "password")];

/// The `errors` of a refusal the form can show; any other failure stays a GraphQL error.
fn refused(error: ApiError, names: FieldNames) -> Result<ExpectedErrorType> {
    match FormErrors::of(&error, names) {
        Some(errors) => Ok(ExpectedErrorType(errors.to_graphql())),
        None => Err(error.extend()),
    }
}

/// `errors` of a call that answers nothing the mutation needs: null when it succeeded.
fn outcome<T>(result: Result<T, tonic::Status>, names: FieldNames) -> Result<Option<ExpectedErrorType>> {
    match result {
        Ok(_) => Ok(None),
        Err(status) => refused(status.into(), names).map(Some),
    }
}

/// The caller of a mutation that needs one: `None` (and the `errors` to answer) when there is
/// none or its credential is dead.
fn caller(request: &RequestContext) -> Result<std::result::Result<(), ExpectedErrorType>> {
    match request.principal() {
        Ok(_) => Ok(Ok(())),
        Err(error) if error.kind == ErrorKind::Unauthenticated => {
            Ok(Err(ExpectedErrorType(FormErrors::unauthenticated().to_graphql())))
        }
        Err(error) => Err(error.extend()),
    }
}

fn mismatch(field: &'static str) -> Option<ExpectedErrorType> {
    Some(ExpectedErrorType(FormErrors::password_mismatch(field).to_graphql()))
}

#[derive(Default)]
pub struct AccountsMutation;

#[Object]
impl AccountsMutation {
    /// Sign up (role "user"): a verification link goes to `email`. When the new user may log
    /// in at once (verification not required), `token` and `refreshToken` are theirs; else
    /// null until they follow the link. `password1` and `password2` must match.
    async fn register(
        &self,
        ctx: &Context<'_>,
        email: String,
        username: String,
        password1: String,
        password2: String,
    ) -> Result<Register> {
        let request = ctx.data::<RequestContext>()?;
        if password1 != password2 {
            return Ok(Register { success: false, errors: mismatch("password2"), token: None, refresh_token: None });
        }
        let message = pb::CreateUserRequest {
            username: username.clone(),
            email,
            password: password1.clone(),
            role: String::new(),
        };
        if let Err(status) = request.identity.users().create_user(request.anonymous(message)).await {
            let errors = refused(status.into(), REGISTER)?;
            return Ok(Register { success: false, errors: Some(errors), token: None, refresh_token: None });
        }
        // The account exists: whatever stops the login now (an address to verify first, or
        // throttling), the sign-up succeeded.
        let login = match super::auth::first_login(request, username, password1).await {
            Ok(login) => login,
            Err(error) => {
                tracing::warn!(code = error.kind.graphql_code(), "a new user could not log in at once");
                None
            }
        };
        let (token, refresh_token) = login.map(|login| (login.access_token, login.refresh_token)).unzip();
        Ok(Register { success: true, errors: None, token, refresh_token })
    }

    /// Marks the address of a verification link's account verified (`token`: the link's
    /// `key`). A link works once.
    async fn verify_account(&self, ctx: &Context<'_>, token: String) -> Result<VerifyAccount> {
        let request = ctx.data::<RequestContext>()?;
        let answer =
            request.identity.accounts().verify_email(request.anonymous(pb::VerifyEmailRequest { token })).await;
        let errors = outcome(answer, LINK)?;
        Ok(VerifyAccount { success: errors.is_none(), errors })
    }

    /// Sends a new verification link if `email` names an account not yet verified. Answers
    /// the same whether or not one does.
    async fn resend_activation_email(&self, ctx: &Context<'_>, email: String) -> Result<ResendActivationEmail> {
        let request = ctx.data::<RequestContext>()?;
        let message = request.anonymous(pb::ResendVerificationRequest { email });
        let errors = outcome(request.identity.accounts().resend_verification(message).await, EMAIL)?;
        Ok(ResendActivationEmail { success: errors.is_none(), errors })
    }

    /// Sends a password-reset link if `email` names an active account. Answers the same
    /// whether or not one does.
    async fn send_password_reset_email(&self, ctx: &Context<'_>, email: String) -> Result<SendPasswordResetEmail> {
        let request = ctx.data::<RequestContext>()?;
        let message = request.anonymous(pb::RequestPasswordResetRequest { email });
        let errors = outcome(request.identity.accounts().request_password_reset(message).await, EMAIL)?;
        Ok(SendPasswordResetEmail { success: errors.is_none(), errors })
    }

    /// Sets a new password with a reset link's `token` (once): the address counts as verified
    /// and every session of the user ends. `newPassword1` and `newPassword2` must match.
    async fn password_reset(
        &self,
        ctx: &Context<'_>,
        token: String,
        new_password1: String,
        new_password2: String,
    ) -> Result<PasswordReset> {
        let request = ctx.data::<RequestContext>()?;
        if new_password1 != new_password2 {
            return Ok(PasswordReset { success: false, errors: mismatch("new_password2") });
        }
        let message = pb::ResetPasswordRequest { token, new_password: new_password1, user_id: String::new() };
        let answer = request.identity.accounts().reset_password(request.anonymous(message)).await;
        let errors = outcome(answer, PASSWORD_RESET)?;
        Ok(PasswordReset { success: errors.is_none(), errors })
    }

    /// The caller's new password; their other sessions end. A bearer caller gets a new token
    /// pair (`token`, `refreshToken`) and the session of the token sent ends; a session
    /// (cookie) caller keeps its session, and the pair is null. Without a (live) caller,
    /// `errors.nonFieldErrors` says `unauthenticated`, as django-graphql-auth's
    /// `login_required`.
    async fn password_change(
        &self,
        ctx: &Context<'_>,
        old_password: String,
        new_password1: String,
        new_password2: String,
    ) -> Result<PasswordChange> {
        let request = ctx.data::<RequestContext>()?;
        let refused_with = |errors| PasswordChange { success: false, errors, token: None, refresh_token: None };
        if let Err(errors) = caller(request)? {
            return Ok(refused_with(Some(errors)));
        }
        let principal = request.principal().graphql()?;
        if new_password1 != new_password2 {
            return Ok(refused_with(mismatch("new_password2")));
        }
        let message = pb::ChangePasswordRequest { current_password: old_password, new_password: new_password1.clone() };
        let answer = request.identity.users().change_password(request.as_caller(message).graphql()?).await;
        if let Some(errors) = outcome(answer, PASSWORD_CHANGE)? {
            return Ok(refused_with(Some(errors)));
        }
        let changed = PasswordChange { success: true, errors: None, token: None, refresh_token: None };
        if !request.credential.as_ref().is_some_and(Credential::is_bearer) {
            return Ok(changed);
        }
        let username = principal.user.as_ref().map(|user| user.username.clone()).unwrap_or_default();
        let pair = match super::auth::first_login(request, username, new_password1).await {
            Ok(Some(pair)) => pair,
            // The password is changed all the same; the old session goes on.
            Ok(None) | Err(_) => {
                tracing::warn!("no new token pair after a password change; the caller's session goes on");
                return Ok(changed);
            }
        };
        let ended = match request.as_caller(pb::LogoutRequest {}) {
            Ok(message) => login::end(request, message).await,
            Err(error) => Err(error),
        };
        if let Err(error) = ended {
            tracing::warn!(code = error.kind.graphql_code(), "could not end the session replaced by a password change");
        }
        Ok(PasswordChange { token: Some(pair.access_token), refresh_token: Some(pair.refresh_token), ..changed })
    }

    /// The caller asks to move their account to `newEmail`, with their `password`: a
    /// confirmation link goes there (and a notice to the current address); the address
    /// changes only when the link is followed (`confirmEmailChange`). A wrong password is
    /// `errors.password` `invalid_password`; without a (live) caller, `errors.nonFieldErrors`
    /// says `unauthenticated`.
    async fn request_email_change(
        &self,
        ctx: &Context<'_>,
        new_email: String,
        password: String,
    ) -> Result<RequestEmailChange> {
        let request = ctx.data::<RequestContext>()?;
        if let Err(errors) = caller(request)? {
            return Ok(RequestEmailChange { success: false, errors: Some(errors) });
        }
        let message =
            request.as_caller(pb::RequestEmailChangeRequest { new_email, current_password: password }).graphql()?;
        let errors = outcome(request.identity.accounts().request_email_change(message).await, EMAIL_CHANGE)?;
        Ok(RequestEmailChange { success: errors.is_none(), errors })
    }

    /// Moves the account of an email-change link to the address it was sent to (`token`: the
    /// link's `key`), once; the address is then verified.
    async fn confirm_email_change(&self, ctx: &Context<'_>, token: String) -> Result<ConfirmEmailChange> {
        let request = ctx.data::<RequestContext>()?;
        let message = request.anonymous(pb::ConfirmEmailChangeRequest { token });
        let errors = outcome(request.identity.accounts().confirm_email_change(message).await, LINK)?;
        Ok(ConfirmEmailChange { success: errors.is_none(), errors })
    }
}
