//! Sessions and their tokens: login, the per-request `authenticate`, refresh rotation with
//! reuse detection, revocation, listing and watching.
//!
//! The hot path: `authenticate` verifies a JWT once (then `Keys` caches its claims) and keeps
//! what it learnt about each session in memory (`Live`), so a credential seen before costs
//! neither a signature check nor a database read. Revocations made through this process drop
//! the cached entry at once; entries are re-read after `session_cache_ttl`, which bounds how
//! late a revocation by another replica is seen. `last_seen_at` is written at most once per
//! `touch_interval` per session, not once per request.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use moka::sync::Cache;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, TransactionTrait,
    sea_query::Expr,
};
use tokio::sync::{broadcast::error::RecvError, mpsc};

use crate::{
    Identity, clock,
    entities::{refresh_tokens, sessions, users},
    error::{CoreError, CoreResult, DeadReason},
    events::{SessionEvent, SessionEventKind},
    keys::{Claims, HasuraClaims},
    passwords::{self, Verified},
    throttle, tokens,
    users::{Role, User},
};

/// Who is calling: a user, through one live session.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    pub session_id: String,
    /// The verified claims when the credential was an access token.
    pub claims: Option<Arc<Claims>>,
    pub session_expires_at: i64,
}

impl Principal {
    pub fn is_manager(&self) -> bool {
        self.user.role == Role::Manager
    }
}

/// A credential presented by a caller.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    SessionToken(&'a str),
    AccessToken(&'a str),
}

/// Where a login comes from, as the caller reports it.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: String,
    pub user_agent: String,
}

/// An access token and the refresh token that replaces it.
#[derive(Debug, Clone)]
pub struct TokenPair {
    pub access_token: String,
    pub access_expires_at: i64,
    pub refresh_token: String,
    pub refresh_expires_at: i64,
    pub claims: Claims,
}

#[derive(Debug, Clone)]
pub struct LoginOutcome {
    pub user: User,
    pub session_id: String,
    pub session_token: String,
    pub tokens: TokenPair,
}

/// A session as listed to its owner or a manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    pub id: String,
    pub user_id: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
    pub idle_expires_at: i64,
    pub client_ip: String,
    pub user_agent: String,
    pub current: bool,
}

/// What this process knows about one session.
#[derive(Debug)]
pub(crate) struct Live {
    session: sessions::Model,
    /// `None` once the user is gone.
    user: Option<User>,
    last_seen: AtomicI64,
    persisted_seen: AtomicI64,
}

/// The in-memory session state: by session id, and session-token hash to session id.
pub(crate) struct LiveSessions {
    by_id: Cache<String, Arc<Live>>,
    by_token: Cache<[u8; 32], String>,
}

impl LiveSessions {
    pub(crate) fn new(ttl: Duration) -> Self {
        LiveSessions {
            by_id: Cache::builder().max_capacity(200_000).time_to_live(ttl).build(),
            by_token: Cache::builder().max_capacity(200_000).time_to_live(ttl).build(),
        }
    }
}

// === impl Identity: sessions ===

impl Identity {
    /// Username or email, and password. Throttled; one generic error for an unknown user, a
    /// wrong password and an inactive user, at the same cost. The steps: find the account,
    /// reserve a throttle slot, verify the password, rehash it if the cost was raised, open
    /// the session.
    pub async fn login(&self, login: &str, password: &str, client: ClientInfo) -> CoreResult<LoginOutcome> {
        CoreError::check_all([
            crate::users::check_login("username", login),
            passwords::check_presented("password", password),
        ])?;
        let found = self.find_login(login).await?;
        let reservation = self.reserve_attempt(login, found.as_ref().map(|(user, _)| user), &client).await?;
        let (user, rehashed) = match self.verify_login(found, password).await {
            Ok(verified) => verified,
            Err(error) => {
                // The reservation stays: it counts as a failure.
                tracing::info!(client_ip = %client.ip, "login failed");
                return Err(error);
            }
        };
        reservation.succeeded(self.db()).await?;
        if let Some(hash) = rehashed {
            self.store_rehash(&user.id, hash).await?;
        }
        self.open_session(user, client).await
    }

