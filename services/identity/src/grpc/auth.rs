//! `identity.v1.AuthService`.

use std::pin::Pin;

use futures::Stream;
use identity_core::{CoreError, Credential, Identity};
use identity_proto::pb::{self, auth_service_server::AuthService};
use tokio::sync::watch;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use super::{
    Forwarders, caller, convert,
    status::{IntoStatus, to_status},
};

pub struct Auth {
    identity: Identity,
    forwarders: Forwarders,
    /// Turns true when the server shuts down: open `WatchSession` streams end then, or
    /// graceful shutdown would wait for them forever.
    stopping: watch::Receiver<bool>,
}

impl Auth {
    pub fn new(identity: Identity, forwarders: Forwarders, stopping: watch::Receiver<bool>) -> Self {
        Auth { identity, forwarders, stopping }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchSessionResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AuthService for Auth {
    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        let client = self.forwarders.client_info(&request);
        let message = request.into_inner();
        let outcome = self.identity.login(&message.username, &message.password, client).await.status()?;
        Ok(Response::new(convert::login(outcome)))
    }

    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        use pb::authenticate_request::Credential as Pb;
        let credential = match &request.get_ref().credential {
            Some(Pb::SessionToken(token)) if !token.is_empty() => Credential::SessionToken(token),
            Some(Pb::AccessToken(token)) if !token.is_empty() => Credential::AccessToken(token),
            _ => {
                return Err(to_status(CoreError::invalid(
                    "credential",
                    "a session_token or an access_token is required",
                )));
            }
        };
        let omit_claims = request.get_ref().omit_claims;
        let principal = self.identity.authenticate(credential).await.status()?;
        Ok(Response::new(pb::AuthenticateResponse {
            principal: Some(pb::Principal {
                role: principal.user.role.as_str().to_owned(),
                user: Some(convert::user(&principal.user)),
                session_id: principal.session_id,
                access_expires_at: principal.claims.as_ref().and_then(|claims| convert::timestamp(claims.exp)),
                claims: principal.claims.filter(|_| !omit_claims).map(|claims| convert::claims(&claims)),
                session_expires_at: convert::timestamp(principal.session_expires_at),
            }),
        }))
    }

    async fn refresh_token(
        &self,
        request: Request<pb::RefreshTokenRequest>,
    ) -> Result<Response<pb::RefreshTokenResponse>, Status> {
        let pair = self.identity.refresh(&request.get_ref().refresh_token).await.status()?;
        Ok(Response::new(pb::RefreshTokenResponse {
            access_token: pair.access_token,
            refresh_token: pair.refresh_token,
            access_expires_at: convert::timestamp(pair.access_expires_at),
            refresh_expires_at: convert::timestamp(pair.refresh_expires_at),
            claims: Some(convert::claims(&pair.claims)),
        }))
    }

    async fn verify_token(
        &self,
        request: Request<pb::VerifyTokenRequest>,
    ) -> Result<Response<pb::VerifyTokenResponse>, Status> {
        let token = &request.get_ref().token;
        if token.is_empty() {
            return Err(to_status(CoreError::invalid("token", "must not be empty")));
        }
        let claims = self.identity.verify_token(token).await.status()?;
        Ok(Response::new(pb::VerifyTokenResponse { claims: Some(convert::claims(&claims)) }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let revoked_at = self.identity.revoke_refresh_token(&request.get_ref().refresh_token).await.status()?;
        Ok(Response::new(pb::RevokeTokenResponse { revoked_at: convert::timestamp(revoked_at) }))
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Result<Response<pb::LogoutResponse>, Status> {
        let caller = caller(&self.identity, &request).await.status()?;
        self.identity.logout(caller.as_ref()).await.status()?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let caller = caller(&self.identity, &request).await.status()?;
        let sessions =
            self.identity.list_sessions(caller.as_ref(), Some(request.get_ref().user_id.as_str())).await.status()?;
        Ok(Response::new(pb::ListSessionsResponse { sessions: sessions.iter().map(convert::session).collect() }))
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let caller = caller(&self.identity, &request).await.status()?;
        self.identity.revoke_session(caller.as_ref(), &request.get_ref().session_id).await.status()?;
        Ok(Response::new(pb::RevokeSessionResponse {}))
    }

    async fn revoke_other_sessions(
        &self,
        request: Request<pb::RevokeOtherSessionsRequest>,
    ) -> Result<Response<pb::RevokeOtherSessionsResponse>, Status> {
        let caller = caller(&self.identity, &request).await.status()?;
        let revoked = self.identity.revoke_other_sessions(caller.as_ref()).await.status()?;
        Ok(Response::new(pb::RevokeOtherSessionsResponse {
            revoked_sessions: i32::try_from(revoked).unwrap_or(i32::MAX),
        }))
    }

    async fn get_jwks(&self, _request: Request<pb::GetJwksRequest>) -> Result<Response<pb::GetJwksResponse>, Status> {
        let keys = self
            .identity
            .jwks()
            .iter()
            .map(|jwk| pb::Jwk {
                kty: jwk.kty.clone(),
                kid: jwk.kid.clone(),
                r#use: jwk.use_.clone(),
                alg: jwk.alg.clone(),
                n: jwk.n.clone(),
                e: jwk.e.clone(),
                crv: jwk.crv.clone(),
                x: jwk.x.clone(),
                y: jwk.y.clone(),
            })
            .collect();
        Ok(Response::new(pb::GetJwksResponse { keys }))
    }

    async fn get_token_settings(
        &self,
        _request: Request<pb::GetTokenSettingsRequest>,
    ) -> Result<Response<pb::GetTokenSettingsResponse>, Status> {
        let settings = self.identity.settings();
        let signing = self.identity.signing_algorithm().name().to_owned();
        let mut verification: Vec<String> = self.identity.jwks().iter().map(|jwk| jwk.alg.clone()).collect();
        verification.push(signing.clone());
        verification.sort();
        verification.dedup();
        Ok(Response::new(pb::GetTokenSettingsResponse {
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            signing_algorithm: signing,
            verification_algorithms: verification,
            access_ttl: prost_types::Duration::try_from(settings.access_ttl).ok(),
            jwks_max_age: prost_types::Duration::try_from(settings.keys.jwks_max_age).ok(),
        }))
    }

    type WatchSessionStream = WatchStream;

    async fn watch_session(
        &self,
        request: Request<pb::WatchSessionRequest>,
    ) -> Result<Response<Self::WatchSessionStream>, Status> {
        let caller =
            caller(&self.identity, &request).await.status()?.ok_or_else(|| to_status(CoreError::Unauthenticated))?;
        let mut stopping = self.stopping.clone();
        let stopped = async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        };
        let events =
            ReceiverStream::new(self.identity.watch_session(&caller)).map(|event| Ok(convert::session_event(event)));
        Ok(Response::new(Box::pin(futures::StreamExt::take_until(events, stopped))))
    }
}
