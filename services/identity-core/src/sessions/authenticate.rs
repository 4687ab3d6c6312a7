//! The per-request check: who holds this credential, through which live session? A credential
//! seen before costs a hash and two map lookups.

use std::sync::Arc;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};

use super::{
    Credential,
    cache::{Lifetime, Live},
};
use crate::{
    Identity, clock,
    entities::sessions,
    error::{CoreError, CoreResult, DeadReason},
    keys::Claims,
    tokens,
    users::Principal,
};

// === impl Identity: authenticate ===

impl Identity {
    /// Who holds this credential, through which live session?
    pub async fn authenticate(&self, credential: Credential<'_>) -> CoreResult<Principal> {
        let (live, claims) = match credential {
            Credential::AccessToken(token) => {
                tokens::check("access_token", token, tokens::ACCESS_TOKEN_MAX_BYTES)?;
                let claims = self.keys().verify(token).await?;
                let live = self.live(&claims.sid).await?;
                if live.session.user_id != claims.sub {
                    return Err(CoreError::SessionDead(DeadReason::InvalidToken));
                }
                (live, Some(claims))
            }
            Credential::SessionToken(token) => {
                tokens::check("session_token", token, tokens::OPAQUE_TOKEN_MAX_BYTES)?;
                (self.live_by_token(token).await?, None)
            }
        };
        let now = clock::now();
        let user = live.check(self.lifetime(), now)?;
        self.touch(&live, now);
        Ok(Principal { user, session_id: live.session.id.clone(), claims, session_expires_at: live.session.expires_at })
    }

    /// The claims of an access token whose session is alive.
    pub async fn verify_token(&self, token: &str) -> CoreResult<Arc<Claims>> {
        let principal = self.authenticate(Credential::AccessToken(token)).await?;
        principal.claims.ok_or(CoreError::SessionDead(DeadReason::InvalidToken))
    }

    pub(crate) fn lifetime(&self) -> Lifetime {
        Lifetime::new(self.settings().session_idle_ttl)
    }

    /// The session, from memory or the database.
    pub(crate) async fn live(&self, session_id: &str) -> CoreResult<Arc<Live>> {
        match self.live_sessions().get(session_id) {
            Some(live) => Ok(live),
            None => self.reload(session_id).await,
        }
    }

    /// The session read from the database (and cached), keeping the latest use this process
    /// knows of.
    pub(crate) async fn reload(&self, session_id: &str) -> CoreResult<Arc<Live>> {
        let seen = self.live_sessions().get(session_id).map(|live| live.last_seen());
        let started = self.live_sessions().begin_fill();
        let session = sessions::Entity::find_by_id(session_id.to_owned())
            .one(self.db())
            .await?
            .ok_or(CoreError::SessionDead(DeadReason::InvalidToken))?;
        let live = self.remember(started, session).await?;
        if let Some(seen) = seen {
            live.seen_at_least(seen);
        }
        Ok(live)
    }

    async fn live_by_token(&self, token: &str) -> CoreResult<Arc<Live>> {
        let digest = tokens::digest(token);
        if let Some(session_id) = self.live_sessions().session_of_token(&digest) {
            return self.live(&session_id).await;
        }
        let started = self.live_sessions().begin_fill();
        let hash = tokens::hash(token);
        let session = sessions::Entity::find()
            .filter(sessions::Column::TokenHash.eq(hash.clone()))
            .one(self.db())
            .await?
            .filter(|session| tokens::hashes_match(&session.token_hash, &hash))
            .ok_or(CoreError::SessionDead(DeadReason::InvalidToken))?;
        self.live_sessions().remember_token(digest, session.id.clone());
        self.remember(started, session).await
    }

    /// Caches a session read after `started`, with its user.
    async fn remember(&self, started: u64, session: sessions::Model) -> CoreResult<Arc<Live>> {
        let user = self.find_user(&session.user_id).await?;
        let live = Arc::new(Live::new(session, user));
        self.live_sessions().fill(started, Arc::clone(&live));
        Ok(live)
    }

    /// Marks the session used; writes `last_seen_at` at most once per touch interval.
    pub(crate) fn touch(&self, live: &Live, now: i64) {
        let Some(now) = live.mark_used(self.lifetime(), now) else { return };
        let db = self.db().clone();
        let session_id = live.session.id.clone();
        tokio::spawn(async move {
            let result = sessions::Entity::update_many()
                .col_expr(sessions::Column::LastSeenAt, Expr::value(now))
                .filter(sessions::Column::Id.eq(session_id))
                .filter(sessions::Column::LastSeenAt.lt(now))
                .exec(&db)
                .await;
            if let Err(error) = result {
                tracing::warn!(%error, "could not record session use");
            }
        });
    }
}
