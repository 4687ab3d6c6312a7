//! Users: sign-up, profiles, roles. Role rules are the identity service's; a refusal arrives
//! as FORBIDDEN.

use async_graphql::{Context, ID, Object, Result};
use identity_proto::pb;

use super::types::{ChangePassword, CreateUser, DeleteUser, Profile, UpdateUserInput, User};
use crate::{
    context::RequestContext,
    error::{ApiError, ErrorKind, GraphqlResult},
};

/// The most users one page may hold.
const MAX_PAGE: i32 = 1000;

/// Why a user's own `updateUser` of `email` is refused, in this API's names.
const OWN_EMAIL: &str = "is changed by requestEmailChange, which asks for your password";

/// The identity service's refusal of a user's own address change names its gRPC method
/// (`RequestEmailChange`): told with the mutation's name instead.
fn in_graphql_names(mut error: ApiError) -> ApiError {
    if error.kind != ErrorKind::BadUserInput {
        return error;
    }
    let mut renamed = false;
    for (field, reason) in &mut error.violations {
        if field == "user.email" && reason.starts_with("is changed by RequestEmailChange") {
            OWN_EMAIL.clone_into(reason);
            renamed = true;
        }
    }
    if renamed {
        error.message =
            error.violations.iter().map(|(field, reason)| format!("{field}: {reason}")).collect::<Vec<_>>().join("; ");
    }
    error
}

#[derive(Default)]
pub struct UsersQuery;

#[Object]
impl UsersQuery {
    /// Managers only. `after` is the `id` of the last user of the previous page.
    async fn users(&self, ctx: &Context<'_>, first: Option<i32>, after: Option<String>) -> Result<Vec<User>> {
        let request = ctx.data::<RequestContext>()?;
        let first = first.unwrap_or(50);
        if !(1..=MAX_PAGE).contains(&first) {
            return Err(ApiError::bad_input("first", format!("must be between 1 and {MAX_PAGE}"))).graphql();
        }
        let message = pb::ListUsersRequest { page_size: first, page_token: after.unwrap_or_default() };
        let page = request.identity.users().list_users(request.as_caller(message).graphql()?).await.graphql()?;
        Ok(page.into_inner().users.into_iter().map(User::from).collect())
    }

    /// The caller, or anyone for a manager; null when there is no such user.
    async fn user(&self, ctx: &Context<'_>, id: ID) -> Result<Option<User>> {
        let request = ctx.data::<RequestContext>()?;
        let message = request.as_caller(pb::GetUserRequest { id: id.0 }).graphql()?;
        match request.identity.users().get_user(message).await {
            Ok(response) => Ok(response.into_inner().user.map(User::from)),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(status).graphql(),
        }
    }
}

#[derive(Default)]
pub struct UsersMutation;

#[Object]
impl UsersMutation {
    /// Sign up (role "user"), and log in at once: the response carries tokens (null while the
    /// address must be verified before a login; a verification link is on its way).
    async fn create_user(
        &self,
        ctx: &Context<'_>,
        username: String,
        password: String,
        email: String,
    ) -> Result<CreateUser> {
        let request = ctx.data::<RequestContext>()?;
        let message = pb::CreateUserRequest {
            username: username.clone(),
            email,
            password: password.clone(),
            role: String::new(),
        };
        let created = request.identity.users().create_user(request.anonymous(message)).await.graphql()?.into_inner();
        let user = created.user.ok_or_else(ApiError::internal).graphql()?;
        let login = super::auth::first_login(request, username, password).await.graphql()?;
        let (token, refresh_token) = login.map(|login| (login.access_token, login.refresh_token)).unzip();
        Ok(CreateUser { profile: Profile { role: user.role.clone() }, user: User::from(user), token, refresh_token })
    }

    /// Managers: email (at once), role, isActive, of anyone. A user's own email is changed by
    /// `requestEmailChange`, which asks for the password: asked for here, BAD_USER_INPUT.
    async fn update_user(&self, ctx: &Context<'_>, id: ID, input: UpdateUserInput) -> Result<User> {
        let request = ctx.data::<RequestContext>()?;
        let mut paths = Vec::new();
        let mut user = pb::User { id: id.0, ..Default::default() };
        if let Some(email) = input.email {
            paths.push("email".to_owned());
            user.email = email;
        }
        if let Some(role) = input.role {
            paths.push("role".to_owned());
            user.role = role;
        }
        if let Some(is_active) = input.is_active {
            paths.push("is_active".to_owned());
            user.is_active = is_active;
        }
        if paths.is_empty() {
            return Err(ApiError::bad_input("input", "name at least one of email, role, isActive")).graphql();
        }
        let message = pb::UpdateUserRequest { user: Some(user), update_mask: Some(prost_types::FieldMask { paths }) };
        let updated = request
            .identity
            .users()
            .update_user(request.as_caller(message).graphql()?)
            .await
            .map_err(|status| in_graphql_names(status.into()))
            .graphql()?;
        let user = updated.into_inner().user.ok_or_else(ApiError::internal).graphql()?;
        Ok(User::from(user))
    }

    /// Managers only; ends the user's sessions.
    async fn delete_user(&self, ctx: &Context<'_>, id: ID) -> Result<DeleteUser> {
        let request = ctx.data::<RequestContext>()?;
        let message = request.as_caller(pb::DeleteUserRequest { id: id.0.clone() }).graphql()?;
        request.identity.users().delete_user(message).await.graphql()?;
        Ok(DeleteUser { deleted: true, id })
    }

    /// Revokes the caller's other sessions.
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        old_password: String,
        new_password: String,
    ) -> Result<ChangePassword> {
        let request = ctx.data::<RequestContext>()?;
        let message = pb::ChangePasswordRequest { current_password: old_password, new_password };
        let changed =
            request.identity.users().change_password(request.as_caller(message).graphql()?).await.graphql()?;
        Ok(ChangePassword { success: true, revoked_sessions: changed.into_inner().revoked_sessions })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_own_email_refusal_names_the_mutation_that_changes_it() {
        let refused = ApiError {
            violations: vec![(
                "user.email".to_owned(),
                "is changed by RequestEmailChange, which asks for the current password".to_owned(),
            )],
            ..ApiError::new(ErrorKind::BadUserInput, "user.email: is changed by RequestEmailChange, ...")
        };
        let told = in_graphql_names(refused);
        assert_eq!(told.kind, ErrorKind::BadUserInput);
        assert_eq!(told.message, "user.email: is changed by requestEmailChange, which asks for your password");
        assert_eq!(told.violations, vec![("user.email".to_owned(), OWN_EMAIL.to_owned())]);
        // Anything else is as the identity service said it.
        let malformed = ApiError::bad_input("user.email", "must be a valid email address");
        assert_eq!(in_graphql_names(malformed.clone()), malformed);
    }
}