    /// Login step: a throttle slot for this attempt, counted against the account (not the
    /// string typed: username and email are one account) and the client's address.
    async fn reserve_attempt(
        &self,
        login: &str,
        found: Option<&users::Model>,
        client: &ClientInfo,
    ) -> CoreResult<throttle::Reservation> {
        let account = match found {
            Some(user) => format!("id:{}", user.id),
            None => crate::users::key(login),
        };
        let settings = &self.settings().throttle;
        throttle::reserve(self.db(), settings, throttle::Counters::new(settings, &account, &client.ip)).await
    }

    /// Login step: the password checked against the account's hash (or a decoy of the same
    /// cost when there is no account). Returns the user and, if the hash was weaker than
    /// today's cost, its replacement.
    async fn verify_login(
        &self,
        found: Option<(users::Model, crate::entities::credentials::Model)>,
        password: &str,
    ) -> CoreResult<(User, Option<String>)> {
        let hash = found.as_ref().map(|(_, credential)| credential.password_hash.as_str());
        let verdict = self.passwords().verify(password, hash).await?;
        match (found, verdict) {
            (Some((user, _)), Verified::Yes) if user.is_active => Ok((User::from(user), None)),
            (Some((user, _)), Verified::YesRehashed(hash)) if user.is_active => Ok((User::from(user), Some(hash))),
            _ => Err(CoreError::InvalidCredentials),
        }
    }

    /// Login step: the password hash with today's cost.
    async fn store_rehash(&self, user_id: &str, hash: String) -> CoreResult<()> {
        use crate::entities::credentials;
        credentials::Entity::update_many()
            .col_expr(credentials::Column::PasswordHash, Expr::value(hash))
            .col_expr(credentials::Column::UpdatedAt, Expr::value(clock::now()))
            .filter(credentials::Column::UserId.eq(user_id.to_owned()))
            .exec(self.db())
            .await?;
        tracing::info!(%user_id, "password rehashed with the current cost");
        Ok(())
    }

    /// Login step: a new session with its tokens.
    async fn open_session(&self, user: User, client: ClientInfo) -> CoreResult<LoginOutcome> {
        let now = clock::now();
        users::Entity::update_many()
            .col_expr(users::Column::LastLogin, Expr::value(now))
            .filter(users::Column::Id.eq(user.id.clone()))
            .exec(self.db())
            .await?;
        let (session_token, token_hash) = tokens::generate();
        let session = sessions::Model {
            id: tokens::new_id(),
            user_id: user.id.clone(),
            token_hash,
            created_at: now,
            last_seen_at: now,
            expires_at: now + clock::secs(self.settings().refresh_ttl),
            revoked_at: None,
            revoke_reason: None,
            client_ip: truncate(&client.ip, 64),
            user_agent: truncate(&client.user_agent, 512),
        };
        sessions::Entity::insert(sessions::ActiveModel::from(session.clone()))
            .exec_without_returning(self.db())
            .await?;
        let user = User { last_login: Some(now), ..user };
        let (refresh_token, refresh_hash) = tokens::generate();
        insert_refresh(self.db(), &session.id, session.expires_at, refresh_hash, now).await?;
        let tokens = self.token_pair(&session, &user, refresh_token).await?;
        tracing::info!(user_id = %user.id, session_id = %session.id, "login");
        Ok(LoginOutcome { user, session_id: session.id, session_token, tokens })
    }

