//! `identity.v1.AccountService`: the flows that go through email links.

use identity_core::Identity;
use identity_proto::pb::{self, account_service_server::AccountService};
use tonic::{Request, Response, Status};

use super::{Forwarders, caller, convert, status::IntoStatus};

pub struct Accounts {
    identity: Identity,
    forwarders: Forwarders,
}

impl Accounts {
    pub fn new(identity: Identity, forwarders: Forwarders) -> Self {
        Accounts { identity, forwarders }
    }
}

#[tonic::async_trait]
impl AccountService for Accounts {
    async fn resend_verification(
        &self,
        request: Request<pb::ResendVerificationRequest>,
    ) -> Result<Response<pb::ResendVerificationResponse>, Status> {
        let client = self.forwarders.client_info(&request);
        self.identity.resend_verification(&request.get_ref().email, &client).await.status()?;
        Ok(Response::new(pb::ResendVerificationResponse {}))
    }

    async fn verify_email(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Result<Response<pb::VerifyEmailResponse>, Status> {
        let user = self.identity.verify_email(&request.get_ref().token).await.status()?;
        Ok(Response::new(pb::VerifyEmailResponse { user: Some(convert::user(&user)) }))
    }

    async fn request_password_reset(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> Result<Response<pb::RequestPasswordResetResponse>, Status> {
        let client = self.forwarders.client_info(&request);
        self.identity.request_password_reset(&request.get_ref().email, &client).await.status()?;
        Ok(Response::new(pb::RequestPasswordResetResponse {}))
    }

    async fn reset_password(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> Result<Response<pb::ResetPasswordResponse>, Status> {
        let message = request.get_ref();
        let (user, revoked) =
            self.identity.reset_password(&message.token, &message.new_password, &message.user_id).await.status()?;
        Ok(Response::new(pb::ResetPasswordResponse {
            user: Some(convert::user(&user)),
            revoked_sessions: i32::try_from(revoked).unwrap_or(i32::MAX),
        }))
    }

    async fn request_email_change(
        &self,
        request: Request<pb::RequestEmailChangeRequest>,
    ) -> Result<Response<pb::RequestEmailChangeResponse>, Status> {
        let caller = caller(&self.identity, &request).await.status()?;
        let client = self.forwarders.client_info(&request);
        let message = request.get_ref();
        self.identity
            .request_email_change(caller.as_ref(), &message.new_email, &message.current_password, &client)
            .await
            .status()?;
        Ok(Response::new(pb::RequestEmailChangeResponse {}))
    }

    async fn confirm_email_change(
        &self,
        request: Request<pb::ConfirmEmailChangeRequest>,
    ) -> Result<Response<pb::ConfirmEmailChangeResponse>, Status> {
        let user = self.identity.confirm_email_change(&request.get_ref().token).await.status()?;
        Ok(Response::new(pb::ConfirmEmailChangeResponse { user: Some(convert::user(&user)) }))
    }
}
