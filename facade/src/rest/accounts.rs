//! dj-rest-auth's account routes under `/api`: registration with e-mail verification, password
//! reset and change, and ours in the same style, e-mail change. Bodies and answers are
//! dj-rest-auth's; a refusal is `{"detail"}` with the error table's status, and a 400 also
//! lists the bad fields as the request body names them.
//!
//! CSRF: the anonymous routes are treated like `/api/login` (`X-CSRFToken` unless the request
//! carries a bearer token): a page of ours always has the token, and no other site's page may
//! act for the browser. The routes for the caller (`/password/change/`, `/email/change/`) need
//! it when the request rides on the session cookie, as every cookie-authenticated write does.

use std::sync::Arc;

use identity_proto::pb;
use poem::{Request, web::Data};
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};

use super::{
    BadBody, CsrfHeader, Detail, ErrorResponse, FieldErrors, LoggedIn, NOT_PROVIDED, UserView, bad_body, detail,
};
use crate::{
    accounts::{self, FieldNames, FormErrors},
    context::{CsrfRule, RequestContext},
    error::{ApiError, ErrorKind},
    state::AppState,
};

/// dj-rest-auth's words (allauth's) for a sign-up with an address another account has.
const EMAIL_TAKEN: &str = "A user is already registered with this e-mail address.";

// How each route names the identity service's fields in its body.
const REGISTRATION: FieldNames = &[("username", "username"), ("email", "email"), ("password", "password1")];
const EMAIL: FieldNames = &[("email", "email")];
const KEY: FieldNames = &[("token", "key")];
const RESET_CONFIRM: FieldNames = &[("token", "token"), ("new_password", "new_password1"), ("user_id", "uid")];
const PASSWORD_CHANGE: FieldNames = &[("current_password", "old_password"), ("new_password", "new_password1")];
const EMAIL_CHANGE: FieldNames = &[("new_email", "email"), ("email", "email"), ("current_password", "password")];

// === Bodies ===

#[derive(Debug, Object)]
pub struct Registration {
    #[oai(validator(max_length = 254))]
    pub username: String,
    #[oai(validator(max_length = 254))]
    pub email: String,
    #[oai(validator(max_length = 1024))]
    pub password1: String,
    /// `password1` again.
    #[oai(validator(max_length = 1024))]
    pub password2: String,
}

/// A link's `key`.
#[derive(Debug, Object)]
pub struct Key {
    #[oai(validator(max_length = 1024))]
    pub key: String,
}

#[derive(Debug, Object)]
pub struct Email {
    #[oai(validator(max_length = 254))]
    pub email: String,
}

/// The address to move to, and the caller's password.
#[derive(Debug, Object)]
pub struct EmailChange {
    #[oai(validator(max_length = 254))]
    pub email: String,
    #[oai(validator(max_length = 1024))]
    pub password: String,
}

/// A password-reset link's `uid` and `token`, and the new password twice.
#[derive(Debug, Object)]
pub struct PasswordResetConfirm {
    #[oai(validator(max_length = 1024))]
    pub uid: String,
    #[oai(validator(max_length = 1024))]
    pub token: String,
    #[oai(validator(max_length = 1024))]
    pub new_password1: String,
    #[oai(validator(max_length = 1024))]
    pub new_password2: String,
}

#[derive(Debug, Object)]
pub struct PasswordChange {
    #[oai(validator(max_length = 1024))]
    pub new_password1: String,
    #[oai(validator(max_length = 1024))]
    pub new_password2: String,
    #[oai(validator(max_length = 1024))]
    pub old_password: String,
}

/// A sign-up's answer: logged in at once (what `/api/login` answers), or not yet.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Registered {
    /// `success` when logged in; else `Verification e-mail sent.`
    pub detail: String,
    /// The new user, when logged in.
    pub user: Option<UserView>,
}

// === Answers: one per route, so that the document shows each route's statuses ===