    /// The per-request check: who holds this credential, through which live session?
    pub async fn authenticate(&self, credential: Credential<'_>) -> CoreResult<Principal> {
        let (live, claims) = match credential {
            Credential::AccessToken(token) => {
                tokens::check("access_token", token, tokens::ACCESS_TOKEN_MAX_BYTES)?;
                let claims = self.keys().verify(token)?;
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
        let user = self.check_alive(&live, now)?;
        self.touch(&live, now);
        Ok(Principal { user, session_id: live.session.id.clone(), claims, session_expires_at: live.session.expires_at })
    }

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
        let user = self.check_alive(&live, now)?;
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
        if now - rotated_at >= clock::secs(self.settings().refresh_reuse_grace) {
            tracing::warn!(session_id = %row.session_id, "refresh token reused: revoking the session");
            self.revoke(&row.session_id, "refresh_token_reuse").await?;
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
        let cutoff = clock::now() - clock::secs(self.settings().refresh_reuse_grace);
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
        self.revoke(&row.session_id, "token_revoked").await?;
        let session = sessions::Entity::find_by_id(row.session_id).one(self.db()).await?;
        Ok(session.and_then(|session| session.revoked_at).unwrap_or_else(clock::now))
    }

    /// The claims of an access token whose session is alive.
    pub async fn verify_token(&self, token: &str) -> CoreResult<Arc<Claims>> {
        let principal = self.authenticate(Credential::AccessToken(token)).await?;
        principal.claims.ok_or(CoreError::SessionDead(DeadReason::InvalidToken))
    }

    pub async fn logout(&self, caller: Option<&Principal>) -> CoreResult<()> {
        let caller = caller.ok_or(CoreError::Unauthenticated)?;
        self.revoke(&caller.session_id, "logout").await.map(|_| ())
    }

    /// Live sessions of the caller, or of `user_id` for a manager.
    pub async fn list_sessions(
        &self,
        caller: Option<&Principal>,
        user_id: Option<&str>,
    ) -> CoreResult<Vec<SessionView>> {
        let caller = caller.ok_or(CoreError::Unauthenticated)?;
        let user_id = user_id.filter(|id| !id.is_empty()).unwrap_or(&caller.user.id);
        crate::users::check_id("user_id", user_id)?;
        if user_id != caller.user.id && !caller.is_manager() {
            return Err(CoreError::Forbidden("only a manager may list other users' sessions"));
        }
        let now = clock::now();
        let idle = clock::secs(self.settings().session_idle_ttl);
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
                let cached = self.live_sessions().by_id.get(&row.id).map(|live| live.last_seen.load(Ordering::Relaxed));
                let last_seen_at = cached.unwrap_or(row.last_seen_at).max(row.last_seen_at);
                SessionView {
                    current: row.id == caller.session_id,
                    idle_expires_at: (last_seen_at + idle).min(row.expires_at),
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
        crate::users::check_id("session_id", session_id)?;
        let session = sessions::Entity::find_by_id(session_id.to_owned())
            .one(self.db())
            .await?
            .filter(|session| session.user_id == caller.user.id || caller.is_manager())
            .ok_or(CoreError::NotFound("session"))?;
        self.revoke(&session.id, "revoked").await.map(|_| ())
    }

    /// Events of the caller's session, ending after a REVOKED or EXPIRED event. The channel
    /// closes when the session ends or the receiver is dropped.
    pub fn watch_session(&self, caller: &Principal) -> mpsc::Receiver<SessionEvent> {
        let (sender, receiver) = mpsc::channel(16);
        let identity = self.clone();
        let session_id = caller.session_id.clone();
        let mut events = self.events().subscribe();
        // Re-check the session at least this often: it may die by a revocation made on
        // another replica, which no in-process event announces.
        let poll = self.settings().session_cache_ttl.max(Duration::from_secs(1));
        tokio::spawn(async move {
            loop {
                let deadline = identity.session_deadline(&session_id).await;
                let wait = Duration::from_secs(deadline.map_or(0, |d| (d - clock::now()).max(0) as u64)).min(poll);
                tokio::select! {
                    _ = sender.closed() => return,
                    received = events.recv() => match received {
                        Ok(event) if event.session_id == session_id => {
                            let last = matches!(event.kind, SessionEventKind::Revoked { .. } | SessionEventKind::Expired);
                            if sender.send(event).await.is_err() || last {
                                return;
                            }
                        }
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => return,
                    },
                    _ = tokio::time::sleep(wait) => {}
                }
                if let Some(event) = identity.end_event(&session_id).await {
                    let _ = sender.send(event).await;
                    return;
                }
            }
        });
        receiver
    }

    // --- internals ---

    /// A fresh access token for `session`, paired with `refresh_token`.
    async fn token_pair(&self, session: &sessions::Model, user: &User, refresh_token: String) -> CoreResult<TokenPair> {
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

    /// The session, from memory or the database.
    async fn live(&self, session_id: &str) -> CoreResult<Arc<Live>> {
        if let Some(live) = self.live_sessions().by_id.get(session_id) {
            return Ok(live);
        }
        let session = sessions::Entity::find_by_id(session_id.to_owned())
            .one(self.db())
            .await?
            .ok_or(CoreError::SessionDead(DeadReason::InvalidToken))?;
        self.remember(session).await
    }

    /// The session read from the database (and cached), keeping the latest use this process
    /// knows of.
    async fn reload(&self, session_id: &str) -> CoreResult<Arc<Live>> {
        let seen = self.live_sessions().by_id.get(session_id).map(|live| live.last_seen.load(Ordering::Relaxed));
        let session = sessions::Entity::find_by_id(session_id.to_owned())
            .one(self.db())
            .await?
            .ok_or(CoreError::SessionDead(DeadReason::InvalidToken))?;
        let live = self.remember(session).await?;
        if let Some(seen) = seen {
            live.last_seen.fetch_max(seen, Ordering::Relaxed);
        }
        Ok(live)
    }

    async fn live_by_token(&self, token: &str) -> CoreResult<Arc<Live>> {
        let digest = tokens::digest(token);
        if let Some(session_id) = self.live_sessions().by_token.get(&digest) {
            return self.live(&session_id).await;
        }
        let hash = tokens::hash(token);
        let session = sessions::Entity::find()
            .filter(sessions::Column::TokenHash.eq(hash.clone()))
            .one(self.db())
            .await?
            .filter(|session| tokens::hashes_match(&session.token_hash, &hash))
            .ok_or(CoreError::SessionDead(DeadReason::InvalidToken))?;
        self.live_sessions().by_token.insert(digest, session.id.clone());
        self.remember(session).await
    }

    async fn remember(&self, session: sessions::Model) -> CoreResult<Arc<Live>> {
        let user = self.find_user(&session.user_id).await?;
        let live = Arc::new(Live {
            last_seen: AtomicI64::new(session.last_seen_at),
            persisted_seen: AtomicI64::new(session.last_seen_at),
            session,
            user,
        });
        self.live_sessions().by_id.insert(live.session.id.clone(), Arc::clone(&live));
        Ok(live)
    }

    fn check_alive(&self, live: &Live, now: i64) -> CoreResult<User> {
        let dead = |reason| Err(CoreError::SessionDead(reason));
        if live.session.revoked_at.is_some() {
            return dead(DeadReason::SessionRevoked);
        }
        if now >= live.session.expires_at
            || now - live.last_seen.load(Ordering::Relaxed) >= clock::secs(self.settings().session_idle_ttl)
        {
            return dead(DeadReason::SessionExpired);
        }
        match &live.user {
            Some(user) if user.is_active => Ok(user.clone()),
            _ => dead(DeadReason::UserInactive),
        }
    }

    /// Marks the session used; writes `last_seen_at` at most once per touch interval.
    fn touch(&self, live: &Arc<Live>, now: i64) {
        live.last_seen.fetch_max(now, Ordering::Relaxed);
        let persisted = live.persisted_seen.load(Ordering::Relaxed);
        if now - persisted < self.touch_interval() {
            return;
        }
        if live.persisted_seen.compare_exchange(persisted, now, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return;
        }
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

    /// A tenth of the idle lifetime, between 1 s and 60 s: idle expiry stays accurate to
    /// about that, and a busy session costs one write a minute.
    fn touch_interval(&self) -> i64 {
        (clock::secs(self.settings().session_idle_ttl) / 10).clamp(1, 60)
    }

    /// Revokes one session; publishes REVOKED if this call revoked it. Returns whether it did.
    pub(crate) async fn revoke(&self, session_id: &str, reason: &str) -> CoreResult<bool> {
        let now = clock::now();
        let revoked = sessions::Entity::update_many()
            .col_expr(sessions::Column::RevokedAt, Expr::value(now))
            .col_expr(sessions::Column::RevokeReason, Expr::value(reason))
            .filter(sessions::Column::Id.eq(session_id.to_owned()))
            .filter(sessions::Column::RevokedAt.is_null())
            .exec(self.db())
            .await?
            .rows_affected
            == 1;
        self.live_sessions().by_id.invalidate(session_id);
        if revoked {
            let session = sessions::Entity::find_by_id(session_id.to_owned()).one(self.db()).await?;
            if let Some(session) = session {
                let role = self.find_user(&session.user_id).await?.map(|user| user.role).unwrap_or(Role::User);
                self.events().publish(SessionEvent {
                    kind: SessionEventKind::Revoked { reason: reason.to_owned() },
                    session_id: session.id,
                    user_id: session.user_id,
                    role: role.as_str().to_owned(),
                    at: now,
                });
            }
            tracing::info!(%session_id, reason, "session revoked");
        }
        Ok(revoked)
    }

    /// Revokes every live session of a user, but `except`. Returns how many.
    pub(crate) async fn revoke_user_sessions(
        &self,
        user_id: &str,
        reason: &str,
        except: Option<&str>,
    ) -> CoreResult<u32> {
        let mut query = sessions::Entity::find()
            .filter(sessions::Column::UserId.eq(user_id.to_owned()))
            .filter(sessions::Column::RevokedAt.is_null());
        if let Some(except) = except {
            query = query.filter(sessions::Column::Id.ne(except.to_owned()));
        }
        let mut count = 0;
        for session in query.all(self.db()).await? {
            if self.revoke(&session.id, reason).await? {
                count += 1;
            }
        }
        Ok(count)
    }

    /// Forgets what this process cached about a user's sessions (after the user changed).
    pub(crate) fn forget_user(&self, user_id: &str) {
        let stale: Vec<Arc<String>> = self
            .live_sessions()
            .by_id
            .iter()
            .filter(|(_, live)| live.session.user_id == user_id)
            .map(|(id, _)| id)
            .collect();
        for id in stale {
            self.live_sessions().by_id.invalidate(id.as_str());
        }
    }

    pub(crate) async fn announce_role_change(&self, user: &User) -> CoreResult<()> {
        let now = clock::now();
        let live = sessions::Entity::find()
            .filter(sessions::Column::UserId.eq(user.id.clone()))
            .filter(sessions::Column::RevokedAt.is_null())
            .filter(sessions::Column::ExpiresAt.gt(now))
            .all(self.db())
            .await?;
        for session in live {
            self.events().publish(SessionEvent {
                kind: SessionEventKind::RoleChanged,
                session_id: session.id,
                user_id: user.id.clone(),
                role: user.role.as_str().to_owned(),
                at: now,
            });
        }
        Ok(())
    }

    /// When the session dies if nobody uses it; `None` if it cannot be read now.
    async fn session_deadline(&self, session_id: &str) -> Option<i64> {
        let live = self.live(session_id).await.ok()?;
        let idle = live.last_seen.load(Ordering::Relaxed) + clock::secs(self.settings().session_idle_ttl);
        Some(idle.min(live.session.expires_at))
    }

    /// The event that ends a watch, if the session is dead now. A database that cannot be
    /// read ends nothing: the watch goes on and checks again.
    async fn end_event(&self, session_id: &str) -> Option<SessionEvent> {
        let live = match self.live(session_id).await {
            Ok(live) => live,
            Err(CoreError::SessionDead(_)) => {
                return Some(SessionEvent {
                    kind: SessionEventKind::Revoked { reason: "deleted".into() },
                    session_id: session_id.to_owned(),
                    user_id: String::new(),
                    role: String::new(),
                    at: clock::now(),
                });
            }
            Err(_) => return None,
        };
        let now = clock::now();
        let reason = match self.check_alive(&live, now) {
            Ok(_) => return None,
            Err(CoreError::SessionDead(reason)) => reason,
            Err(_) => return None,
        };
        let kind = match reason {
            DeadReason::SessionExpired => SessionEventKind::Expired,
            _ => SessionEventKind::Revoked {
                reason: live.session.revoke_reason.clone().unwrap_or_else(|| reason.code().to_lowercase()),
            },
        };
        Some(SessionEvent {
            kind,
            session_id: session_id.to_owned(),
            user_id: live.session.user_id.clone(),
            role: live.user.as_ref().map(|user| user.role.as_str().to_owned()).unwrap_or_default(),
            at: now,
        })
    }
}

/// Stores a refresh token of a session (by its hash); it lives as long as the session may.
async fn insert_refresh(
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

fn truncate(value: &str, max_chars: usize) -> String {
    value.chars().take(max_chars).collect()
}
