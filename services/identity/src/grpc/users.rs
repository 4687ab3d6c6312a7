//! `identity.v1.UserService`.

use identity_core::{CoreError, Identity, NewUser, UserPatch};
use identity_proto::pb::{self, user_service_server::UserService};
use tonic::{Request, Response, Status};

use super::{
    caller, convert,
    status::{IntoStatus, to_status},
};

pub struct Users {
    identity: Identity,
}

impl Users {
    pub fn new(identity: Identity) -> Self {
        Users { identity }
    }
}

#[tonic::async_trait]
impl UserService for Users {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let signing_up = matches!(request.get_ref().role.as_str(), "" | "user");
        // A stale credential must not block a sign-up; it matters only for other roles.
        let caller = match caller(&self.identity, &request).await {
            Ok(caller) => caller,
            Err(CoreError::SessionDead(_)) if signing_up => None,
            Err(error) => return Err(to_status(error)),
        };
        let message = request.into_inner();
        let new = NewUser {
            username: message.username,
            email: message.email,
            password: message.password,
            role: message.role,
        };
        let user = self.identity.create_user(caller.as_ref(), new).await.status()?;
        Ok(Response::new(pb::CreateUserResponse { user: Some(convert::user(&user)) }))
    }

    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Result<Response<pb::GetUserResponse>, Status> {
        let caller = caller(&self.identity, &request).await.status()?;
        let user = self.identity.get_user(caller.as_ref(), &request.get_ref().id).await.status()?;
        Ok(Response::new(pb::GetUserResponse { user: Some(convert::user(&user)) }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let caller = caller(&self.identity, &request).await.status()?;
        let message = request.get_ref();
        let page = self
            .identity
            .list_users(caller.as_ref(), i64::from(message.page_size), &message.page_token)
            .await
            .status()?;
        Ok(Response::new(pb::ListUsersResponse {
            users: page.users.iter().map(convert::user).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UpdateUserResponse>, Status> {
        let caller = caller(&self.identity, &request).await.status()?;
        let message = request.into_inner();
        let user = message.user.ok_or_else(|| to_status(CoreError::invalid("user", "is required")))?;
        if user.id.is_empty() {
            return Err(to_status(CoreError::invalid("user.id", "is required")));
        }
        let paths = message.update_mask.map(|mask| mask.paths).unwrap_or_default();
        let patch = UserPatch::from_mask(&paths, &user.email, &user.role, user.is_active).status()?;
        let updated = self.identity.update_user(caller.as_ref(), &user.id, patch).await.status()?;
        Ok(Response::new(pb::UpdateUserResponse { user: Some(convert::user(&updated)) }))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let caller = caller(&self.identity, &request).await.status()?;
        self.identity.delete_user(caller.as_ref(), &request.get_ref().id).await.status()?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let caller = caller(&self.identity, &request).await.status()?;
        let message = request.get_ref();
        let revoked = self
            .identity
            .change_password(caller.as_ref(), &message.current_password, &message.new_password)
            .await
            .status()?;
        Ok(Response::new(pb::ChangePasswordResponse { revoked_sessions: i32::try_from(revoked).unwrap_or(i32::MAX) }))
    }
}
