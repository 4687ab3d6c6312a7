//! The caller's sessions: list them, revoke one, revoke all others.

use async_graphql::{Context, ID, Object, Result};
use identity_proto::pb;

use super::types::{RevokeOtherSessions, RevokeSession, Session};
use crate::{context::RequestContext, error::GraphqlResult};

#[derive(Default)]
pub struct SessionsQuery;

#[Object]
impl SessionsQuery {
    /// The caller's live sessions, newest first.
    async fn sessions(&self, ctx: &Context<'_>) -> Result<Vec<Session>> {
        let request = ctx.data::<RequestContext>()?;
        let message = request.as_caller(pb::ListSessionsRequest::default()).graphql()?;
        let list = request.identity.auth().list_sessions(message).await.graphql()?;
        Ok(list.into_inner().sessions.into_iter().map(Session::from).collect())
    }
}

#[derive(Default)]
pub struct SessionsMutation;

#[Object]
impl SessionsMutation {
    /// One of the caller's sessions (anyone's for a manager). Its tokens die at once.
    async fn revoke_session(&self, ctx: &Context<'_>, id: ID) -> Result<RevokeSession> {
        let request = ctx.data::<RequestContext>()?;
        let message = request.as_caller(pb::RevokeSessionRequest { session_id: id.0.clone() }).graphql()?;
        request.identity.auth().revoke_session(message).await.graphql()?;
        Ok(RevokeSession { revoked: true, id })
    }

    /// Every session of the caller but this one ("log out everywhere else"). Their tokens die
    /// at once and their websockets close.
    async fn revoke_other_sessions(&self, ctx: &Context<'_>) -> Result<RevokeOtherSessions> {
        let request = ctx.data::<RequestContext>()?;
        let message = request.as_caller(pb::RevokeOtherSessionsRequest {}).graphql()?;
        let answer = request.identity.auth().revoke_other_sessions(message).await.graphql()?;
        Ok(RevokeOtherSessions { revoked: answer.into_inner().revoked_sessions })
    }
}
