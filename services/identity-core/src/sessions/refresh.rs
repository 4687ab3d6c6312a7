//! Refresh tokens: rotation with exactly one successor per token, the grace in which a reuse
//! gets that same successor, reuse after it as theft, and revocation by refresh token.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, TransactionTrait, sea_query::Expr,
};

use super::TokenPair;
use crate::{
    Identity, clock,
    entities::{refresh_tokens, sessions},
    error::{CoreError, CoreResult, DeadReason},
    events::RevokeReason,
    keys::{Claims, HasuraClaims},
    tokens,
    users::User,
};

// === impl Identity: refresh ===

impl Identity {
    /// Rotates a refresh token: a new access token and a new refresh token. Each refresh
    /// token has at most one successor: every use of it within the grace after its rotation
    /// gets that same successor (two tabs, a retried request), never a second one. A use
    /// after the grace is theft: the session is revoked.
    pub async fn refresh(&self, refresh_token: &str) -> CoreResult<TokenPair> {
        let mut row = self.find_refresh(refresh_token).await?;
        let now = clock::now();
        if now >= row.expires_at {
            return Err(CoreError::SessionDead(DeadReason::TokenExpired));
        }
        // Read afresh, not from the cache: a refresh must see a revocation made by another
        // replica, and it is rare enough (once per access token) to afford the read.
        let live = self.reload(&row.session_id).await?;
        let user = live.check(self.lifetime(), now)?;
        if row.rotated_at.is_none() {
            let (successor, successor_hash) = tokens::generate();
            if self.rotate(&row, refresh_token, &successor, successor_hash, now).await? {
                self.touch(&live, now);
                return self.token_pair(&live.session, &user, successor).await;
            }
            // A concurrent refresh with this token won the rotation: answer what it answered.
            row = self.find_refresh(refresh_token).await?;
        }
        let rotated_at = row.rotated_at.unwrap_or(now);
        if grace_closed(now - rotated_at, self.settings().refresh_reuse_grace) {
            tracing::warn!(session_id = %row.session_id, "refresh token reused: revoking the session");
            self.revoke(&row.session_id, RevokeReason::RefreshTokenReuse).await?;
            return Err(CoreError::SessionDead(DeadReason::RefreshTokenReused));
        }
        // Sealed under the token just presented, which the database does not hold.
        let successor = row
            .successor_sealed
            .as_deref()
            .and_then(|sealed| tokens::unseal(refresh_token, &row.id, sealed))
            .ok_or(CoreError::SessionDead(DeadReason::InvalidToken))?;
        self.touch(&live, now);
        self.token_pair(&live.session, &user, successor).await
    }

    /// Makes `successor` the one successor of `row`, in one transaction: the successor is
    /// stored, and `row` marked rotated only if no concurrent refresh did it first (which
    /// leaves this call nothing: `false`).
    async fn rotate(
        &self,
        row: &refresh_tokens::Model,
        presented: &str,
        successor: &str,
        successor_hash: String,
        now: i64,
    ) -> CoreResult<bool> {
        let sealed = tokens::seal(presented, &row.id, successor)?;
        let transaction = self.db().begin().await?;
        insert_refresh(&transaction, &row.session_id, row.expires_at, successor_hash, now).await?;
        let won = refresh_tokens::Entity::update_many()
            .col_expr(refresh_tokens::Column::RotatedAt, Expr::value(now))
            .col_expr(refresh_tokens::Column::SuccessorSealed, Expr::value(sealed))
            .filter(refresh_tokens::Column::Id.eq(row.id.clone()))
            .filter(refresh_tokens::Column::RotatedAt.is_null())
            .exec(&transaction)
            .await?
            .rows_affected
            == 1;
        if won {
            transaction.commit().await?;
        } else {
            transaction.rollback().await?;
        }
        Ok(won)
    }

    /// Erases the successors of refresh tokens whose grace has closed: from then on they only
    /// prove theft. Returns how many were erased.
    pub async fn erase_spent_successors(&self) -> CoreResult<u64> {
        let cutoff = clock::now() - theft_after(self.settings().refresh_reuse_grace);
        let sealed = || {
            refresh_tokens::Entity::find()
                .filter(refresh_tokens::Column::SuccessorSealed.is_not_null())
                .filter(refresh_tokens::Column::RotatedAt.lte(cutoff))
        };
        // A read first: most sweeps find nothing, and an UPDATE would take SQLite's write lock.
        if sealed().one(self.db()).await?.is_none() {
            return Ok(0);
        }
        let erased = refresh_tokens::Entity::update_many()
            .col_expr(refresh_tokens::Column::SuccessorSealed, Expr::value(Option::<String>::None))
            .filter(refresh_tokens::Column::SuccessorSealed.is_not_null())
            .filter(refresh_tokens::Column::RotatedAt.lte(cutoff))
            .exec(self.db())
            .await?;
        Ok(erased.rows_affected)
    }

