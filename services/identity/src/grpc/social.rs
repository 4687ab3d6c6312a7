//! `identity.v1.SocialService`: signing in with external providers.

use identity_core::{
    Identity,
    social::{ExternalIdentity, SocialOutcome},
};
use identity_proto::pb::{self, social_service_server::SocialService};
use tonic::{Request, Response, Status};

use super::{Forwarders, caller, convert, status::IntoStatus};

pub struct Social {
    identity: Identity,
    forwarders: Forwarders,
}

impl Social {
    pub fn new(identity: Identity, forwarders: Forwarders) -> Self {
        Social { identity, forwarders }
    }
}

fn identity(identity: ExternalIdentity) -> pb::ExternalIdentity {
    pb::ExternalIdentity {
        provider: identity.provider,
        subject: identity.subject,
        email: identity.email,
        created_at: convert::timestamp(identity.created_at),
        last_login_at: identity.last_login_at.and_then(convert::timestamp),
    }
}

#[tonic::async_trait]
impl SocialService for Social {
    async fn list_providers(
        &self,
        _request: Request<pb::ListProvidersRequest>,
    ) -> Result<Response<pb::ListProvidersResponse>, Status> {
        let providers = self
            .identity
            .social_providers()
            .into_iter()
            .map(|provider| pb::Provider {
                name: provider.name,
                display_name: provider.display_name,
                kind: provider.kind.as_str().to_owned(),
            })
            .collect();
        Ok(Response::new(pb::ListProvidersResponse { providers }))
    }

    async fn begin_social_login(
        &self,
        request: Request<pb::BeginSocialLoginRequest>,
    ) -> Result<Response<pb::BeginSocialLoginResponse>, Status> {
        let message = request.get_ref();
        let caller = match message.link {
            true => caller(&self.identity, &request).await.status()?,
            false => None,
        };
        let client = self.forwarders.client_info(&request);
        let begun = self
            .identity
            .begin_social(
                caller.as_ref(),
                &message.provider,
                &message.redirect_uri,
                &message.next,
                message.link,
                &client,
            )
            .await
            .status()?;
        Ok(Response::new(pb::BeginSocialLoginResponse {
            authorization_url: begun.authorization_url,
            state: begun.state,
            redirect_uri: begun.redirect_uri,
            binding: begun.binding,
        }))
    }

    async fn complete_social_login(
        &self,
        request: Request<pb::CompleteSocialLoginRequest>,
    ) -> Result<Response<pb::CompleteSocialLoginResponse>, Status> {
        let caller = caller(&self.identity, &request).await.status()?;
        let client = self.forwarders.client_info(&request);
        let message = request.get_ref();
        let outcome = self
            .identity
            .complete_social(
                caller.as_ref(),
                &message.provider,
                &message.code,
                &message.state,
                &message.binding,
                &message.redirect_uri,
                client,
            )
            .await
            .status()?;
        use pb::complete_social_login_response::Outcome;
        let response = match outcome {
            SocialOutcome::LoggedIn { login, created, next } => {
                pb::CompleteSocialLoginResponse { outcome: Some(Outcome::Login(convert::login(*login))), next, created }
            }
            SocialOutcome::Linked { identity: linked, next } => pb::CompleteSocialLoginResponse {
                outcome: Some(Outcome::Linked(identity(linked))),
                next,
                created: false,
            },
        };
        Ok(Response::new(response))
    }

    async fn list_identities(
        &self,
        request: Request<pb::ListIdentitiesRequest>,
    ) -> Result<Response<pb::ListIdentitiesResponse>, Status> {
        let caller = caller(&self.identity, &request).await.status()?;
        let identities = self.identity.list_identities(caller.as_ref()).await.status()?;
        Ok(Response::new(pb::ListIdentitiesResponse { identities: identities.into_iter().map(identity).collect() }))
    }

    async fn unlink_identity(
        &self,
        request: Request<pb::UnlinkIdentityRequest>,
    ) -> Result<Response<pb::UnlinkIdentityResponse>, Status> {
        let caller = caller(&self.identity, &request).await.status()?;
        let message = request.get_ref();
        self.identity.unlink_identity(caller.as_ref(), &message.provider, &message.subject).await.status()?;
        Ok(Response::new(pb::UnlinkIdentityResponse {}))
    }
}