/// Declares a route's answer: its success status and body (`Detail` unless named) and a 400
/// for a body that is not the JSON it expects (whatever its media type); the refusals are
/// `ErrorResponse`'s.
macro_rules! answer {
    ($(#[$doc:meta])* $name:ident, $status:literal, $variant:ident, $expected:literal) => {
        answer!($(#[$doc])* $name, $status, $variant, Detail, $expected);
    };
    ($(#[$doc:meta])* $name:ident, $status:literal, $variant:ident, $body:ty, $expected:literal) => {
        $(#[$doc])*
        #[derive(ApiResponse)]
        #[oai(bad_request_handler = "bad_body::<Self>")]
        pub enum $name {
            $(#[$doc])*
            #[oai(status = $status)]
            $variant(Json<$body>),
            /// The body is not the JSON the route expects.
            #[oai(status = 400)]
            BadRequest(Json<Box<FieldErrors>>),
        }

        impl BadBody for $name {
            const EXPECTED: &'static str = $expected;

            fn bad_request(body: Json<Box<FieldErrors>>) -> Self {
                $name::BadRequest(body)
            }
        }
    };
}

answer!(
    /// Signed up. Logged in at once when the identity service lets the new user in: `{"detail":
    /// "success", "user": {...}}`, a new session in `sessionid` and a new `csrftoken`, as
    /// `/api/login` answers; else (`IDENTITY_EMAIL_VERIFICATION=required`) `{"detail":
    /// "Verification e-mail sent."}`.
    RegistrationAnswer, 201, Created, Registered, r#"{"username", "email", "password1", "password2"}"#
);
answer!(
    /// `ok`.
    VerifyEmailAnswer, 200, Ok, r#"{"key"}"#
);
answer!(
    /// `ok`, whether or not an account has the address.
    ResendEmailAnswer, 200, Ok, r#"{"email"}"#
);
answer!(
    /// `Password reset e-mail has been sent.`, whether or not an account has the address.
    PasswordResetAnswer, 200, Ok, r#"{"email"}"#
);
answer!(
    /// `Password has been reset with the new password.`
    PasswordResetConfirmAnswer, 200, Ok, r#"{"uid", "token", "new_password1", "new_password2"}"#
);
answer!(
    /// `New password has been saved.`
    PasswordChangeAnswer, 200, Ok, r#"{"new_password1", "new_password2", "old_password"}"#
);
answer!(
    /// `Confirmation e-mail sent.`
    EmailChangeAnswer, 200, Ok, r#"{"email", "password"}"#
);
answer!(
    /// `ok`.
    EmailChangeConfirmAnswer, 200, Ok, r#"{"key"}"#
);

// === Refusals ===

/// A refusal by the identity service: bad fields as a 400 listing them by the names of the
/// body (`names`); anything else as the error table says.
fn refused(error: ApiError, names: FieldNames) -> ErrorResponse {
    match FormErrors::of(&error, names) {
        Some(errors) if error.kind == ErrorKind::BadUserInput => {
            ErrorResponse::BadRequest(Json(Box::new(field_errors(&errors))))
        }
        _ => error.into(),
    }
}

/// A refused sign-up: as `refused`, but a taken username or address is the form's too, a 400
/// listing the field in dj-rest-auth's words.
fn registration_refused(error: ApiError) -> ErrorResponse {
    let Some(mut errors) = FormErrors::of(&error, REGISTRATION) else { return error.into() };
    for error in &mut errors.0 {
        if (error.field, error.code) == ("email", "unique") {
            EMAIL_TAKEN.clone_into(&mut error.message);
        }
    }
    ErrorResponse::BadRequest(Json(Box::new(field_errors(&errors))))
}

/// The password and its confirmation (`field`) differ.
fn mismatch(field: &'static str) -> ErrorResponse {
    ErrorResponse::BadRequest(Json(Box::new(field_errors(&FormErrors::password_mismatch(field)))))
}

/// dj-rest-auth's lists, with every message in `detail`. A field the body does not have is
/// the request's as a whole.
fn field_errors(errors: &FormErrors) -> FieldErrors {
    let mut body = FieldErrors { detail: errors.summary(), ..FieldErrors::default() };
    for (field, messages) in errors.by_field() {
        let list = match field {
            "username" => &mut body.username,
            "email" => &mut body.email,
            "password" => &mut body.password,
            "password1" => &mut body.password1,
            "password2" => &mut body.password2,
            "old_password" => &mut body.old_password,
            "new_password1" => &mut body.new_password1,
            "new_password2" => &mut body.new_password2,
            "uid" => &mut body.uid,
            "token" => &mut body.token,
            "key" => &mut body.key,
            _ => &mut body.non_field_errors,
        };
        list.get_or_insert_with(Vec::new).extend(messages);
    }
    body
}

async fn context(state: &AppState, request: &Request, rule: CsrfRule) -> Result<RequestContext, ErrorResponse> {
    Ok(RequestContext::of_http(&state.identity, (&state.cookies, &state.proxies), request, rule).await?)
}

/// The context of a route for the caller: 401 (DRF's words) without a credential.
async fn caller_context(state: &AppState, request: &Request) -> Result<RequestContext, ErrorResponse> {
    let context = context(state, request, CsrfRule::CookieWrites).await?;
    if context.credential.is_none() {
        return Err(ApiError::new(ErrorKind::Unauthenticated, NOT_PROVIDED).into());
    }
    context.principal()?;
    Ok(context)
}

pub struct AccountsApi;

#[OpenApi]
impl AccountsApi {
    /// Signs up (role `user`), sends a link to `email` to verify it, and logs the new user in
    /// as `/api/login` does (the session in `sessionid`) — unless
    /// `IDENTITY_EMAIL_VERIFICATION=required`: then logins wait for the link (403 `E-mail is
    /// not verified.`) and the answer is `Verification e-mail sent.` A name or address already
    /// taken is a 400 listing the field, as dj-rest-auth does. Needs `X-CSRFToken` (see
    /// `/api/csrf`) unless the request carries a bearer token.
    #[oai(path = "/registration/", method = "post")]
    async fn registration(
        &self,
        request: &Request,
        Data(state): Data<&Arc<AppState>>,
        body: Json<Registration>,
        #[oai(name = "X-CSRFToken")] _csrf: CsrfHeader,
    ) -> Result<RegistrationAnswer, ErrorResponse> {
        let context = context(state, request, CsrfRule::Always).await?;
        let Json(Registration { username, email, password1, password2 }) = body;
        if password1 != password2 {
            return Err(mismatch("password2"));
        }
        let message = pb::CreateUserRequest {
            username: username.clone(),
            email,
            password: password1.clone(),
            role: String::new(),
        };
        let created = state
            .identity
            .users()
            .create_user(context.anonymous(message))
            .await
            .map_err(|s| registration_refused(s.into()))?;
        // Its name as stored (trimmed, say).
        let username = created.into_inner().user.map_or(username, |user| user.username);
        // The account exists: whatever stops the login now (an address to verify first, or
        // throttling), the sign-up succeeded and its link is on its way.
        let registered = match super::open_session(&context, username, password1).await {
            Ok(LoggedIn { detail, user }) => Registered { detail, user: Some(user) },
            Err(error) => {
                if error.kind != ErrorKind::EmailNotVerified {
                    tracing::warn!(code = error.kind.graphql_code(), "a new user could not log in at once");
                }
                Registered { detail: "Verification e-mail sent.".into(), user: None }
            }
        };
        Ok(RegistrationAnswer::Created(Json(registered)))
    }

    /// Verifies the address a verification link was sent to (`key`: the link's). A link works
    /// once; a used, replaced, expired or unknown one is a 404 `Not found.`, as dj-rest-auth
    /// answers (an empty key is a 400). Needs `X-CSRFToken` unless the request carries a bearer
    /// token.
    #[oai(path = "/registration/verify-email/", method = "post")]
    async fn verify_email(
        &self,
        request: &Request,
        Data(state): Data<&Arc<AppState>>,
        body: Json<Key>,
        #[oai(name = "X-CSRFToken")] _csrf: CsrfHeader,
    ) -> Result<VerifyEmailAnswer, ErrorResponse> {
        let context = context(state, request, CsrfRule::Always).await?;
        let message = context.anonymous(pb::VerifyEmailRequest { token: body.0.key });
        state.identity.accounts().verify_email(message).await.map_err(|status| {
            let error = ApiError::from(status);
            // dj-rest-auth looks the key up with get_object_or_404.
            if accounts::is_dead_link(&error) {
                return ApiError::new(ErrorKind::NotFound, "Not found.").into();
            }
            refused(error, KEY)
        })?;
        Ok(VerifyEmailAnswer::Ok(detail("ok")))
    }

    /// Sends a new verification link if `email` names an account not yet verified; answers
    /// the same whether or not one does. Needs `X-CSRFToken` unless the request carries a
    /// bearer token.
    #[oai(path = "/registration/resend-email/", method = "post")]
    async fn resend_email(
        &self,
        request: &Request,
        Data(state): Data<&Arc<AppState>>,
        body: Json<Email>,
        #[oai(name = "X-CSRFToken")] _csrf: CsrfHeader,
    ) -> Result<ResendEmailAnswer, ErrorResponse> {
        let context = context(state, request, CsrfRule::Always).await?;
        let message = context.anonymous(pb::ResendVerificationRequest { email: body.0.email });
        state.identity.accounts().resend_verification(message).await.map_err(|s| refused(s.into(), EMAIL))?;
        Ok(ResendEmailAnswer::Ok(detail("ok")))
    }

    /// Sends a password-reset link if `email` names an active account; answers the same
    /// whether or not one does. Needs `X-CSRFToken` unless the request carries a bearer token.
    #[oai(path = "/password/reset/", method = "post")]
    async fn password_reset(
        &self,
        request: &Request,
        Data(state): Data<&Arc<AppState>>,
        body: Json<Email>,
        #[oai(name = "X-CSRFToken")] _csrf: CsrfHeader,
    ) -> Result<PasswordResetAnswer, ErrorResponse> {
        let context = context(state, request, CsrfRule::Always).await?;
        let message = context.anonymous(pb::RequestPasswordResetRequest { email: body.0.email });
        state.identity.accounts().request_password_reset(message).await.map_err(|s| refused(s.into(), EMAIL))?;
        Ok(PasswordResetAnswer::Ok(detail("Password reset e-mail has been sent.")))
    }

    /// Sets a new password with a reset link's `uid` and `token` (once): the address counts as
    /// verified and every session of the user ends. `new_password1` and `new_password2` must
    /// match. Needs `X-CSRFToken` unless the request carries a bearer token.
    #[oai(path = "/password/reset/confirm/", method = "post")]
    async fn password_reset_confirm(
        &self,
        request: &Request,
        Data(state): Data<&Arc<AppState>>,
        body: Json<PasswordResetConfirm>,
        #[oai(name = "X-CSRFToken")] _csrf: CsrfHeader,
    ) -> Result<PasswordResetConfirmAnswer, ErrorResponse> {
        let context = context(state, request, CsrfRule::Always).await?;
        let Json(PasswordResetConfirm { uid, token, new_password1, new_password2 }) = body;
        if new_password1 != new_password2 {
            return Err(mismatch("new_password2"));
        }
        let message = context.anonymous(pb::ResetPasswordRequest { token, new_password: new_password1, user_id: uid });
        state.identity.accounts().reset_password(message).await.map_err(|s| refused(s.into(), RESET_CONFIRM))?;
        Ok(PasswordResetConfirmAnswer::Ok(detail("Password has been reset with the new password.")))
    }

    /// The caller's new password (by `sessionid` cookie or `Authorization: Bearer`); their
    /// other sessions end, this one goes on. `new_password1` and `new_password2` must match. A
    /// cookie-authenticated request needs `X-CSRFToken`.
    #[oai(path = "/password/change/", method = "post")]
    async fn password_change(
        &self,
        request: &Request,
        Data(state): Data<&Arc<AppState>>,
        body: Json<PasswordChange>,
        #[oai(name = "X-CSRFToken")] _csrf: CsrfHeader,
    ) -> Result<PasswordChangeAnswer, ErrorResponse> {
        let context = caller_context(state, request).await?;
        let Json(PasswordChange { new_password1, new_password2, old_password }) = body;
        if new_password1 != new_password2 {
            return Err(mismatch("new_password2"));
        }
        let message = context
            .as_caller(pb::ChangePasswordRequest { current_password: old_password, new_password: new_password1 })?;
        state.identity.users().change_password(message).await.map_err(|s| refused(s.into(), PASSWORD_CHANGE))?;
        Ok(PasswordChangeAnswer::Ok(detail("New password has been saved.")))
    }

    /// The caller asks to move their account to `email`, with their `password`: a
    /// confirmation link goes there (and a notice to the current address); the address
    /// changes only when the link is followed (`/api/email/change/confirm/`). A wrong password
    /// is a 400 (`{"password": ["Invalid password."]}`); an address already taken a 409. A
    /// cookie-authenticated request needs `X-CSRFToken`.
    #[oai(path = "/email/change/", method = "post")]
    async fn email_change(
        &self,
        request: &Request,
        Data(state): Data<&Arc<AppState>>,
        body: Json<EmailChange>,
        #[oai(name = "X-CSRFToken")] _csrf: CsrfHeader,
    ) -> Result<EmailChangeAnswer, ErrorResponse> {
        let context = caller_context(state, request).await?;
        let Json(EmailChange { email, password }) = body;
        let message =
            context.as_caller(pb::RequestEmailChangeRequest { new_email: email, current_password: password })?;
        state.identity.accounts().request_email_change(message).await.map_err(|s| refused(s.into(), EMAIL_CHANGE))?;
        Ok(EmailChangeAnswer::Ok(detail("Confirmation e-mail sent.")))
    }

    /// Moves the account of an email-change link to the address it was sent to (`key`: the
    /// link's), once; the address is then verified. Needs `X-CSRFToken` unless the request
    /// carries a bearer token.
    #[oai(path = "/email/change/confirm/", method = "post")]
    async fn email_change_confirm(
        &self,
        request: &Request,
        Data(state): Data<&Arc<AppState>>,
        body: Json<Key>,
        #[oai(name = "X-CSRFToken")] _csrf: CsrfHeader,
    ) -> Result<EmailChangeConfirmAnswer, ErrorResponse> {
        let context = context(state, request, CsrfRule::Always).await?;
        let message = context.anonymous(pb::ConfirmEmailChangeRequest { token: body.0.key });
        state.identity.accounts().confirm_email_change(message).await.map_err(|s| refused(s.into(), KEY))?;
        Ok(EmailChangeConfirmAnswer::Ok(detail("ok")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_lists_are_named_as_in_the_body() {
        let error = ApiError {
            violations: vec![
                ("new_password".to_owned(), "must be at least 8 characters".to_owned()),
                ("token".to_owned(), "has expired".to_owned()),
                ("user_id".to_owned(), "does not name the link's user".to_owned()),
            ],
            ..ApiError::new(ErrorKind::BadUserInput, "bad")
        };
        let ErrorResponse::BadRequest(Json(body)) = refused(error, RESET_CONFIRM) else { panic!("not a 400") };
        assert_eq!(body.new_password1, Some(vec!["New password must be at least 8 characters.".to_owned()]));
        assert_eq!(body.token, Some(vec!["Expired token.".to_owned()]));
        assert_eq!(body.uid, Some(vec!["User id does not name the link's user.".to_owned()]));
        assert_eq!(body.key, None);
        let json = poem_openapi::types::ToJSON::to_json(&body).unwrap();
        assert!(json.get("key").is_none(), "{json}");
        assert!(json["detail"].as_str().unwrap().contains("Expired token."));
        // A verification link's token is the body's `key`.
        let expired = ApiError {
            violations: vec![("token".to_owned(), "has expired".to_owned())],
            ..ApiError::new(ErrorKind::BadUserInput, "bad")
        };
        let ErrorResponse::BadRequest(Json(body)) = refused(expired, KEY) else { panic!("not a 400") };
        assert_eq!(body.key, Some(vec!["Expired token.".to_owned()]));
    }

    #[test]
    fn a_mismatch_lists_the_confirmation() {
        let ErrorResponse::BadRequest(Json(body)) = mismatch("new_password2") else { panic!("not a 400") };
        assert_eq!(body.detail, "The two password fields didn’t match.");
        assert_eq!(body.new_password2, Some(vec!["The two password fields didn’t match.".to_owned()]));
    }

    #[test]
    fn other_refusals_keep_their_status() {
        let taken = ApiError::new(ErrorKind::Conflict, "a user with this email already exists");
        assert!(matches!(refused(taken.clone(), EMAIL_CHANGE), ErrorResponse::Conflict(_)));
        let ErrorResponse::BadRequest(Json(body)) = registration_refused(taken) else { panic!("not a 400") };
        assert_eq!(body.email, Some(vec![EMAIL_TAKEN.to_owned()]));
        let taken = ApiError {
            violations: vec![("username".to_owned(), "is taken".to_owned())],
            ..ApiError::new(ErrorKind::Conflict, "a user with this username already exists")
        };
        let ErrorResponse::BadRequest(Json(body)) = registration_refused(taken) else { panic!("not a 400") };
        assert_eq!(
            (body.username, body.email),
            (Some(vec!["A user with that username already exists.".to_owned()]), None)
        );
        let throttled = ApiError::new(ErrorKind::TooManyRequests, "slow down");
        assert!(matches!(refused(throttled, EMAIL), ErrorResponse::TooManyRequests(_, _)));
    }
}