    /// Revokes the session a refresh token belongs to. Idempotent.
    pub async fn revoke_refresh_token(&self, refresh_token: &str) -> CoreResult<i64> {
        let row = self.find_refresh(refresh_token).await?;
        self.revoke(&row.session_id, RevokeReason::TokenRevoked).await?;
        let session = sessions::Entity::find_by_id(row.session_id).one(self.db()).await?;
        Ok(session.and_then(|session| session.revoked_at).unwrap_or_else(clock::now))
    }

    /// A fresh access token for `session`, paired with `refresh_token`.
    pub(super) async fn token_pair(
        &self,
        session: &sessions::Model,
        user: &User,
        refresh_token: String,
    ) -> CoreResult<TokenPair> {
        let settings = self.settings();
        let now = clock::now();
        let access_expires_at = (now + clock::secs(settings.access_ttl)).min(session.expires_at);
        let role = user.role.as_str().to_owned();
        let claims = Claims {
            iss: settings.issuer.clone(),
            aud: settings.audience.clone(),
            sub: user.id.clone(),
            exp: access_expires_at,
            iat: now,
            jti: tokens::new_id(),
            sid: session.id.clone(),
            username: user.username.clone(),
            email: user.email.clone(),
            role: role.clone(),
            hasura: HasuraClaims { allowed_roles: vec![role.clone()], default_role: role, user_id: user.id.clone() },
        };
        let access_token = self.keys().sign(claims.clone()).await?;
        Ok(TokenPair { access_token, access_expires_at, refresh_token, refresh_expires_at: session.expires_at, claims })
    }

    async fn find_refresh(&self, refresh_token: &str) -> CoreResult<refresh_tokens::Model> {
        tokens::check("refresh_token", refresh_token, tokens::OPAQUE_TOKEN_MAX_BYTES)?;
        let hash = tokens::hash(refresh_token);
        refresh_tokens::Entity::find()
            .filter(refresh_tokens::Column::TokenHash.eq(hash.clone()))
            .one(self.db())
            .await?
            .filter(|row| tokens::hashes_match(&row.token_hash, &hash))
            .ok_or(CoreError::SessionDead(DeadReason::InvalidToken))
    }
}

/// Stores a refresh token of a session (by its hash); it lives as long as the session may.
pub(super) async fn insert_refresh(
    db: &impl ConnectionTrait,
    session_id: &str,
    expires_at: i64,
    token_hash: String,
    now: i64,
) -> CoreResult<()> {
    refresh_tokens::Entity::insert(refresh_tokens::ActiveModel {
        id: Set(tokens::new_id()),
        session_id: Set(session_id.to_owned()),
        token_hash: Set(token_hash),
        created_at: Set(now),
        expires_at: Set(expires_at),
        rotated_at: Set(None),
        successor_sealed: Set(None),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Whole seconds after its rotation from which a refresh token's reuse is theft. Stored times
/// are whole seconds, so an elapsed time may read up to a second short or long of the real
/// one: a grace of N s closes at N + 1 by the clock, so a retry is never called theft before
/// the grace has really passed (and at most a second after). A grace of zero makes every reuse
/// theft.
fn theft_after(grace: std::time::Duration) -> i64 {
    clock::secs(grace) + i64::from(!grace.is_zero())
}

/// Whether a refresh token rotated `elapsed` whole seconds ago is past its reuse grace.
fn grace_closed(elapsed: i64, grace: std::time::Duration) -> bool {
    elapsed >= theft_after(grace)
}

#[cfg(test)]
mod grace_tests {
    use std::time::Duration;

    use super::grace_closed;

    #[test]
    fn a_retry_across_a_second_boundary_is_within_the_grace() {
        let grace = Duration::from_secs(1);
        // Rotated at x.999, retried at (x+1).001: two milliseconds, one second by the clock.
        assert!(!grace_closed(1, grace));
        assert!(grace_closed(2, grace));
        assert!(grace_closed(0, Duration::ZERO));
    }
}
