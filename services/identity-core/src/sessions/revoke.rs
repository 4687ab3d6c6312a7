//! Listing sessions and ending them: logout, revocation by id, every session of a user. Each
//! revocation is published, and the caches and watchers learn of it from that event.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, sea_query::Expr};

use super::SessionView;
use crate::{
    Identity, clock,
    entities::sessions,
    error::{CoreError, CoreResult},
    events::{Event, RevokeReason, SessionEvent, SessionEventKind},
    store::revoke_sessions_in,
    users::{Principal, Role, User, check_id},
};

// === impl Identity: listing and revocation ===

impl Identity {
    pub async fn logout(&self, caller: Option<&Principal>) -> CoreResult<()> {
        let caller = caller.ok_or(CoreError::Unauthenticated)?;
        self.revoke(&caller.session_id, RevokeReason::Logout).await.map(|_| ())
    }

    /// Live sessions of the caller, or of `user_id` for a manager.
    pub async fn list_sessions(
        &self,
        caller: Option<&Principal>,
        user_id: Option<&str>,
    ) -> CoreResult<Vec<SessionView>> {
        let caller = caller.ok_or(CoreError::Unauthenticated)?;
        let user_id = user_id.filter(|id| !id.is_empty()).unwrap_or(&caller.user.id);
        check_id("user_id", user_id)?;
        if user_id != caller.user.id && !caller.is_manager() {
            return Err(CoreError::Forbidden("only a manager may list other users' sessions"));
        }
        let now = clock::now();
        let lifetime = self.lifetime();
        let rows = sessions::Entity::find()
            .filter(sessions::Column::UserId.eq(user_id.to_owned()))
            .filter(sessions::Column::RevokedAt.is_null())
            .filter(sessions::Column::ExpiresAt.gt(now))
            .order_by_desc(sessions::Column::CreatedAt)
            .order_by_desc(sessions::Column::Id)
            .all(self.db())
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                // This process may know of more recent use than the coalesced column.
                let cached = self.live_sessions().get(&row.id).map(|live| live.last_seen());
                let last_seen_at = cached.unwrap_or(row.last_seen_at).max(row.last_seen_at);
                SessionView {
                    current: row.id == caller.session_id,
                    idle_expires_at: lifetime.deadline(last_seen_at, row.expires_at),
                    id: row.id,
                    user_id: row.user_id,
                    created_at: row.created_at,
                    last_seen_at,
                    expires_at: row.expires_at,
                    client_ip: row.client_ip,
                    user_agent: row.user_agent,
                }
            })
            .filter(|view| view.idle_expires_at > now)
            .collect())
    }

    /// One of the caller's sessions, or anyone's for a manager. Someone else's session is
    /// "not found" to a non-manager, so ids cannot be probed.
    pub async fn revoke_session(&self, caller: Option<&Principal>, session_id: &str) -> CoreResult<()> {
        let caller = caller.ok_or(CoreError::Unauthenticated)?;
        check_id("session_id", session_id)?;
        let session = sessions::Entity::find_by_id(session_id.to_owned())
            .one(self.db())
            .await?
            .filter(|session| session.user_id == caller.user.id || caller.is_manager())
            .ok_or(CoreError::NotFound("session"))?;
        self.revoke(&session.id, RevokeReason::Revoked).await.map(|_| ())
    }

    /// Every live session of the caller but the one calling ("log out everywhere else"); how
    /// many were revoked.
    pub async fn revoke_other_sessions(&self, caller: Option<&Principal>) -> CoreResult<u32> {
        let caller = caller.ok_or(CoreError::Unauthenticated)?;
        self.revoke_user_sessions(&caller.user.id, RevokeReason::Revoked, Some(&caller.session_id)).await
    }

    /// Revokes one session. Returns whether this call revoked it; either way, if the session is
    /// revoked its REVOKED event is published (a revocation this process had not heard of, made
    /// elsewhere, reaches its caches and watchers that way).
    pub(crate) async fn revoke(&self, session_id: &str, reason: RevokeReason) -> CoreResult<bool> {
        let now = clock::now();
        let revoked = sessions::Entity::update_many()
            .col_expr(sessions::Column::RevokedAt, Expr::value(now))
            .col_expr(sessions::Column::RevokeReason, Expr::value(reason.as_str()))
            .filter(sessions::Column::Id.eq(session_id.to_owned()))
            .filter(sessions::Column::RevokedAt.is_null())
            .exec(self.db())
            .await?
            .rows_affected
            == 1;
        if revoked {
            tracing::info!(%session_id, reason = reason.as_str(), "session revoked");
        }
        self.announce_revoked(session_id, reason).await?;
        Ok(revoked)
    }

    /// Publishes the REVOKED event of a session that is revoked (with the reason it was
    /// revoked for, falling back to `reason`).
    async fn announce_revoked(&self, session_id: &str, reason: RevokeReason) -> CoreResult<()> {
        let Some(session) = sessions::Entity::find_by_id(session_id.to_owned()).one(self.db()).await? else {
            return Ok(());
        };
        if let Some(at) = session.revoked_at {
            let role = self.find_user(&session.user_id).await?.map(|user| user.role).unwrap_or(Role::User);
            let reason = session.revoke_reason.as_deref().map_or(reason, RevokeReason::parse);
            self.publish(Event::Session(SessionEvent {
                kind: SessionEventKind::Revoked { reason },
                session_id: session.id,
                user_id: session.user_id,
                role: role.as_str().to_owned(),
                at,
            }))
            .await;
        }
        Ok(())
    }

    /// Announces sessions revoked by `revoke_sessions_in`, once its transaction committed.
    pub(crate) async fn announce_all_revoked(&self, session_ids: &[String], reason: RevokeReason) -> CoreResult<()> {
        for session_id in session_ids {
            self.announce_revoked(session_id, reason).await?;
        }
        Ok(())
    }

    /// Revokes every live session of a user, but `except`. Returns how many.
    pub(crate) async fn revoke_user_sessions(
        &self,
        user_id: &str,
        reason: RevokeReason,
        except: Option<&str>,
    ) -> CoreResult<u32> {
        let revoked = revoke_sessions_in(self.db(), user_id, reason, except).await?;
        self.announce_all_revoked(&revoked, reason).await?;
        Ok(u32::try_from(revoked.len()).unwrap_or(u32::MAX))
    }

    /// Tells every live session of `user` that its role changed.
    pub(crate) async fn announce_role_change(&self, user: &User) -> CoreResult<()> {
        let now = clock::now();
        let live = sessions::Entity::find()
            .filter(sessions::Column::UserId.eq(user.id.clone()))
            .filter(sessions::Column::RevokedAt.is_null())
            .filter(sessions::Column::ExpiresAt.gt(now))
            .all(self.db())
            .await?;
        for session in live {
            self.publish(Event::Session(SessionEvent {
                kind: SessionEventKind::RoleChanged,
                session_id: session.id,
                user_id: user.id.clone(),
                role: user.role.as_str().to_owned(),
                at: now,
            }))
            .await;
        }
        Ok(())
    }
}
